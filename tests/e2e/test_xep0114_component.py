"""XEP-0114 external components on xmppim's component port, driven by slixmpp's ``ComponentXMPP``.

A real component authenticates with the handshake and chats with a real slixmpp user; a wrong secret,
an unknown domain and a second connection for a live domain are refused with the right stream errors;
a component may send from its own domain only; a connected component shows up in the server's
disco#items, and once it has gone a user's message or IQ to it gets ``service-unavailable``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from xml.etree.ElementTree import Element, SubElement

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from tests.helpers import Inbox, disconnect, slix_client
from xmppim.config import ComponentSecret
from xmppim.plugins.api import Plugin
from xmppim.server import Server

SECRET = "s3cret-for-tests"
DOMAIN = "echo.localhost"
STANZA_ERRORS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"components": {DOMAIN: {"secret": SECRET}, "other.localhost": {"secret": "other"}}}


class EchoComponent(slixmpp.ComponentXMPP):
    """A minimal external service: answers every chat body with ``echo: BODY`` from the address used."""

    def __init__(self, jid: str, secret: str) -> None:
        super().__init__(jid, secret)
        self.register_plugin("xep_0030")
        self.messages: list[Any] = []
        self.errors: list[Any] = []
        self.stream_errors: list[str] = []
        self.started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gone = asyncio.Event()
        self.add_event_handler("session_start", self._started)
        self.add_event_handler("stream_error", self._stream_error)
        self.add_event_handler("disconnected", lambda _e: self.gone.set())
        self.add_event_handler("message", self._message)
        self.add_event_handler("message_error", self.errors.append)
        self.add_event_handler("iq_error", self.errors.append)

    def _started(self, _event: Any) -> None:
        if not self.started.done():
            self.started.set_result(None)

    def _stream_error(self, err: Any) -> None:
        self.stream_errors.append(str(err["condition"]))

    def _message(self, msg: Any) -> None:
        self.messages.append(msg)
        if msg["type"] in ("chat", "normal") and msg["body"]:
            msg.reply("echo: " + msg["body"]).send()


async def start_component(server: Server, jid: str = DOMAIN, secret: str = SECRET) -> EchoComponent:
    c = EchoComponent(jid, secret)
    c.connect("127.0.0.1", server.ports["component"])
    gone = asyncio.ensure_future(c.gone.wait())
    await asyncio.wait([c.started, gone], timeout=10, return_when=asyncio.FIRST_COMPLETED)
    gone.cancel()
    if not c.started.done():
        c.abort()
        raise AssertionError(f"component {jid} was not accepted (stream errors: {c.stream_errors})")
    return c


async def refused(server: Server, jid: str, secret: str) -> list[str]:
    """Connect a component that the server must refuse; the stream errors it got."""
    c = EchoComponent(jid, secret)
    c.connect("127.0.0.1", server.ports["component"])
    await asyncio.wait_for(c.gone.wait(), 10)
    assert not c.started.done(), "the server accepted a component it should have refused"
    c.cancel_connection_attempt()
    return c.stream_errors


def condition(stanza: Any) -> str:
    """The stanza error condition, read from the XML.

    On a component stream ``<error/>`` is in ``jabber:component:accept``; slixmpp's error interface only
    looks in ``jabber:client`` unless ``fix_error_ns`` rewrites it for the whole process (which would
    break the client side of these tests), so read the element directly.
    """
    for err in stanza.xml:
        if err.tag.rpartition("}")[2] == "error":
            for child in err:
                if child.tag.startswith(STANZA_ERRORS) and not child.tag.endswith("}text"):
                    return str(child.tag.rpartition("}")[2])
    return ""


async def wait_until(pred: Callable[[], bool], what: str, timeout: float = 5.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def alice(server: Server) -> AsyncIterator[slixmpp.ClientXMPP]:
    c = await slix_client(server, "alice@localhost/test", "pw")
    yield c
    await disconnect(c)


async def test_component_and_user_chat_both_ways(server: Server, alice: slixmpp.ClientXMPP) -> None:
    comp = await start_component(server)
    inbox = Inbox(alice)
    for to in (DOMAIN, f"bot@{DOMAIN}"):
        alice.send_message(mto=to, mbody=f"hello {to}", mtype="chat")
        reply = await inbox.wait(lambda m, to=to: m["body"] == f"echo: hello {to}", f"the echo from {to}")
        assert reply["from"].bare == to and reply["type"] == "chat"
    # The component got them from the user's full JID, addressed as the user wrote them.
    got = {(str(m["from"]), str(m["to"])) for m in comp.messages}
    assert got == {("alice@localhost/test", DOMAIN), ("alice@localhost/test", f"bot@{DOMAIN}")}
    await disconnect(comp)


async def test_wrong_secret_is_refused_with_not_authorized(server: Server) -> None:
    assert await refused(server, DOMAIN, "not-the-secret") == ["not-authorized"]
    assert server.router.components[DOMAIN] is None


async def test_unconfigured_domain_is_refused_with_host_unknown(server: Server) -> None:
    assert await refused(server, "nobody.localhost", SECRET) == ["host-unknown"]
    assert "nobody.localhost" not in server.router.components


async def test_second_connection_for_a_live_domain_is_refused_with_conflict(server: Server) -> None:
    first = await start_component(server)
    assert await refused(server, DOMAIN, SECRET) == ["conflict"]
    assert server.router.components[DOMAIN] is not None and not first.gone.is_set()
    await disconnect(first)


@pytest.mark.parametrize("spoofed", ["alice@localhost/x", "localhost", "other.localhost", f"sub.{DOMAIN}"])
async def test_spoofed_from_is_refused_and_never_reaches_the_user(server: Server, spoofed: str) -> None:
    comp = await start_component(server)
    bob = await slix_client(server, "bob@localhost/test", "pw")
    inbox = Inbox(bob)
    comp.send_message(mto="bob@localhost/test", mbody="spoofed", mtype="chat", mfrom=spoofed)
    await wait_until(lambda: bool(comp.errors), "the not-allowed error back to the component")
    err = comp.errors[0]
    assert condition(err) == "not-allowed" and err["from"] == DOMAIN
    # A legitimate message on the same stream afterwards: once it arrives, the spoofed one (routed
    # first if at all) would have arrived before it.
    comp.send_message(mto="bob@localhost/test", mbody="legit", mtype="chat", mfrom=f"bot@{DOMAIN}")
    await inbox.wait(lambda m: m["body"] == "legit", "the legitimate message")
    assert [m["body"] for m in inbox.items] == ["legit"]
    # The component keeps its stream after a refused stanza.
    assert not comp.gone.is_set() and server.router.components[DOMAIN] is not None
    await disconnect(comp, bob)


async def test_spoofed_iq_gets_not_allowed(server: Server) -> None:
    comp = await start_component(server)
    iq = comp.make_iq_get("jabber:iq:version", ito="localhost", ifrom="alice@localhost/x")
    with pytest.raises(IqError) as e:
        await iq.send(timeout=5)
    assert condition(e.value.iq) == "not-allowed"
    await disconnect(comp)


async def test_connected_component_is_listed_and_answers_disco_info(
    server: Server, alice: slixmpp.ClientXMPP
) -> None:
    before = await alice.plugin["xep_0030"].get_items(jid="localhost")
    assert DOMAIN not in {j for j, _n, _name in before["disco_items"]["items"]}
    comp = await start_component(server)
    items = await alice.plugin["xep_0030"].get_items(jid="localhost")
    assert DOMAIN in {j for j, _n, _name in items["disco_items"]["items"]}
    info = await alice.plugin["xep_0030"].get_info(jid=DOMAIN, cached=False)
    assert "http://jabber.org/protocol/disco#info" in info["disco_info"]["features"]
    await disconnect(comp)


async def test_after_disconnect_messages_and_iqs_get_service_unavailable(
    server: Server, alice: slixmpp.ClientXMPP
) -> None:
    comp = await start_component(server)
    inbox = Inbox(alice)
    alice.send_message(mto=DOMAIN, mbody="ping", mtype="chat")
    await inbox.wait(lambda m: m["body"] == "echo: ping", "the echo while connected")
    comp.disconnect()
    await wait_until(lambda: server.router.components[DOMAIN] is None, "the server to notice the disconnect")

    items = await alice.plugin["xep_0030"].get_items(jid="localhost")
    assert DOMAIN not in {j for j, _n, _name in items["disco_items"]["items"]}
    for to in (DOMAIN, f"bot@{DOMAIN}"):
        alice.send_message(mto=to, mbody="anyone?", mtype="chat")
        err = await inbox.wait(
            lambda m, to=to: m["type"] == "error" and m["from"] == to, f"the error from {to}"
        )
        assert err["error"]["condition"] == "service-unavailable"
    with pytest.raises(IqError) as e:
        await alice.plugin["xep_0030"].get_info(jid=DOMAIN, cached=False, timeout=5)
    assert e.value.iq["error"]["condition"] == "service-unavailable"

    # And it can come back.
    comp2 = await start_component(server)
    alice.send_message(mto=DOMAIN, mbody="back?", mtype="chat")
    await inbox.wait(lambda m: m["body"] == "echo: back?", "the echo after reconnecting")
    await disconnect(comp2)


# ------------------------------------------------------- xmppim.plugins.external
def test_canonical_retags_component_namespace_only() -> None:
    from xmppim.plugins.external import canonical

    acc = "{jabber:component:accept}"
    m = Element(f"{acc}message", {"to": "a@b", "type": "error"})
    SubElement(m, f"{acc}body").text = "x"
    err = SubElement(m, f"{acc}error", {"type": "cancel"})
    SubElement(err, f"{STANZA_ERRORS}not-allowed")
    foreign = SubElement(m, "{urn:x}thing")
    SubElement(foreign, f"{acc}inner")  # an element in the component namespace nested deeper
    out = canonical(m)
    assert [e.tag for e in out.iter()] == [
        "{jabber:client}message", "{jabber:client}body", "{jabber:client}error",
        f"{STANZA_ERRORS}not-allowed", "{urn:x}thing", "{jabber:client}inner",
    ]
    assert out.attrib == {"to": "a@b", "type": "error"} and out.findtext("{jabber:client}body") == "x"
    assert m.tag == f"{acc}message", "the input is left alone"


PROBE = "probe.localhost"
PROBE_SECRET = "probe-secret"


class ExternalProbe(Plugin):
    """Uses the ExternalContext the way a real plugin would, and reports over chat."""

    name = "probe"

    async def start(self) -> None:
        self.ctx.hook("message/pre-route", lambda _ev: None)  # server-only: ignored, warned once
        self.ctx.add_feature("urn:test:probe")  # likewise (debug only)
        self.ctx.provide("probe", self)
        assert self.ctx.service("probe") is self
        self.comp = self.ctx.add_component("probe", "Probe")  # domain comes from --domain
        self.comp.on_message = self.on_message

    async def on_message(self, msg: Element) -> None:
        body, sender = msg.findtext("{jabber:client}body"), msg.get("from", "")
        if body == "ping me":
            iq = Element("{jabber:client}iq", {"type": "get", "to": sender, "from": PROBE})
            SubElement(iq, "{urn:xmpp:ping}ping")
            answer = await self.ctx.send_iq(iq, 5)
            self.comp.message(sender, f"pong {answer.get('type')} from {answer.get('from')}")
        elif body == "exists?":
            known = await self.ctx.user_exists("anyone@localhost"), await self.ctx.user_exists("x@elsewhere")
            self.comp.message(sender, f"exists {known}")
        elif body == "via ctx.send":
            m = Element("{jabber:client}message", {"to": sender, "type": "chat", "from": f"bot@{PROBE}"})
            SubElement(m, "{jabber:client}body").text = "sent with ctx.send"
            self.ctx.send(m)


@pytest.fixture
async def probe_running(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[asyncio.Event, asyncio.Task[int]]]:
    from xmppim.plugins import external

    monkeypatch.setattr(external, "plugin_class", lambda _name: ExternalProbe)
    server.config.components[PROBE] = ComponentSecret(PROBE_SECRET)
    server.router.components.setdefault(PROBE, None)
    stop = asyncio.Event()
    task = asyncio.ensure_future(
        external.run_external(
            server.config, "probe", "127.0.0.1", server.ports["component"], PROBE_SECRET, PROBE, stop=stop
        )
    )
    await wait_until(lambda: server.router.components[PROBE] is not None or task.done(), "the probe to connect")
    assert not task.done(), task.result()
    yield stop, task
    stop.set()
    await asyncio.wait_for(task, 5)


async def test_run_external_gives_the_plugin_a_working_context(
    server: Server, alice: slixmpp.ClientXMPP, probe_running: Any, caplog: pytest.LogCaptureFixture
) -> None:
    stop, task = probe_running
    inbox = Inbox(alice)
    alice.send_message(mto=PROBE, mbody="ping me", mtype="chat")
    await inbox.wait(lambda m: m["body"] == "pong result from alice@localhost/test", "the IQ round trip")
    alice.send_message(mto=PROBE, mbody="exists?", mtype="chat")
    await inbox.wait(lambda m: m["body"] == "exists (True, False)", "user_exists answers")
    alice.send_message(mto=PROBE, mbody="via ctx.send", mtype="chat")
    got = await inbox.wait(lambda m: m["body"] == "sent with ctx.send", "a message sent with ctx.send")
    assert got["from"] == f"bot@{PROBE}"
    # hook and add_feature were both ignored; one warning says so (the plugin started in the fixture).
    records = caplog.get_records("setup") + caplog.get_records("call")
    warned = [r for r in records if r.levelname == "WARNING" and "not available to an external" in r.getMessage()]
    assert len(warned) == 1 and "hook message/pre-route" in warned[0].getMessage()
    stop.set()
    assert await asyncio.wait_for(task, 5) == 0
    await wait_until(lambda: server.router.components[PROBE] is None, "the server to see the probe go")


async def test_run_external_reconnects_after_the_server_drops_it(
    server: Server, alice: slixmpp.ClientXMPP, probe_running: Any
) -> None:
    conn = server.router.components[PROBE]
    assert conn is not None
    conn.close("connection-timeout")  # type: ignore[attr-defined]
    await wait_until(lambda: server.router.components[PROBE] is not conn, "the server to drop it")
    await wait_until(lambda: server.router.components[PROBE] is not None, "the probe to reconnect", 10)
    inbox = Inbox(alice)
    alice.send_message(mto=PROBE, mbody="exists?", mtype="chat")
    await inbox.wait(lambda m: m["body"] == "exists (True, False)", "an answer after reconnecting")
