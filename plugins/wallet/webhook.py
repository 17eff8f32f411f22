"""Top-up webhook: a payment provider tells us a user paid; we mint the coins (``issuance`` -> user).

Mounted by the core at ``POST /plugins/wallet/topup``.  Wire format (ours; ``examples/
fake_payment_provider.py`` implements the provider side):

* Body: UTF-8 JSON object, at most 64 KiB::

      {"payment_id": "pay_123", "jid": "alice@example.org", "amount": 500,
       "currency": "COIN", "timestamp": 1700000000, "memo": "optional text"}

  ``amount`` is an integer in minor units; ``currency`` defaults to the paid currency; ``timestamp`` is
  the provider's Unix time in seconds when it sent the notification.
* Header ``X-Wallet-Signature: sha256=<hex>``: HMAC-SHA256 of the exact raw body bytes with the shared
  secret.  The timestamp is inside the signed body, so it cannot be altered to dodge the replay window.

Checks, in this order: body size (413); secret configured (503); signature, compared in constant time with
``hmac.compare_digest`` (401 ``bad-signature``); JSON shape (400 ``malformed``); timestamp within
``tolerance_s`` of our clock either way (401 ``stale-timestamp``) -- an old notification captured on the wire
cannot be replayed later; within the window a replay is harmless because the mint is idempotent on
``payment_id`` (initiator ``topup``): a repeat answers 200 with ``"status": "replayed"`` and moves nothing.
The same payment id with a different user/amount is 409 ``duplicate``; ledger refusals (unknown or frozen
user, bad amount) are 422 with the wallet condition, so the provider stops retrying and a human looks.

Responses are JSON: ``{"status": "ok"|"replayed", "transfer": SEQ}`` or ``{"error": CONDITION, "text": ...}``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from .ledger import Duplicate, Ledger, WalletError

SIGNATURE_HEADER = "X-Wallet-Signature"
MAX_BODY = 64 * 1024
INITIATOR = "topup"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def sign(secret: str | bytes, body: bytes) -> str:
    """The header value a provider sends for ``body``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _err(status: int, condition: str, text: str = "") -> web.Response:
    return web.json_response({"error": condition, "text": text}, status=status)


def _parse(body: bytes) -> dict[str, Any]:
    """Validate the notification's shape; raises ValueError with a reason."""
    data = json.loads(body.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    pid, jid, amount, ts = data.get("payment_id"), data.get("jid"), data.get("amount"), data.get("timestamp")
    if not isinstance(pid, str) or not 0 < len(pid) <= 200:
        raise ValueError("payment_id must be a non-empty string")
    if not isinstance(jid, str) or not jid:
        raise ValueError("jid must be a string")
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise ValueError("amount must be an integer")
    if isinstance(ts, bool) or not isinstance(ts, int | float):
        raise ValueError("timestamp must be a number")
    cur = data.get("currency")
    if cur is not None and not isinstance(cur, str):
        raise ValueError("currency must be a string")
    memo = data.get("memo", "")
    if not isinstance(memo, str):
        raise ValueError("memo must be a string")
    return data


def make_topup_handler(
    ledger: Ledger,
    secret: str | bytes,
    tolerance_s: float,
    *,
    clock: Callable[[], float] = time.time,
) -> Handler:
    """An aiohttp handler for ``POST /plugins/wallet/topup`` (see the module docstring)."""
    key = secret.encode() if isinstance(secret, str) else secret

    async def topup(request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_BODY:
            return _err(413, "too-large")
        body = await request.content.read(MAX_BODY + 1)
        if len(body) > MAX_BODY:
            return _err(413, "too-large")
        if not key:
            return _err(503, "not-configured", "webhook secret not set")
        given = request.headers.get(SIGNATURE_HEADER, "")
        expected = sign(key, body)
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return _err(401, "bad-signature")
        try:
            data = _parse(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _err(400, "malformed", str(exc))
        if abs(clock() - float(data["timestamp"])) > tolerance_s:
            return _err(401, "stale-timestamp", f"timestamp outside +-{tolerance_s:g}s")
        memo = data.get("memo") or f"top-up {data['payment_id']}"
        try:
            t = await ledger.mint(
                data["jid"],
                data["amount"],
                memo=memo[:256],
                idem_key=data["payment_id"],
                initiator=INITIATOR,
                currency=data.get("currency"),
            )
        except Duplicate as exc:
            return _err(409, exc.condition, str(exc))
        except WalletError as exc:
            return _err(422, exc.condition, str(exc))
        return web.json_response({"status": "replayed" if t.replayed else "ok", "transfer": t.seq})

    return topup


__all__ = ["MAX_BODY", "SIGNATURE_HEADER", "make_topup_handler", "sign"]
