"""XEP-0077 in-band registration with a real slixmpp client: on/off, conflicts, password change, removal."""

from __future__ import annotations

import asyncio
from pathlib import Path

import slixmpp

from tests.helpers import RawClient, client_ssl_context, make_config, running_server

REG = "{jabber:iq:register}"
ERR = "{urn:ietf:params:xml:ns:xmpp-stanzas}"


async def register_raw(port: int, user: str, password: str) -> object:
    c = await RawClient.connect(port)
    await c.open()
    await c.starttls()
    features = await c.open()
    c.send_raw(
        f"<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>{user}</username>"
        f"<password>{password}</password></query></iq>"
    )
    r = await c.recv()
    await c.close()
    return features, r


async def test_registration_disabled_by_default(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path)) as srv:
        features, r = await register_raw(srv.ports["c2s"], "newbie", "pw")
        assert features.find("{http://jabber.org/features/iq-register}register") is None  # type: ignore[attr-defined]
        assert r.get("type") == "error" and r.find(f".//{ERR}service-unavailable") is not None  # type: ignore[attr-defined]
        assert not await srv.accounts.exists("newbie", "localhost")


async def test_slixmpp_registers_then_logs_in(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path, registration={"allow": True})) as srv:
        c = slixmpp.ClientXMPP("newbie@localhost", "s3cret")
        c.ssl_context = client_ssl_context()
        c.enable_direct_tls = False  # type: ignore[attr-defined]
        c.register_plugin("xep_0077")
        c["xep_0077"].force_registration = True
        done: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        async def on_register(_form: object) -> None:
            resp = c.Iq()
            resp["type"] = "set"
            resp["register"]["username"] = "newbie"
            resp["register"]["password"] = "s3cret"
            try:
                await resp.send()
                done.set_result("registered")
            except Exception as e:  # pragma: no cover - reported through the assertion
                done.set_result(f"failed: {e}")

        c.add_event_handler("register", on_register)
        c.add_event_handler("session_start", lambda _e: done.done() or done.set_result("session"))
        c.connect("127.0.0.1", srv.ports["c2s"])
        assert await asyncio.wait_for(done, 10) == "registered"
        c.disconnect()
        assert await srv.accounts.exists("newbie", "localhost")
        # the new account logs in
        raw = await RawClient.connect(srv.ports["c2s"])
        assert await raw.login("newbie", "s3cret", "r") == "newbie@localhost/r"
        await raw.close()
        # the name is now taken
        _f, r = await register_raw(srv.ports["c2s"], "newbie", "other")
        assert r.find(f".//{ERR}conflict") is not None  # type: ignore[attr-defined]


async def test_registration_needs_tls_when_encryption_is_required(tmp_path: Path) -> None:
    async with running_server(make_config(tmp_path, registration={"allow": True})) as srv:
        c = await RawClient.connect(srv.ports["c2s"])
        await c.open()
        c.send_raw("<iq type='set' id='r1'><query xmlns='jabber:iq:register'><username>x</username>"
                   "<password>y</password></query></iq>")
        r = await c.recv()
        assert r.get("type") == "error" and r.find(f".//{ERR}not-allowed") is not None
        assert not await srv.accounts.exists("x", "localhost")
        await c.close()


async def test_password_change_and_account_removal(server) -> None:  # type: ignore[no-untyped-def]
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw", "a")
    c.send_raw("<iq type='set' id='p1'><query xmlns='jabber:iq:register'><username>alice</username>"
               "<password>newpw</password></query></iq>")
    assert (await c.recv()).get("type") == "result"
    await c.close()
    old = await RawClient.connect(server.ports["c2s"])
    await old.open()
    await old.starttls()
    await old.open()
    assert (await old.auth_scram("alice", "pw")).tag.endswith("failure")
    await old.close()
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "newpw", "a")
    # someone else's password: refused
    c.send_raw("<iq type='set' id='p2'><query xmlns='jabber:iq:register'><username>bob</username>"
               "<password>hacked</password></query></iq>")
    assert (await c.recv()).get("type") == "error"
    c.send_raw("<iq type='set' id='rm'><query xmlns='jabber:iq:register'><remove/></query></iq>")
    r = await c.recv()
    assert r.get("type") == "result" and r.get("id") == "rm"
    assert await c.stream_error() == "not-authorized"
    assert not await server.accounts.exists("alice", "localhost")
    await c.close()
