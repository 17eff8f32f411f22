"""Test fixtures' building blocks: an in-process server on loopback, real slixmpp clients, a raw client.

The raw client speaks XML over a real socket with our own parser, for assertions a full client library
hides (exact stream errors, stanzas before auth). The slixmpp client is the "real client" proof.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import shutil
import socket
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import slixmpp
from scramp import ScramClient

from xmppim.config import Config, config_from_dict
from xmppim.server import Server
from xmppim.xml.parser import StanzaReceived, StreamClosed, StreamFault, StreamOpened, StreamParser
from xmppim.xml.serialize import serialize

_TEMPLATE_DB: dict[str, Path] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_config(tmp: Path, **overrides: Any) -> Config:
    data: dict[str, Any] = {
        "server": {"domains": ["localhost"], "data_dir": str(tmp)},
        "c2s": {"port": free_port(), "direct_tls_port": free_port()},
        "component": {"port": free_port()},
        "http": {"port": free_port()},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(data.get(section), dict):
            data[section].update(values)
        else:
            data[section] = values
    return config_from_dict(data)


def seed_database(cfg: Config) -> None:
    """Copy a migrated SQLite template instead of running alembic for every test (it is slow)."""
    if not cfg.storage_url.startswith("sqlite"):
        return
    key = "sqlite"
    if key not in _TEMPLATE_DB:
        from xmppim.storage.migrate import upgrade

        tdir = Path(f"/tmp/xmppim-test-template-{uuid.uuid4().hex}")
        tcfg = config_from_dict({"server": {"domains": ["localhost"], "data_dir": str(tdir)}})
        upgrade(tcfg)
        _TEMPLATE_DB[key] = tdir / "xmppim.db"
    target = cfg.data_path / "xmppim.db"
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        shutil.copy(_TEMPLATE_DB[key], target)


@contextlib.asynccontextmanager
async def running_server(cfg: Config) -> AsyncIterator[Server]:
    await asyncio.to_thread(seed_database, cfg)
    server = Server(cfg)
    await server.start(migrate=not cfg.storage_url.startswith("sqlite"))
    try:
        yield server
    finally:
        await server.stop()


_CLIENT_CTX: ssl.SSLContext | None = None


def client_ssl_context() -> ssl.SSLContext:
    """One shared client context that accepts the self-signed test certificate (made once: loading the
    system CA store costs ~40 ms, which would dominate every test login)."""
    global _CLIENT_CTX
    if _CLIENT_CTX is None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _CLIENT_CTX = ctx
    return _CLIENT_CTX


# ------------------------------------------------------------------ slixmpp
async def slix_client(
    server: Server,
    jid: str,
    password: str,
    *,
    plugins: tuple[str, ...] = (),
    presence: bool = True,
    direct_tls: bool = False,
    timeout: float = 10.0,
) -> slixmpp.ClientXMPP:
    """A logged-in slixmpp client (STARTTLS on the c2s port, or direct TLS)."""
    c = slixmpp.ClientXMPP(jid, password)
    c.ssl_context = client_ssl_context()
    c.add_event_handler("ssl_invalid_cert", lambda _cert: None)
    for p in ("xep_0030", "xep_0199", *plugins):
        c.register_plugin(p)
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _e: started.done() or started.set_result(None))
    c.add_event_handler(
        "failed_all_auth", lambda _e: started.done() or started.set_exception(PermissionError("auth failed"))
    )
    # slixmpp 1.17 tries direct TLS first unless told which port speaks what.
    c.enable_direct_tls = direct_tls  # type: ignore[attr-defined]
    c.connect("127.0.0.1", server.ports["c2s_direct_tls" if direct_tls else "c2s"])
    await asyncio.wait_for(started, timeout)
    if presence:
        c.send_presence()
        # Return only once the server has the initial presence: a message to the bare JID sent right
        # after would otherwise race it and go to offline storage.
        full = str(c.boundjid)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while not any(s.full_jid == full for s in server.sessions.available(c.boundjid.bare)):
            if loop.time() > end:
                raise TimeoutError(f"{full}'s initial presence never reached the server")
            await asyncio.sleep(0.01)
    return c


class Inbox:
    """Messages (and message errors) one slixmpp user receives, awaitable by predicate."""

    def __init__(self, client: slixmpp.ClientXMPP) -> None:
        self.items: list[Any] = []
        self._changed = asyncio.Event()
        client.add_event_handler("message", self._add)
        client.add_event_handler("message_error", self._add)

    def _add(self, msg: Any) -> None:
        self.items.append(msg)
        self._changed.set()

    def bodies(self) -> list[str]:
        return [str(m["body"]) for m in self.items if m["type"] != "error"]

    async def wait(self, pred: Any, what: str, timeout: float = 8.0) -> Any:
        """The first message for which ``pred(msg)`` holds; fails naming ``what`` and what did arrive."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            for m in self.items:
                if pred(m):
                    return m
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no {what}; got {[str(m) for m in self.items]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    async def body(self, text: str) -> Any:
        return await self.wait(lambda m: m["type"] != "error" and m["body"] == text, f"message {text!r}")

    async def error(self, from_: str) -> Any:
        return await self.wait(lambda m: m["type"] == "error" and m["from"].bare == from_, f"an error from {from_}")


async def disconnect(*clients: slixmpp.ClientXMPP) -> None:
    for c in clients:
        with contextlib.suppress(Exception):
            c.disconnect()
    await asyncio.sleep(0.05)


# --------------------------------------------------------------- raw client
class RawClient:
    """Speaks raw XML over a real socket and parses replies with xmppim's own stream parser."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.parser = StreamParser(max_stanza_bytes=10_000_000)
        self.events: list[Any] = []
        self.header: StreamOpened | None = None
        self.jid = ""

    @classmethod
    async def connect(cls, port: int, *, tls: bool = False) -> RawClient:
        r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ssl_context() if tls else None)
        return cls(r, w)

    def send_raw(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    def send(self, el: Element) -> None:
        self.send_raw(serialize(el))

    async def open(self, to: str = "localhost") -> Element:
        """Open a stream; returns the features element."""
        self.send_raw(
            f"<?xml version='1.0'?><stream:stream to='{to}' version='1.0' xmlns='jabber:client' "
            "xmlns:stream='http://etherx.jabber.org/streams'>"
        )
        while self.header is None:
            ev = await self.next_event()
            if isinstance(ev, StreamOpened):
                self.header = ev
            elif isinstance(ev, StanzaReceived):
                raise AssertionError(f"stanza before header: {serialize(ev.element)!r}")
            else:
                raise AssertionError(f"stream ended: {ev}")
        return await self.recv()

    async def next_event(self, timeout: float = 5.0) -> Any:
        while not self.events:
            data = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not data:
                return StreamClosed()
            self.events.extend(self.parser.feed(data))
        return self.events.pop(0)

    async def recv(self, timeout: float = 5.0) -> Element:
        ev = await self.next_event(timeout)
        if isinstance(ev, StanzaReceived):
            return ev.element
        raise AssertionError(f"expected a stanza, got {ev}")

    async def stream_error(self, timeout: float = 5.0) -> str:
        """Read until the stream error; return its condition name."""
        while True:
            ev = await self.next_event(timeout)
            if isinstance(ev, StanzaReceived) and ev.element.tag == "{http://etherx.jabber.org/streams}error":
                for child in ev.element:
                    if child.tag.startswith("{urn:ietf:params:xml:ns:xmpp-streams}") and not child.tag.endswith(
                        "}text"
                    ):
                        return child.tag.split("}")[1]
            if isinstance(ev, (StreamClosed, StreamFault)):
                raise AssertionError(f"stream ended without a stream error: {ev}")

    async def closed(self, timeout: float = 5.0) -> bool:
        """True once the server closed the stream/socket."""
        while True:
            ev = await self.next_event(timeout)
            if isinstance(ev, (StreamClosed, StreamFault)):
                return True

    async def starttls(self) -> None:
        self.send_raw("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        proceed = await self.recv()
        assert proceed.tag == "{urn:ietf:params:xml:ns:xmpp-tls}proceed", proceed.tag
        await self.writer.start_tls(client_ssl_context(), server_hostname="localhost")
        self.parser.reset()
        self.header = None

    async def auth_plain(self, user: str, password: str) -> Element:
        token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
        self.send_raw(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        return await self.recv()

    async def auth_scram(self, user: str, password: str, mech: str = "SCRAM-SHA-1") -> Element:
        binding = None
        if mech.endswith("-PLUS"):
            import hashlib

            der = self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            binding = ("tls-server-end-point", hashlib.sha256(der).digest())
        c = ScramClient([mech], user, password, channel_binding=binding)
        first = base64.b64encode(c.get_client_first().encode()).decode()
        self.send_raw(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='{mech}'>{first}</auth>")
        ch = await self.recv()
        if not ch.tag.endswith("challenge"):
            return ch
        c.set_server_first(base64.b64decode(ch.text or "").decode())
        final = base64.b64encode(c.get_client_final().encode()).decode()
        self.send_raw(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>")
        return await self.recv()

    async def login(self, user: str, password: str, resource: str = "raw", *, tls: bool = True) -> str:
        """Full login (STARTTLS unless already on TLS, SCRAM-SHA-1, bind); returns the bound JID."""
        await self.open()
        if tls:
            await self.starttls()
            await self.open()
        ok = await self.auth_scram(user, password)
        assert ok.tag.endswith("success"), serialize(ok)
        self.parser.reset()
        self.header = None
        await self.open()
        self.send_raw(
            f"<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        res = await self.recv()
        self.jid = res.findtext(".//{urn:ietf:params:xml:ns:xmpp-bind}jid") or ""
        assert self.jid, serialize(res)
        return self.jid

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()
            await self.writer.wait_closed()


async def until(c: RawClient, pred: Any) -> Element:
    """The first stanza ``c`` receives for which ``pred(stanza)`` holds (others are skipped)."""
    while True:
        st = await c.recv()
        if pred(st):
            return st


async def iq(c: RawClient, xml: str, id_: str = "q") -> Element:
    """Send an IQ whose id is ``id_`` and return its answer, skipping anything else that arrives."""
    c.send_raw(xml)
    return await until(c, lambda st: st.tag == "{jabber:client}iq" and st.get("id") == id_)
