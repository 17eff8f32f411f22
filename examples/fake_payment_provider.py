#!/usr/bin/env python3
"""A fake payment provider: signs a top-up notification and POSTs it to xmppim's wallet webhook.

Usage::

    python examples/fake_payment_provider.py --url http://127.0.0.1:5280/plugins/wallet/topup \\
        --secret s3cret --jid alice@localhost --amount 500 [--payment-id pay_1] [--currency COIN] \\
        [--timestamp UNIX] [--repeat N]

It prints the HTTP status and JSON answer of each POST and exits 0 when the last one was 2xx.  ``--repeat``
sends the identical signed notification again (a provider retry): the server must answer ``replayed`` and
mint nothing more.  Wire format: see ``plugins/wallet/webhook.py`` (HMAC-SHA256 of the raw body in header
``X-Wallet-Signature: sha256=<hex>``, timestamp inside the JSON body).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import sys
import time
import uuid
from typing import Any

import aiohttp


def notification(
    payment_id: str, jid: str, amount: int, *, currency: str | None = None, timestamp: float | None = None
) -> bytes:
    """The raw JSON body, exactly as it will be signed and sent."""
    data: dict[str, Any] = {
        "payment_id": payment_id,
        "jid": jid,
        "amount": amount,
        "timestamp": int(time.time() if timestamp is None else timestamp),
    }
    if currency:
        data["currency"] = currency
    return json.dumps(data, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def post(
    session: aiohttp.ClientSession, url: str, secret: str, body: bytes
) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", "X-Wallet-Signature": signature(secret, body)}
    async with session.post(url, data=body, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--url", required=True)
    p.add_argument("--secret", required=True)
    p.add_argument("--jid", required=True)
    p.add_argument("--amount", type=int, required=True)
    p.add_argument("--payment-id", default=None)
    p.add_argument("--currency", default=None)
    p.add_argument("--timestamp", type=float, default=None)
    p.add_argument("--repeat", type=int, default=1)
    a = p.parse_args(argv)
    body = notification(
        a.payment_id or f"pay_{uuid.uuid4().hex}", a.jid, a.amount, currency=a.currency, timestamp=a.timestamp
    )
    status = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(max(1, a.repeat)):
            status, answer = await post(session, a.url, a.secret, body)
            print(status, json.dumps(answer))
    return 0 if 200 <= status < 300 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
