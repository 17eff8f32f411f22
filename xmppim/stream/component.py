"""XEP-0114 component listener: external services (slixmpp ``ComponentXMPP`` and friends) plug in here.

A component opens a ``jabber:component:accept`` stream to its domain, proves the shared secret with
``<handshake>hex(SHA-1(stream id + secret))</handshake>``, then receives every stanza to its domain (or a
JID on it) and may send from that domain only. A stanza with any other ``from`` is refused with a
``not-allowed`` stanza error (the component keeps its stream). While a configured component is away,
stanzas to it are answered with ``service-unavailable`` — never silence.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from enum import Enum, auto
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from .. import jid as jidlib
from ..stanza import IQ, MESSAGE, PRESENCE
from ..xml import ns
from ..xml.parser import Event, StanzaReceived, StreamOpened
from ..xml.serialize import stream_header
from .base import XMLStreamConnection

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("xmppim.component")
HANDSHAKE = f"{{{ns.COMPONENT}}}handshake"
HANDSHAKE_CANON = "{jabber:client}handshake"
STANZAS = frozenset({MESSAGE, PRESENCE, IQ})


class ComponentState(Enum):
    WAIT_HEADER = auto()
    WAIT_HANDSHAKE = auto()
    ESTABLISHED = auto()


class ComponentConnection(XMLStreamConnection):
    kind = "component"
    content_ns = ns.COMPONENT

    def __init__(self, server: Server) -> None:
        super().__init__(server.config.limits.max_stanza_bytes)
        self.server = server
        self.state = ComponentState.WAIT_HEADER
        self.domain = ""
        self.name = "component"
        self.stream_id = ""
        self._header_out = False

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.server.component_connections.add(self)

    def on_lost(self) -> None:
        self.server.component_connections.discard(self)
        if self.state is ComponentState.ESTABLISHED and self.server.router.components.get(self.domain) is self:
            self.server.router.components[self.domain] = None
            self.server.bus.notify("component/disconnected", self.domain)
            log.info("component %s disconnected", self.domain)

    def _header_sent(self) -> bool:
        return self._header_out

    def opening_header_for_error(self) -> bytes:
        self._header_out = True
        return stream_header(from_=None, to=None, id_=secrets.token_hex(8), content_ns=ns.COMPONENT)

    def on_event(self, ev: Event) -> Any:
        if isinstance(ev, StreamOpened):
            return self._opened(ev)
        if not isinstance(ev, StanzaReceived):
            return None
        el = ev.element
        if self.state is ComponentState.ESTABLISHED:
            if el.tag in STANZAS:
                return self._from_component(el)
            self.close("unsupported-stanza-type")
            return None
        if self.state is ComponentState.WAIT_HANDSHAKE and el.tag in (HANDSHAKE, HANDSHAKE_CANON):
            return self._handshake(el)
        self.close("not-authorized", "Handshake first (XEP-0114)")
        return None

    def _opened(self, ev: StreamOpened) -> None:
        if self.state is not ComponentState.WAIT_HEADER:
            self.close("not-well-formed")
            return
        to = ev.attrs.get("to", "")
        self.stream_id = secrets.token_hex(12)
        self._header_out = True
        self.write(stream_header(from_=to or None, to=None, id_=self.stream_id, version=None, content_ns=ns.COMPONENT))
        if ev.default_ns != ns.COMPONENT:
            self.close("invalid-namespace")
            return
        if to not in self.server.config.components:
            self.close("host-unknown", f"No component {to!r} is configured here")
            return
        self.domain = to
        self.name = to
        self.state = ComponentState.WAIT_HANDSHAKE

    def _handshake(self, el: Element) -> None:
        secret = self.server.config.components[self.domain].secret
        expected = hashlib.sha1((self.stream_id + secret).encode()).hexdigest()
        given = (el.text or "").strip().lower()
        if not hmac.compare_digest(expected, given):
            self.close("not-authorized", "Wrong secret")
            return
        if self.server.router.components.get(self.domain) is not None:
            self.close("conflict", f"{self.domain} is already connected")
            return
        self.server.router.components[self.domain] = self
        self.server.bus.notify("component/connected", self.domain)
        self.state = ComponentState.ESTABLISHED
        self.write(b"<handshake/>")
        log.info("component %s connected from %s", self.domain, self.peer)

    def _from_component(self, el: Element) -> Any:
        from_ = el.get("from", "")
        try:
            domain = jidlib.split(from_)[1] if from_ else ""
        except jidlib.InvalidJID:
            domain = ""
        if domain != self.domain:
            if el.get("type") not in ("error", "result"):
                from ..stanza import error_reply

                reply = error_reply(el, "not-allowed", f"A component may only send from {self.domain}")
                reply.set("to", from_ or self.domain)
                reply.set("from", self.domain)
                self.deliver(reply)
            log.warning("component %s tried to send from %r", self.domain, from_)
            return None
        return self.server.router.route(self, el)

    def deliver(self, stanza: Element) -> None:
        self.send(stanza)
