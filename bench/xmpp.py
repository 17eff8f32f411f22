"""A lean XMPP c2s client for load generation (issue 12).

One asyncio ``Protocol`` per simulated user, an incremental pyexpat parser that builds small trees only
for top-level stanzas (RFC 6120 section 4.1: the stream is one XML document whose depth-1 children
are stanzas), STARTTLS with an unverified context (RFC 6120 section 5), SASL SCRAM-SHA-1 (RFC 5802,
RFC 6120 section 6), resource binding (RFC 6120 section 7) and XEP-0077 in-band registration.

It deliberately is not a client library: no stanza classes, no JID objects, no plugins — the load
generator must cost far less CPU per stanza than the servers it drives.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import os
import ssl
from collections.abc import Callable
from typing import Any
from xml.parsers import expat
from xml.sax.saxutils import escape, quoteattr

NS_CLIENT = "jabber:client"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_REGISTER = "jabber:iq:register"
NS_ROSTER = "jabber:iq:roster"


class XMPPError(Exception):
    """A protocol step failed (stream error, SASL failure, iq error, unexpected stanza)."""


class Element:
    """A minimal element: tag without prefix, attributes, children and text.

    Prefixes are stripped (``stream:features`` becomes ``features``): the generator only talks to
    servers that use the usual ``stream`` prefix, and namespace processing would cost CPU per stanza.
    """

    __slots__ = ("tag", "attrs", "children", "text")

    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[Element] = []
        self.text = ""

    def find(self, tag: str) -> Element | None:
        """First child with this (unprefixed) tag name."""
        for child in self.children:
            if child.tag == tag:
                return child
        return None

    def findall(self, tag: str) -> list[Element]:
        """All children with this tag name."""
        return [c for c in self.children if c.tag == tag]

    def get(self, name: str, default: str = "") -> str:
        """An attribute or ``default``."""
        return self.attrs.get(name, default)

    def __repr__(self) -> str:
        return f"<{self.tag} {self.attrs} {len(self.children)} children>"


def _local(name: str) -> str:
    i = name.find(":")
    return name if i < 0 else name[i + 1 :]


class StreamParser:
    """Incremental parser of one XML stream; calls ``on_stanza`` for each depth-1 element.

    A new parser is made at each stream restart (after STARTTLS and SASL, RFC 6120 sections 5.4.3.3
    and 6.4.6), as a restarted stream is a new XML document.
    """

    def __init__(self, on_header: Callable[[dict[str, str]], None], on_stanza: Callable[[Element], None],
                 on_close: Callable[[], None]) -> None:
        self._on_header = on_header
        self._on_stanza = on_stanza
        self._on_close = on_close
        self._stack: list[Element] = []
        self._depth = 0
        p = expat.ParserCreate()
        p.buffer_text = True
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text
        self._parser = p

    def feed(self, data: bytes) -> None:
        """Parse a chunk; raises ``expat.ExpatError`` on malformed XML."""
        self._parser.Parse(data, False)

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        self._depth += 1
        if self._depth == 1:
            self._on_header(attrs)
            return
        el = Element(_local(name), attrs)
        if self._stack:
            self._stack[-1].children.append(el)
        self._stack.append(el)

    def _end(self, name: str) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._on_close()
            return
        el = self._stack.pop()
        if not self._stack:
            self._on_stanza(el)

    def _text(self, data: str) -> None:
        if self._stack:
            self._stack[-1].text += data


def _unverified_tls() -> ssl.SSLContext:
    """Servers under test use self-signed certificates on loopback; certificate checks are out of scope."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


TLS_CONTEXT = _unverified_tls()

# RFC 5802 section 5.1 lets a client cache ClientKey/ServerKey for a password, salt and iteration
# count; real clients do, and it keeps PBKDF2 off the generator's CPU when the same account logs in
# again. The first login of each account still pays the full cost.
_SCRAM_CACHE: dict[tuple[str, bytes, int], tuple[bytes, bytes]] = {}


def scram_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(ClientKey, ServerKey) for SCRAM-SHA-1 (RFC 5802 section 3)."""
    key = (password, salt, iterations)
    cached = _SCRAM_CACHE.get(key)
    if cached is None:
        salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
        cached = (hmac.digest(salted, b"Client Key", "sha1"), hmac.digest(salted, b"Server Key", "sha1"))
        _SCRAM_CACHE[key] = cached
    return cached


class ScramSha1Client:
    """The client side of SASL SCRAM-SHA-1 without channel binding (gs2 header ``n,,``)."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username.replace("=", "=3D").replace(",", "=2C")
        self.password = password
        self.cnonce = base64.b64encode(os.urandom(18)).decode()
        self.bare = f"n={self.username},r={self.cnonce}"
        self._server_sig = b""

    def first(self) -> bytes:
        """client-first-message."""
        return ("n,," + self.bare).encode()

    def final(self, server_first: bytes) -> bytes:
        """client-final-message for the server-first-message."""
        sf = server_first.decode()
        parts = dict(p.split("=", 1) for p in sf.split(","))
        nonce, salt, iters = parts["r"], base64.b64decode(parts["s"]), int(parts["i"])
        if not nonce.startswith(self.cnonce):
            raise XMPPError("SCRAM nonce mismatch")
        client_key, server_key = scram_keys(self.password, salt, iters)
        stored = hashlib.sha1(client_key).digest()
        without_proof = f"c=biws,r={nonce}"
        auth_msg = f"{self.bare},{sf},{without_proof}".encode()
        sig = hmac.digest(stored, auth_msg, "sha1")
        proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
        self._server_sig = hmac.digest(server_key, auth_msg, "sha1")
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> None:
        """Check the server signature (mutual authentication)."""
        parts = dict(p.split("=", 1) for p in server_final.decode().split(","))
        if base64.b64decode(parts.get("v", "")) != self._server_sig:
            raise XMPPError("SCRAM server signature mismatch")


_ids = itertools.count(1)


def next_id() -> str:
    """A short unique stanza id."""
    return f"b{next(_ids)}"


class Connection(asyncio.Protocol):
    """One c2s connection. Procedures (``login``, ``register``, ``iq``) await stanzas from a queue;
    load loops install ``handler`` to get stanzas synchronously instead (no queue hop per message)."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[Element | None] = asyncio.Queue()
        self.handler: Callable[[Element], None] | None = None
        self.header: dict[str, str] = {}
        self.closed = asyncio.get_running_loop().create_future()
        self.jid = ""
        self.error: BaseException | None = None
        self._header_event = asyncio.Event()
        self._pending: dict[str, asyncio.Future[Element]] = {}
        self._parser = self._new_parser()

    # asyncio.Protocol ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed(data)
        except expat.ExpatError as exc:
            self.error = exc
            self.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.queue.put_nowait(None)
        self._header_event.set()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(XMPPError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    # parsing ---------------------------------------------------------------------------
    def _new_parser(self) -> StreamParser:
        return StreamParser(self._on_header, self._on_stanza, self._on_stream_close)

    def _on_header(self, attrs: dict[str, str]) -> None:
        self.header = attrs
        self._header_event.set()

    def _on_stanza(self, el: Element) -> None:
        if el.tag == "iq" and el.get("type") in ("result", "error"):
            fut = self._pending.pop(el.get("id"), None)
            if fut is not None:
                if not fut.done():
                    fut.set_result(el)
                return
        if self.handler is not None:
            self.handler(el)
        else:
            self.queue.put_nowait(el)

    def _on_stream_close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # sending ---------------------------------------------------------------------------
    def send(self, data: str | bytes) -> None:
        """Write raw XML."""
        if self.transport is None or self.transport.is_closing():
            raise XMPPError("connection closed")
        self.transport.write(data.encode() if isinstance(data, str) else data)

    async def open_stream(self) -> Element:
        """Send a stream header and return the stream features (RFC 6120 section 4.3)."""
        self._header_event.clear()
        self.send(
            f"<?xml version='1.0'?><stream:stream to='{self.domain}' version='1.0' xml:lang='en' "
            f"xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}'>"
        )
        features = await self.expect("features")
        return features

    async def next(self) -> Element:
        """The next stanza not taken by an iq waiter; raises on stream errors and closed streams."""
        el = await self.queue.get()
        if el is None:
            raise XMPPError(f"stream closed ({self.error or 'by peer'})")
        if el.tag == "error":  # a depth-1 <error/> can only be <stream:error/> (RFC 6120 section 4.9)
            raise XMPPError(f"stream error: {[c.tag for c in el.children]}")
        return el

    async def expect(self, tag: str) -> Element:
        """Wait for a top-level element with ``tag``; anything else is a protocol failure."""
        el = await self.next()
        if el.tag != tag:
            raise XMPPError(f"expected <{tag}>, got <{el.tag}> {[c.tag for c in el.children]}")
        return el

    async def iq(self, type_: str, payload: str, to: str | None = None) -> Element:
        """Send an iq and await its result; raises on type='error' (RFC 6120 section 8.2.3)."""
        iq_id = next_id()
        fut: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        self._pending[iq_id] = fut
        to_attr = f" to={quoteattr(to)}" if to else ""
        self.send(f"<iq type='{type_}' id='{iq_id}'{to_attr}>{payload}</iq>")
        res = await fut
        if res.get("type") == "error":
            err = res.find("error")
            raise XMPPError(f"iq error: {[c.tag for c in err.children] if err else '?'}")
        return res

    async def starttls(self) -> None:
        """RFC 6120 section 5.4: negotiate TLS, then restart the stream."""
        self.send(f"<starttls xmlns='{NS_TLS}'/>")
        await self.expect("proceed")
        loop = asyncio.get_running_loop()
        assert self.transport is not None
        self._parser = self._new_parser()
        new = await loop.start_tls(self.transport, self, TLS_CONTEXT, server_hostname=self.domain)
        if new is None:
            raise XMPPError("start_tls failed")
        self.transport = new

    async def authenticate(self, user: str, password: str) -> None:
        """RFC 6120 section 6 with SCRAM-SHA-1, then the stream restart (section 6.4.6)."""
        sc = ScramSha1Client(user, password)
        self.send(
            f"<auth xmlns='{NS_SASL}' mechanism='SCRAM-SHA-1'>{base64.b64encode(sc.first()).decode()}</auth>"
        )
        ch = await self.next()
        if ch.tag != "challenge":
            raise XMPPError(f"SASL: {[c.tag for c in ch.children]}")
        resp = sc.final(base64.b64decode(ch.text))
        self.send(f"<response xmlns='{NS_SASL}'>{base64.b64encode(resp).decode()}</response>")
        res = await self.next()
        if res.tag == "challenge":  # some servers send additional data as a challenge
            sc.verify(base64.b64decode(res.text))
            self.send(f"<response xmlns='{NS_SASL}'/>")
            res = await self.next()
        elif res.tag == "success" and res.text:
            sc.verify(base64.b64decode(res.text))
        if res.tag != "success":
            raise XMPPError(f"SASL failure: {[c.tag for c in res.children]}")
        self._parser = self._new_parser()

    async def bind(self, resource: str = "bench") -> str:
        """RFC 6120 section 7: bind a resource; returns the full JID."""
        res = await self.iq("set", f"<bind xmlns='{NS_BIND}'><resource>{escape(resource)}</resource></bind>")
        bind = res.find("bind")
        jid = bind.find("jid") if bind else None
        if jid is None:
            raise XMPPError("bind result without jid")
        self.jid = jid.text
        return self.jid

    async def login(self, user: str, password: str, tls: bool, resource: str = "bench") -> None:
        """A full c2s login: stream, optional STARTTLS, SASL SCRAM-SHA-1, bind."""
        features = await self.open_stream()
        if tls:
            if features.find("starttls") is None:
                raise XMPPError("server offers no STARTTLS")
            await self.starttls()
            features = await self.open_stream()
        mechs = features.find("mechanisms")
        if mechs is None or "SCRAM-SHA-1" not in [m.text for m in mechs.children]:
            raise XMPPError(f"no SCRAM-SHA-1 in {[m.text for m in mechs.children] if mechs else None}")
        await self.authenticate(user, password)
        await self.open_stream()
        await self.bind(resource)

    async def register(self, user: str, password: str) -> None:
        """XEP-0077 section 3.1 in-band registration on an unauthenticated stream."""
        await self.open_stream()
        await self.iq(
            "set",
            f"<query xmlns='{NS_REGISTER}'><username>{escape(user)}</username>"
            f"<password>{escape(password)}</password></query>",
        )

    def close(self) -> None:
        """Close the stream politely (RFC 6120 section 4.4) and the socket."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"</stream:stream>")
            self.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection."""
        if self.transport is not None:
            self.transport.abort()


async def connect(host: str, port: int, domain: str) -> Connection:
    """Open a TCP connection with a fresh ``Connection`` protocol."""
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(lambda: Connection(domain), host, port)
    return proto


async def login(host: str, port: int, domain: str, user: str, password: str, tls: bool,
                resource: str = "bench") -> Connection:
    """Connect and log in; closes the socket on failure."""
    conn = await connect(host, port, domain)
    try:
        await conn.login(user, password, tls, resource)
    except BaseException:
        conn.abort()
        raise
    return conn


async def register(host: str, port: int, domain: str, user: str, password: str) -> None:
    """Register one account (XEP-0077) on its own connection; an existing account is fine."""
    conn = await connect(host, port, domain)
    try:
        await conn.register(user, password)
    except XMPPError as exc:
        if "conflict" not in str(exc):
            raise
    finally:
        conn.close()


def stanza_attrs(**attrs: Any) -> str:
    """Serialize attributes (values are quoted and escaped)."""
    return "".join(f" {k.rstrip('_')}={quoteattr(str(v))}" for k, v in attrs.items() if v is not None)


def serialize(el: Element) -> str:
    """Serialize an ``Element`` (used by the echo server to forward stanzas)."""
    attrs = "".join(f" {k}={quoteattr(v)}" for k, v in el.attrs.items())
    if not el.children and not el.text:
        return f"<{el.tag}{attrs}/>"
    inner = escape(el.text) + "".join(serialize(c) for c in el.children)
    return f"<{el.tag}{attrs}>{inner}</{el.tag}>"
