"""RFC 6120 client streams over real sockets: TLS, SASL, binding, restricted XML, limits, addressing."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import pytest
import slixmpp

from tests.helpers import RawClient, disconnect, make_config, running_server, slix_client
from xmppim.server import Server

SASL = "{urn:ietf:params:xml:ns:xmpp-sasl}"


# ------------------------------------------------------------------ login
@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"])
async def test_slixmpp_logs_in_with_each_mechanism_over_starttls(server: Server, mech: str) -> None:
    c = slixmpp.ClientXMPP("alice@localhost/m", "pw", sasl_mech=mech)
    from tests.helpers import client_ssl_context

    c.ssl_context = client_ssl_context()
    c.add_event_handler("ssl_invalid_cert", lambda _c: None)
    done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _e: done.done() or done.set_result(str(c.boundjid)))
    c.add_event_handler("failed_all_auth", lambda _e: done.done() or done.set_result("FAILED"))
    c.connect("127.0.0.1", server.ports["c2s"])
    assert await asyncio.wait_for(done, 10) == "alice@localhost/m"
    await disconnect(c)


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS"])
async def test_raw_scram_login_including_channel_binding(server: Server, mech: str) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.open()
    await c.starttls()
    features = await c.open()
    offered = [m.text for m in features.iter(f"{SASL}mechanism")]
    assert offered[:2] == ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"] and "PLAIN" in offered
    ok = await c.auth_scram("alice", "pw", mech)
    assert ok.tag == f"{SASL}success"
    await c.close()


async def test_plus_with_a_wrong_channel_binding_fails(server: Server) -> None:
    from scramp import ScramClient

    c = await RawClient.connect(server.ports["c2s"])
    await c.open()
    await c.starttls()
    await c.open()
    sc = ScramClient(["SCRAM-SHA-256-PLUS"], "alice", "pw", channel_binding=("tls-server-end-point", b"\0" * 32))
    c.send_raw(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256-PLUS'>"
        + base64.b64encode(sc.get_client_first().encode()).decode()
        + "</auth>"
    )
    sc.set_server_first(base64.b64decode((await c.recv()).text or "").decode())
    c.send_raw(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        + base64.b64encode(sc.get_client_final().encode()).decode()
        + "</response>"
    )
    assert (await c.recv()).find(f"{SASL}not-authorized") is not None
    await c.close()


async def test_direct_tls_login(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s_direct_tls"], tls=True)
    assert await c.login("alice", "pw", "dt", tls=False) == "alice@localhost/dt"
    await c.close()


async def test_wrong_password_is_not_authorized(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.open()
    await c.starttls()
    await c.open()
    fail = await c.auth_scram("alice", "wrong")
    assert fail.tag == f"{SASL}failure" and fail.find(f"{SASL}not-authorized") is not None
    fail = await c.auth_plain("alice", "wrong")
    assert fail.find(f"{SASL}not-authorized") is not None
    await c.close()


async def test_unknown_user_gets_a_challenge_then_not_authorized(server: Server) -> None:
    """security.md: never reveal at <auth> that an account does not exist."""
    c = await RawClient.connect(server.ports["c2s"])
    await c.open()
    await c.starttls()
    await c.open()
    from scramp import ScramClient

    sc = ScramClient(["SCRAM-SHA-1"], "nosuchuser", "pw")
    c.send_raw(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
        + base64.b64encode(sc.get_client_first().encode()).decode()
        + "</auth>"
    )
    ch = await c.recv()
    assert ch.tag == f"{SASL}challenge"
    first = base64.b64decode(ch.text or "").decode()
    # The same salt on every try, like a real account.
    c2 = await RawClient.connect(server.ports["c2s"])
    await c2.open()
    await c2.starttls()
    await c2.open()
    sc2 = ScramClient(["SCRAM-SHA-1"], "nosuchuser", "pw")
    c2.send_raw(
        "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
        + base64.b64encode(sc2.get_client_first().encode()).decode()
        + "</auth>"
    )
    first2 = base64.b64decode((await c2.recv()).text or "").decode()
    salt = [p for p in first.split(",") if p.startswith("s=")]
    assert salt == [p for p in first2.split(",") if p.startswith("s=")]
    sc.set_server_first(first)
    c.send_raw(
        "<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        + base64.b64encode(sc.get_client_final().encode()).decode()
        + "</response>"
    )
    fail = await c.recv()
    assert fail.find(f"{SASL}not-authorized") is not None
    await c.close()
    await c2.close()


async def test_starttls_required_before_auth(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    features = await c.open()
    assert (
        features.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls/{urn:ietf:params:xml:ns:xmpp-tls}required") is not None
    )
    assert features.find(f"{SASL}mechanisms") is None
    fail = await c.auth_plain("alice", "pw")
    assert fail.find(f"{SASL}encryption-required") is not None
    await c.close()


async def test_plain_refused_on_unencrypted_stream(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, c2s={"require_encryption": False})
    async with running_server(cfg) as srv:
        await srv.accounts.create("alice", "localhost", "pw")
        c = await RawClient.connect(srv.ports["c2s"])
        features = await c.open()
        offered = [m.text for m in features.iter(f"{SASL}mechanism")]
        assert "PLAIN" not in offered and "SCRAM-SHA-1" in offered
        assert not any(m and m.endswith("-PLUS") for m in offered)
        fail = await c.auth_plain("alice", "pw")
        assert fail.find(f"{SASL}invalid-mechanism") is not None
        ok = await c.auth_scram("alice", "pw")  # SCRAM without TLS is allowed when configured so
        assert ok.tag == f"{SASL}success"
        await c.close()


async def test_stanza_before_auth_is_not_authorized(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.open()
    await c.starttls()
    await c.open()
    c.send_raw("<message to='bob@localhost'><body>sneak</body></message>")
    assert await c.stream_error() == "not-authorized"
    await c.close()


async def test_stanza_after_auth_before_bind_is_not_authorized(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.open()
    await c.starttls()
    await c.open()
    assert (await c.auth_scram("alice", "pw")).tag == f"{SASL}success"
    c.parser.reset()
    c.header = None
    features = await c.open()
    assert features.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None
    c.send_raw("<message to='bob@localhost'><body>sneak</body></message>")
    assert await c.stream_error() == "not-authorized"
    await c.close()


async def test_server_generates_a_resource_when_none_is_asked(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    jid = await c.login("alice", "pw", resource="")
    assert jid.startswith("alice@localhost/") and len(jid) > len("alice@localhost/")
    await c.close()


async def test_resource_conflict_replaces_the_old_session(server: Server) -> None:
    old = await RawClient.connect(server.ports["c2s"])
    await old.login("alice", "pw", "same")
    new = await RawClient.connect(server.ports["c2s"])
    assert await new.login("alice", "pw", "same") == "alice@localhost/same"
    assert await old.stream_error() == "conflict"
    # the new session works
    new.send_raw("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    pong = await new.recv()
    assert pong.get("type") == "result" and pong.get("id") == "p1"
    await old.close()
    await new.close()


async def test_wrong_host_is_host_unknown(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    c.send_raw(
        "<?xml version='1.0'?><stream:stream to='example.org' version='1.0' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams'>"
    )
    assert await c.stream_error() == "host-unknown"
    await c.close()


async def test_legacy_session_iq_is_answered(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw")
    c.send_raw("<iq type='set' id='s1'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>")
    r = await c.recv()
    assert r.get("type") == "result" and r.get("id") == "s1"
    await c.close()


# ------------------------------------------------------------- addressing
async def test_spoofed_from_is_replaced_by_the_senders_full_jid(server: Server) -> None:
    alice = await RawClient.connect(server.ports["c2s"])
    await alice.login("alice", "pw", "a")
    bob = await RawClient.connect(server.ports["c2s"])
    await bob.login("bob", "pw", "b")
    alice.send_raw("<message from='carol@localhost/x' to='bob@localhost/b' type='chat'><body>hi</body></message>")
    m = await bob.recv()
    assert m.get("from") == "alice@localhost/a"
    assert m.findtext("{jabber:client}body") == "hi"
    await alice.close()
    await bob.close()


async def test_invalid_to_gets_jid_malformed_and_the_session_goes_on(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw")
    c.send_raw("<message to='@@@' id='m1'><body>x</body></message>")
    err = await c.recv()
    assert err.get("type") == "error"
    assert err.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}jid-malformed") is not None
    long_local = "a" * 1100
    c.send_raw(f"<message to='{long_local}@localhost' id='m2'><body>x</body></message>")
    err = await c.recv()
    assert err.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}jid-malformed") is not None
    c.send_raw("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await c.recv()).get("type") == "result"
    await c.close()


async def test_unknown_iq_namespace_is_service_unavailable(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw")
    c.send_raw("<iq type='get' id='u1' to='localhost'><query xmlns='urn:example:nothing'/></iq>")
    err = await c.recv()
    assert err.get("type") == "error" and err.get("id") == "u1"
    assert err.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
    # an error is never answered with an error
    c.send_raw("<iq type='error' id='u2' to='localhost'><error type='cancel'/></iq>")
    c.send_raw("<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    r = await c.recv()
    assert r.get("id") == "p1"
    await c.close()


async def test_iq_get_without_payload_is_bad_request(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw")
    c.send_raw("<iq type='get' id='b1' to='localhost'/>")
    err = await c.recv()
    assert err.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}bad-request") is not None
    await c.close()


# ---------------------------------------------------------- hostile input
RESTRICTED = {
    "comment": ("<!-- hello -->", "restricted-xml"),
    "processing-instruction": ("<?evil data?>", "restricted-xml"),
    "entity-reference": ("<message to='bob@localhost'><body>&xxe;</body></message>", "restricted-xml"),
    "mismatched-tags": ("<message><body></message>", "not-well-formed"),
    "garbage": ("\x00\x01garbage<<<", "not-well-formed"),
}


@pytest.mark.parametrize("case", sorted(RESTRICTED))
async def test_restricted_xml_gets_its_stream_error_and_others_keep_working(server: Server, case: str) -> None:
    bystander = await RawClient.connect(server.ports["c2s"])
    await bystander.login("bob", "pw", "b")
    bad = await RawClient.connect(server.ports["c2s"])
    await bad.login("alice", "pw", "a")
    payload, condition = RESTRICTED[case]
    bad.send_raw(payload)
    assert await bad.stream_error() == condition
    assert await bad.closed()
    bystander.send_raw("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await bystander.recv()).get("type") == "result"
    await bad.close()
    await bystander.close()


async def test_doctype_in_the_header_is_restricted_xml(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    c.send_raw(
        "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'><!ENTITY lol2 '&lol;&lol;&lol;&lol;'>]>"
        "<stream:stream to='localhost' version='1.0' xmlns='jabber:client' "
        "xmlns:stream='http://etherx.jabber.org/streams'>"
    )
    assert await c.stream_error() == "restricted-xml"
    await c.close()


async def test_oversize_stanza_is_policy_violation_and_never_delivered(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, limits={"max_stanza_bytes": 20000})
    async with running_server(cfg) as srv:
        for u in ("alice", "bob"):
            await srv.accounts.create(u, "localhost", "pw")
        bob = await RawClient.connect(srv.ports["c2s"])
        await bob.login("bob", "pw", "b")
        alice = await RawClient.connect(srv.ports["c2s"])
        await alice.login("alice", "pw", "a")
        alice.send_raw(f"<message to='bob@localhost/b'><body>{'x' * 30000}</body></message>")
        assert await alice.stream_error() == "policy-violation"
        bob.send_raw("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        r = await bob.recv()
        assert r.tag == "{jabber:client}iq" and r.get("id") == "p"  # the big message never arrived first
        await alice.close()
        await bob.close()


async def test_unauthenticated_connections_are_capped_per_address(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, c2s={"max_unauthenticated_per_ip": 3})
    async with running_server(cfg) as srv:
        await srv.accounts.create("alice", "localhost", "pw")
        idle = [await RawClient.connect(srv.ports["c2s"]) for _ in range(3)]
        for c in idle:
            await c.open()
        extra = await RawClient.connect(srv.ports["c2s"])
        assert await extra.stream_error() == "policy-violation"
        await idle[0].close()
        await asyncio.sleep(0.1)
        ok = await RawClient.connect(srv.ports["c2s"])
        assert await ok.login("alice", "pw") == "alice@localhost/raw"
        for c in idle[1:] + [extra, ok]:
            await c.close()


async def test_idle_unauthenticated_connection_times_out(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, c2s={"auth_timeout": 0.5})
    async with running_server(cfg) as srv:
        c = await RawClient.connect(srv.ports["c2s"])
        await c.open()
        assert await c.stream_error(timeout=5) == "connection-timeout"
        await c.close()


# ------------------------------------------------------------- services
async def test_ping_disco_and_version_with_slixmpp(server: Server) -> None:
    c = await slix_client(server, "alice@localhost/s", "pw", plugins=("xep_0092",))
    assert await c.plugin["xep_0199"].ping("localhost", timeout=5) >= 0
    info = await c.plugin["xep_0030"].get_info(jid="localhost", timeout=5)
    features = set(info["disco_info"]["features"])
    assert {"urn:xmpp:ping", "jabber:iq:version", "http://jabber.org/protocol/disco#info"} <= features
    assert ("server", "im", "xmppim", None) in info["disco_info"]["identities"] or any(
        i[0] == "server" and i[1] == "im" for i in info["disco_info"]["identities"]
    )
    v = await c.plugin["xep_0092"].get_version("localhost", timeout=5)
    assert v["software_version"]["name"] == "xmppim"
    await disconnect(c)


async def test_clean_close_handshake(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw")
    c.send_raw("</stream:stream>")
    assert await c.closed()
    await asyncio.sleep(0.05)
    assert server.sessions.get("alice@localhost/raw") is None
    await c.close()


async def test_shutdown_sends_system_shutdown(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_server(cfg) as srv:
        await srv.accounts.create("alice", "localhost", "pw")
        c = await RawClient.connect(srv.ports["c2s"])
        await c.login("alice", "pw")
        stop = asyncio.ensure_future(srv.stop())
        assert await c.stream_error() == "system-shutdown"
        await stop
        srv.stop = _noop  # type: ignore[method-assign]
        await c.close()


async def _noop() -> None:
    return None


async def test_a_flooding_client_is_slowed_down_and_others_keep_being_served(tmp_path: Path) -> None:
    """RFC 6120 §13.12: input rate per connection; the flooder is throttled (not disconnected, nothing lost)."""
    cfg = make_config(tmp_path, limits={"c2s_bytes_per_second": 20000})
    async with running_server(cfg) as srv:
        for u in ("alice", "bob", "carol"):
            await srv.accounts.create(u, "localhost", "pw")
        flood = await RawClient.connect(srv.ports["c2s"])
        await flood.login("alice", "pw", "f")
        sink = await RawClient.connect(srv.ports["c2s"])
        await sink.login("bob", "pw", "s")
        other = await RawClient.connect(srv.ports["c2s"])
        await other.login("carol", "pw", "o")
        body = "x" * 900
        n = 400  # ~400 KB: 20 KB/s with an 80 KB burst needs well over 10 s
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(n):
            flood.send_raw(f"<message to='bob@localhost/s' type='chat' id='{i}'><body>{body}</body></message>")
        received = 0
        # meanwhile carol's pings are answered promptly
        for _ in range(3):
            p0 = loop.time()
            other.send_raw("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
            assert (await other.recv()).get("id") == "p"
            assert loop.time() - p0 < 1.0
        while loop.time() - t0 < 3:
            try:
                el = await sink.recv(timeout=0.5)
            except TimeoutError:
                continue
            if el.tag == "{jabber:client}message":
                received += 1
        assert 0 < received < n  # throttled: far from everything within 3 s
        assert srv.sessions.get("alice@localhost/f") is not None  # still connected
        for c in (flood, sink, other):
            await c.close()
