"""Client-to-server streams (RFC 6120): header, STARTTLS, SASL, resource binding, then stanzas.

One connection object per TCP connection; its state is an :class:`C2SState` and what each state accepts
is the table :data:`ACCEPTS` — anything else ends the stream with the error the RFC names. Stanzas before
authentication and binding are answered with ``not-authorized`` (RFC 6120 §4.3.5, §7.1) and never reach
the router; once bound, every stanza gets the session's full JID stamped as ``from`` (§8.1.2.1).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import weakref
from enum import Enum, auto
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element, SubElement

from .. import jid as jidlib
from ..auth.sasl import SaslFailure, SaslNegotiation, Step, b64decode, b64encode, mechanisms
from ..stanza import IQ, MESSAGE, PRESENCE, error_reply, iq_result
from ..xml import ns
from ..xml.parser import Event, StanzaReceived, StreamOpened
from ..xml.serialize import serialize, stream_header
from .base import XMLStreamConnection

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("xmppim.c2s")

STANZAS = frozenset({MESSAGE, PRESENCE, IQ})
STARTTLS = f"{{{ns.TLS}}}starttls"
SASL_AUTH = f"{{{ns.SASL}}}auth"
SASL_RESPONSE = f"{{{ns.SASL}}}response"
SASL_ABORT = f"{{{ns.SASL}}}abort"
BIND = f"{{{ns.BIND}}}bind"
MAX_SASL_FAILURES = 5
IDLE_SWEEP_SECONDS = 2.0
"""A c2s stream that received nothing for one to two of these intervals lets its XML parser hibernate
(:meth:`~xmppim.xml.parser.StreamParser.hibernate`: ~14 KB less per idle client; waking costs ~8 µs, once
per burst of traffic after a silence). Idle RSS per TLS client over 2,000 connections measured 3 s after the
last login (as the issue-12 bench does; 8 KiB TLS read buffer then): 47.8 KiB with 5 s, 44.7 KiB with 2 s,
40.4 KiB with 1 s. The memory an idle parser frees is reused by the process but not returned to the OS, so
what counts is freeing it before the next connections allocate."""


class C2SState(Enum):
    WAIT_HEADER = auto()
    """Before the client's (re)opened stream header."""
    NEGOTIATING = auto()
    """Features sent, not authenticated: STARTTLS, SASL or in-band registration may follow."""
    SASL = auto()
    """A SASL exchange is in progress."""
    BINDING = auto()
    """Authenticated and restarted: waiting for the resource-binding IQ."""
    ESTABLISHED = auto()
    """Bound: stanzas are routed."""


ACCEPTS: dict[C2SState, frozenset[str]] = {
    C2SState.WAIT_HEADER: frozenset(),
    C2SState.NEGOTIATING: frozenset({STARTTLS, SASL_AUTH, IQ}),
    C2SState.SASL: frozenset({SASL_RESPONSE, SASL_ABORT}),
    C2SState.BINDING: frozenset({IQ}),
    C2SState.ESTABLISHED: STANZAS,
}
"""What each state accepts; the transition table of the c2s machine."""


class C2SConnection(XMLStreamConnection):
    kind = "c2s"
    __slots__ = (
        "server",
        "state",
        "secure",
        "authenticated",
        "stream_id",
        "domain",
        "username",
        "resource",
        "bare_jid",
        "full_jid",
        "lang",
        "priority",
        "presence",
        "interested",
        "directed",
        "meta",
        "name",
        "bound",
        "started",
        "_sasl",
        "_sasl_failures",
        "_auth_timer",
        "_header_out",
        "_ip",
    )

    def __init__(self, server: Server, direct_tls: bool = False) -> None:
        super().__init__(server.config.limits.max_stanza_bytes, server.config.limits.c2s_bytes_per_second)
        self.server = server
        self.state = C2SState.WAIT_HEADER
        self.secure = direct_tls
        self.authenticated = False
        self.stream_id = ""
        self.domain = ""
        self.username = ""
        self.resource = ""
        self.bare_jid = ""
        self.full_jid = ""
        self.lang = "en"
        self.priority = 0
        self.presence: Element | None = None
        self.interested = False
        self.directed: set[str] = set()
        self.meta: dict[str, Any] = {}
        self.name = "c2s"
        self.bound = False
        self.started = time.monotonic()
        self._sasl: SaslNegotiation | None = None
        self._sasl_failures = 0
        self._auth_timer: asyncio.TimerHandle | None = None
        self._header_out = False
        self._ip = ""

    # ---------------------------------------------------------------- life
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self._ip = peer[0] if peer else ""
        if not self.server.admit_unauthenticated(self._ip):
            self.close("policy-violation", "Too many unauthenticated connections from your address")
            return
        self.server.c2s_connections.add(self)
        _sweep_idle_parsers(self.server)
        self._auth_timer = asyncio.get_running_loop().call_later(
            self.server.config.c2s.auth_timeout, self._auth_timeout
        )

    def _auth_timeout(self) -> None:
        if not self.bound:
            self.close("connection-timeout", "Authentication took too long")

    def on_lost(self) -> None:
        self.server.c2s_connections.discard(self)
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        if not self.bound:
            self.server.release_unauthenticated(self._ip)
        if self.bound:
            self.bound = False
            if self.server.sessions.remove(self):
                self.server.session_closed(self)

    def _header_sent(self) -> bool:
        return self._header_out

    def opening_header_for_error(self) -> bytes:
        # RFC 6120 §4.9.1.2: open a stream before sending an error if the client's header was unusable.
        self._header_out = True
        return stream_header(from_=self.server.default_domain, to=None, id_=secrets.token_hex(8))

    # ----------------------------------------------------------- dispatch
    def on_event(self, ev: Event) -> Any:
        if isinstance(ev, StanzaReceived):
            el = ev.element
            tag = el.tag
            if self.state is C2SState.ESTABLISHED and tag in STANZAS:
                # Hot path. RFC 6120 §8.1.2.1: the server stamps the sender's full JID.
                el.attrib["from"] = self.full_jid
                return self.server.router.route(self, el)
            if tag not in ACCEPTS[self.state]:
                return self._unexpected(el)
            if tag == IQ:
                return self._iq_before_bound(el)
            if tag == STARTTLS:
                return self._starttls()
            if tag == SASL_AUTH:
                return self._sasl_auth(el)
            if tag == SASL_RESPONSE:
                return self._sasl_response(el)
            if tag == SASL_ABORT:
                self._sasl = None
                self.state = C2SState.NEGOTIATING
                self._sasl_fail("aborted")
            return None
        if isinstance(ev, StreamOpened):
            return self._stream_opened(ev)
        return None

    def _unexpected(self, el: Element) -> None:
        if el.tag in STANZAS:
            self.close("not-authorized", "Authenticate and bind a resource first")
        elif self.state is C2SState.WAIT_HEADER:
            self.close("not-well-formed")
        else:
            self.close("unsupported-stanza-type", f"{el.tag} is not expected here")

    # ------------------------------------------------------- stream header
    def _stream_opened(self, ev: StreamOpened) -> None:
        if self.state is not C2SState.WAIT_HEADER:
            self.close("not-well-formed", "Stream header repeated")
            return
        attrs = ev.attrs
        to = attrs.get("to", "")
        self.lang = attrs.get(ns.XML_LANG, self.lang) or "en"
        self.stream_id = secrets.token_urlsafe(12)
        try:
            host = jidlib.parse(to) if to else ""
        except jidlib.InvalidJID:
            host = ""
        if not self.domain:
            self.domain = host
        header = stream_header(from_=host or self.server.default_domain, to=None, id_=self.stream_id)
        self._header_out = True
        if ev.default_ns != ns.CLIENT:
            self.write(header)
            self.close("invalid-namespace", "A client stream's default namespace is jabber:client")
            return
        if host not in self.server.hosts:
            self.write(header)
            self.close("host-unknown", f"This server does not serve {to!r}")
            return
        if host != self.domain:
            self.write(header)
            self.close("host-unknown", "The domain changed after a stream restart")
            return
        if not attrs.get("version", "").startswith("1."):
            self.write(header)
            self.close("unsupported-version", "XMPP 1.0 streams only")
            return
        # Header and features in one write: one TCP segment, and clients that read once see both.
        self.write(header + serialize(self._features(), ns.CLIENT))

    def _features(self) -> Element:
        f = Element(f"{{{ns.STREAMS}}}features")
        cfg = self.server.config
        if self.authenticated:
            SubElement(f, BIND)
            sess = SubElement(f, f"{{{ns.SESSION}}}session")
            SubElement(sess, f"{{{ns.SESSION}}}optional")
            for feature in self.server.items.get("stream-feature/bound"):
                el = feature(self)
                if el is not None:
                    f.append(el)
            self.state = C2SState.BINDING
            return f
        if not self.secure:
            tls = SubElement(f, STARTTLS)
            if cfg.c2s.require_encryption:
                SubElement(tls, f"{{{ns.TLS}}}required")
                self.state = C2SState.NEGOTIATING
                return f
        mechs = SubElement(f, f"{{{ns.SASL}}}mechanisms")
        for m in mechanisms(self.secure, self.secure):
            SubElement(mechs, f"{{{ns.SASL}}}mechanism").text = m
        if self.secure:
            # XEP-0440: say which channel-binding type the -PLUS mechanisms use.
            cb = SubElement(f, "{urn:xmpp:sasl-cb:0}sasl-channel-binding")
            SubElement(cb, "{urn:xmpp:sasl-cb:0}channel-binding", {"type": "tls-server-end-point"})
        for feature in self.server.items.get("stream-feature/unauthenticated"):
            el = feature(self)
            if el is not None:
                f.append(el)
        self.state = C2SState.NEGOTIATING
        return f

    def _restart(self) -> None:
        """RFC 6120 §4.3.3: after TLS or SASL both sides start a fresh stream; parse it afresh."""
        self.parser.reset()
        # Anything parsed after <starttls/> or before <success/> belongs to the old stream: drop it
        # (the STARTTLS command-injection defence, cf. CVE-2011-0411).
        self._backlog = None
        self.state = C2SState.WAIT_HEADER

    # -------------------------------------------------------------- STARTTLS
    def _starttls(self) -> Any:
        if self.secure:
            self.close("policy-violation", "TLS is already on")
            return None
        self.write(b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        assert self.transport is not None
        self.transport.pause_reading()
        # Reset now, not after the handshake: asyncio may hand us the client's first decrypted bytes (its
        # new stream header) before start_tls() returns; they must meet a fresh parser.
        self._restart()
        return self._upgrade()

    async def _upgrade(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.transport is not None
        try:
            new = await loop.start_tls(
                self.transport, self, self.server.tls.context, server_side=True, ssl_handshake_timeout=30
            )
        except (TimeoutError, OSError, ConnectionError) as e:
            log.info("TLS handshake with %s failed: %s", self.peer, e)
            self.closed = True
            if self.transport is not None:
                self.transport.abort()
            return
        if new is None:
            self.closed = True
            return
        self.transport = new
        self.secure = True

    # ------------------------------------------------------------------ SASL
    def _sasl_auth(self, el: Element) -> Any:
        cfg = self.server.config
        if not self.secure and cfg.c2s.require_encryption:
            self._sasl_fail("encryption-required")
            return None
        mech = el.get("mechanism", "")
        try:
            self._sasl = SaslNegotiation(
                mech,
                domain=self.domain,
                lookup=self._lookup_keys,
                server_secret=self.server.secret,
                secure=self.secure,
                channel_binding=self.server.tls.end_point_binding if self.secure else None,
            )
            initial = b64decode(el.text)
        except SaslFailure as f:
            self._sasl_fail(f.condition)
            return None
        self.state = C2SState.SASL
        return self._sasl_step(self._sasl.start(initial))

    def _sasl_response(self, el: Element) -> Any:
        assert self._sasl is not None
        try:
            data = b64decode(el.text)
        except SaslFailure as f:
            self._sasl = None
            self.state = C2SState.NEGOTIATING
            self._sasl_fail(f.condition)
            return None
        return self._sasl_step(self._sasl.respond(data))

    async def _lookup_keys(self, username: str) -> Any:
        return await self.server.accounts.get_keys(username, self.domain)

    async def _sasl_step(self, step_coro: Any) -> None:
        try:
            step: Step = await step_coro
        except SaslFailure as f:
            self._sasl = None
            self.state = C2SState.NEGOTIATING
            self._sasl_fail(f.condition)
            return
        if not step.success:
            self.write(f"<challenge xmlns='{ns.SASL}'>{b64encode(step.data)}</challenge>".encode())
            return
        self._sasl = None
        self.authenticated = True
        self.username = step.username
        self.bare_jid = f"{step.username}@{self.domain}"
        body = base64_or_empty(step.data)
        self.write(f"<success xmlns='{ns.SASL}'>{body}</success>".encode())
        self._restart()

    def _sasl_fail(self, condition: str) -> None:
        self._sasl_failures += 1
        self.write(f"<failure xmlns='{ns.SASL}'><{condition}/></failure>".encode())
        if self._sasl_failures >= MAX_SASL_FAILURES:
            self.close("policy-violation", "Too many failed authentication attempts")

    # ------------------------------------------------------- pre-bind IQs
    def _iq_before_bound(self, iq: Element) -> Any:
        if self.state is C2SState.NEGOTIATING:
            # Only in-band registration (XEP-0077) may speak before authentication.
            child = iq[0] if len(iq) else None
            if child is not None and child.tag == f"{{{ns.REGISTER}}}query":
                r = self.server.bus.fire("c2s/unauthenticated-register", (self, iq))
                if r is None:
                    self.send(error_reply(iq, "service-unavailable"))
                    return None
                return r if hasattr(r, "__await__") else None
            self.close("not-authorized", "Authenticate first")
            return None
        child = iq[0] if len(iq) == 1 else None
        if iq.get("type") == "set" and child is not None and child.tag == BIND:
            return self._bind(iq, child)
        if child is not None and child.tag == f"{{{ns.SESSION}}}session":
            self.send(iq_result(iq))
            return None
        self.close("not-authorized", "Bind a resource first")
        return None

    def _bind(self, iq: Element, bind: Element) -> Any:
        """RFC 6120 §7: bind the requested or a generated resource; a conflict replaces the old session."""
        requested = (bind.findtext(f"{{{ns.BIND}}}resource") or "").strip()
        resource = ""
        if requested:
            try:
                _n, _d, resource = jidlib.split(f"{self.bare_jid}/{requested}")
            except jidlib.InvalidJID:
                self.send(error_reply(iq, "bad-request", "Not a valid resource"))
                return None
        if not resource:
            resource = secrets.token_hex(6)
        self.resource = resource
        self.full_jid = f"{self.bare_jid}/{resource}"
        old = self.server.sessions.add(self)
        if old is not None:
            old.bound = False  # type: ignore[attr-defined]
            self.server.session_closed(old)
            old.close("conflict", "Replaced by a new connection with the same resource")
        self.bound = True
        self.state = C2SState.ESTABLISHED
        self.name = self.full_jid
        if self._auth_timer is not None:
            self._auth_timer.cancel()
        self.server.release_unauthenticated(self._ip)
        result = iq_result(iq)
        result.attrib.pop("from", None)
        b = SubElement(result, BIND)
        SubElement(b, f"{{{ns.BIND}}}jid").text = self.full_jid
        self.send(result)
        return self.server.session_bound(self)

    # ------------------------------------------------------------- output
    def deliver(self, stanza: Element) -> None:
        """Write a stanza routed to this session."""
        self.send(stanza)

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        super().close(condition, text)


_SWEPT: weakref.WeakKeyDictionary[Any, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()
"""Servers whose idle sweep is scheduled, and on which loop."""


def _sweep_idle_parsers(server: Server) -> None:
    """Start the idle sweep of ``server``'s c2s streams unless it runs; it stops when none are left."""
    loop = asyncio.get_running_loop()
    if _SWEPT.get(server) is loop:
        return
    _SWEPT[server] = loop
    loop.call_later(IDLE_SWEEP_SECONDS, _sweep, weakref.ref(server))


def _sweep(ref: weakref.ref[Server]) -> None:
    server = ref()
    if server is None:
        return
    conns = server.c2s_connections
    if not conns:
        _SWEPT.pop(server, None)
        return
    for c in conns:
        if not isinstance(c, C2SConnection):
            continue
        if c.recent:
            c.recent = False
        elif not c.closed:
            c.parser.hibernate()
    asyncio.get_running_loop().call_later(IDLE_SWEEP_SECONDS, _sweep, ref)


def base64_or_empty(data: bytes) -> str:
    return b64encode(data) if data else ""
