"""Top-up webhook through aiohttp's test client; coins move only for a good, fresh, first notification."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from examples.fake_payment_provider import notification, post, signature
from plugins.wallet.ledger import Ledger
from plugins.wallet.webhook import SIGNATURE_HEADER, make_topup_handler, sign

SECRET = "s3cret-shared-with-provider"
PATH = "/plugins/wallet/topup"
A = "alice@example.org"


@pytest.fixture
async def client(ledger: Ledger) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    app = web.Application()
    app.router.add_post(PATH, make_topup_handler(ledger, SECRET, 300))
    async with TestClient(TestServer(app)) as c:
        yield c


async def send(
    client: TestClient[web.Request, web.Application], body: bytes, sig: str | None = None
) -> tuple[int, dict[str, object]]:
    headers = {SIGNATURE_HEADER: sign(SECRET, body) if sig is None else sig}
    resp = await client.post(PATH, data=body, headers=headers)
    return resp.status, await resp.json()


def body(pid: str = "pay_1", amount: int = 500, ts: float | None = None, jid: str = A) -> bytes:
    return notification(pid, jid, amount, timestamp=time.time() if ts is None else ts)


async def test_good_notification_mints_once(
    client: TestClient[web.Request, web.Application], ledger: Ledger
) -> None:
    b = body()
    status, answer = await send(client, b)
    assert (status, answer["status"]) == (200, "ok")
    assert await ledger.balance(A) == 500
    # The provider retries the very same notification: 200, nothing new.
    status, answer = await send(client, b)
    assert (status, answer["status"]) == (200, "replayed")
    # A fresh notification (new timestamp) for the same payment id is still the same payment.
    status, answer = await send(client, body(ts=time.time() + 1))
    assert (status, answer["status"]) == (200, "replayed")
    assert await ledger.balance(A) == 500
    hist = await ledger.history(A)
    assert [(e.kind, e.amount, e.counterparty) for e in hist] == [("mint", 500, "system:issuance")]


async def test_bad_signature_401(client: TestClient[web.Request, web.Application], ledger: Ledger) -> None:
    b = body()
    for sig in ("", "sha256=" + "0" * 64, sign("wrong-secret", b), sign(SECRET, b).upper(), "garbage"):
        status, answer = await send(client, b, sig)
        assert (status, answer["error"]) == (401, "bad-signature"), sig
    # Body altered after signing (amount raised).
    tampered = b.replace(b'"amount":500', b'"amount":900')
    assert tampered != b
    status, _ = await send(client, tampered, sign(SECRET, b))
    assert status == 401
    assert await ledger.balance(A) == 0


async def test_stale_or_future_timestamp_401(
    client: TestClient[web.Request, web.Application], ledger: Ledger
) -> None:
    for ts in (time.time() - 301, time.time() + 301):
        status, answer = await send(client, body(ts=ts))
        assert (status, answer["error"]) == (401, "stale-timestamp")
    assert await ledger.balance(A) == 0
    status, _ = await send(client, body(ts=time.time() - 250))
    assert status == 200


async def test_malformed_json_400(client: TestClient[web.Request, web.Application], ledger: Ledger) -> None:
    bad_bodies = [
        b"{not json",
        b"[1,2]",
        b"\xff\xfe",
        json.dumps({"payment_id": "p", "jid": A, "amount": "500", "timestamp": time.time()}).encode(),
        json.dumps({"payment_id": "p", "jid": A, "amount": 1.5, "timestamp": time.time()}).encode(),
        json.dumps({"jid": A, "amount": 5, "timestamp": time.time()}).encode(),
        json.dumps({"payment_id": "p", "jid": A, "amount": 5}).encode(),
    ]
    for b in bad_bodies:
        status, answer = await send(client, b)  # correctly signed, but not a valid notification
        assert (status, answer["error"]) == (400, "malformed"), b
    assert await ledger.balance(A) == 0


async def test_same_payment_id_different_content_409(
    client: TestClient[web.Request, web.Application], ledger: Ledger
) -> None:
    assert (await send(client, body(amount=100)))[0] == 200
    status, answer = await send(client, body(amount=999))
    assert (status, answer["error"]) == (409, "duplicate")
    assert await ledger.balance(A) == 100


async def test_ledger_refusals_422(client: TestClient[web.Request, web.Application], ledger: Ledger) -> None:
    status, answer = await send(client, body(pid="p1", jid="ghost@example.org"))
    assert (status, answer["error"]) == (422, "unknown-recipient")
    status, answer = await send(client, body(pid="p2", amount=0))
    assert (status, answer["error"]) == (422, "bad-amount")
    assert await ledger.balance(A) == 0


async def test_oversized_body_413(client: TestClient[web.Request, web.Application]) -> None:
    b = b"{" + b" " * (70 * 1024) + b"}"
    status, answer = await send(client, b)
    assert (status, answer["error"]) == (413, "too-large")


async def test_no_secret_configured_refuses(ledger: Ledger) -> None:
    app = web.Application()
    app.router.add_post(PATH, make_topup_handler(ledger, "", 300))
    async with TestClient(TestServer(app)) as c:
        b = body()
        resp = await c.post(PATH, data=b, headers={SIGNATURE_HEADER: sign("", b)})
        assert resp.status == 503
    assert await ledger.balance(A) == 0


async def test_fake_provider_against_real_http_server(ledger: Ledger, tmp_path: Path) -> None:
    """The example provider (its own signing code) talks to the handler over a real loopback socket."""
    import aiohttp

    app = web.Application()
    app.router.add_post(PATH, make_topup_handler(ledger, SECRET, 300))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}{PATH}"
        b = notification("pay_ext", A, 42)
        assert signature(SECRET, b) == sign(SECRET, b)
        async with aiohttp.ClientSession() as s:
            assert (await post(s, url, SECRET, b)) == (200, {"status": "ok", "transfer": 1})
            assert (await post(s, url, SECRET, b))[1]["status"] == "replayed"
            assert (await post(s, url, "nope", b))[0] == 401
        assert await ledger.balance(A) == 42
    finally:
        await runner.cleanup()
