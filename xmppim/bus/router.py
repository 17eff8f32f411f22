"""The stanza router: address checks, then named events that modules and plugins handle.

Like Prosody's ``core/stanza_router.lua``: a stanza enters with its origin (a client session, a component,
or the server/a plugin), its ``to`` is validated and normalised (RFC 7622; ``jid-malformed`` otherwise),
then ``stanza/in`` and ``{kind}/pre-route`` fire, and the destination decides the next event:

=====================  =====================================================================
``message/bare``       message to a local user's bare JID (default: RFC 6121 §8.5.2 delivery)
``message/full``       message to a local full JID (default: RFC 6121 §8.5.3)
``message/host``       message to a served domain itself
``message/deliver``    one delivery to one session (DeliverEvent); default writes it out
``message/offline``    no available resource (default: none → ``service-unavailable``)
``presence/bare``, ``presence/full``, ``presence/host``, ``presence/self`` (no ``to``, from a client)
``iq/{type}/{ns}``     IQ get/set to the server or a local bare JID (no handler → ``service-unavailable``)
``iq/full``            IQ to a local full JID (default: deliver or ``service-unavailable``)
``iq/response``        result/error IQ to the server or a bare JID (default: resolve ``send_iq`` futures)
``route/component``    stanza to a component domain (default: hand to it, or ``service-unavailable``)
``route/remote``       stanza to a domain we do not serve (default: ``remote-server-not-found``)
=====================  =====================================================================

The hot path creates one small slotted event object per stanza and does one dict lookup per event name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from xml.etree.ElementTree import Element

from .. import faults
from .. import jid as jidlib
from ..sessions.registry import ClientSession, Deliverable, SessionRegistry
from ..stanza import IQ, MESSAGE, PRESENCE, C, error_reply, payload_ns
from .events import PRIORITY_DEFAULT_ACTION, EventBus, HandlerFailed

log = logging.getLogger("xmppim.router")

KINDS = {MESSAGE: "message", PRESENCE: "presence", IQ: "iq"}


class Origin:
    """Where a stanza came from. Client sessions, components and the server itself are origins."""

    kind: str = "local"
    """'c2s', 'component', 's2s' or 'local' (the server or an in-process plugin)."""
    name: str = "server"


class ServerOrigin(Origin):
    kind = "local"

    def __init__(self, name: str = "server") -> None:
        self.name = name


SERVER = ServerOrigin()


class StanzaEvent:
    """The payload of stanza events. ``meta`` holds marks outside the XML (e.g. 'carbon', 'billed')."""

    __slots__ = ("origin", "stanza", "kind", "to", "node", "domain", "resource", "from_", "meta")

    def __init__(self, origin: Any, stanza: Element, kind: str, to: str, node: str, domain: str, resource: str) -> None:
        self.origin = origin
        self.stanza = stanza
        self.kind = kind
        self.to = to
        self.node = node
        self.domain = domain
        self.resource = resource
        self.from_ = stanza.get("from", "")
        self.meta: dict[str, Any] = {}

    @property
    def bare_to(self) -> str:
        return f"{self.node}@{self.domain}" if self.node else self.domain

    @property
    def type(self) -> str:
        return self.stanza.get("type", "")


class DeliverEvent:
    """One delivery of a stanza to one local session (``message/deliver``)."""

    __slots__ = ("event", "session")

    def __init__(self, event: StanzaEvent, session: ClientSession) -> None:
        self.event = event
        self.session = session


class Router:
    def __init__(self, bus: EventBus, sessions: SessionRegistry, hosts: set[str]) -> None:
        self.bus = bus
        self.sessions = sessions
        self.hosts = hosts
        self.components: dict[str, Deliverable | None] = {}
        """Component domains → their live connection (None while a configured one is disconnected)."""
        self._pending_iq: dict[tuple[str, str], asyncio.Future[Element]] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self.fault_drop_messages = faults.active("drop-messages")
        """Test-only fault injection (``xmppim/faults.py``), proving the interop tier can fail."""
        bus.hook("message/bare", self._message_bare, PRIORITY_DEFAULT_ACTION)
        bus.hook("message/full", self._message_full, PRIORITY_DEFAULT_ACTION)
        bus.hook("message/deliver", self._deliver, PRIORITY_DEFAULT_ACTION)
        bus.hook("iq/full", self._iq_full, PRIORITY_DEFAULT_ACTION)
        bus.hook("iq/response", self._iq_response, PRIORITY_DEFAULT_ACTION)
        bus.hook("route/component", self._to_component, PRIORITY_DEFAULT_ACTION)
        bus.hook("presence/full", self._presence_full, PRIORITY_DEFAULT_ACTION)

    # ------------------------------------------------------------------ entry
    def route(self, origin: Any, stanza: Element) -> Any:
        """Route one stanza. Returns ``None``, or an awaitable the caller must await before the next one."""
        kind = KINDS.get(stanza.tag)
        if kind is None:
            log.debug("dropping non-stanza %s from %s", stanza.tag, getattr(origin, "name", origin))
            return None
        to = stanza.get("to")
        if to:
            try:
                node, domain, resource = jidlib.split(to)
            except jidlib.InvalidJID:
                return self.reply_error(stanza, "jid-malformed", "The 'to' address is not a valid JID")
            norm = jidlib.join(node, domain, resource)
            if norm != to:
                stanza.set("to", norm)
                to = norm
        else:
            to, node, domain, resource = "", "", "", ""
        ev = StanzaEvent(origin, stanza, kind, to, node, domain, resource)
        bus = self.bus
        r = bus.fire("stanza/in", ev)
        if r is None:
            r = bus.fire(f"{kind}/pre-route", ev)
        if r is None:
            r = self.dispatch(ev)
        if r is None or r is True:
            return None
        return self._result(ev, r)

    def dispatch(self, ev: StanzaEvent) -> Any:
        """Fire the destination event for an already-checked stanza (also used to re-route)."""
        kind = ev.kind
        bus = self.bus
        if not ev.to:
            if ev.origin.kind == "c2s":
                if kind == "presence":
                    return bus.fire("presence/self", ev) or True
                if kind == "message":
                    # RFC 6120 §10.3.1: no 'to' on a client's message means its own bare JID.
                    s: ClientSession = ev.origin
                    ev.node, ev.domain, ev.to = s.username, s.domain, s.bare_jid
                    return self._local(ev)
                # RFC 6120 §10.3.3: an IQ without 'to' is handled by the server for the account.
                ev.node, ev.domain = ev.origin.username, ev.origin.domain
                return self._iq_local(ev)
            return None  # components/plugins must address their stanzas
        domain = ev.domain
        if domain in self.hosts:
            return self._local(ev)
        if domain in self.components:
            return bus.fire("route/component", ev)
        r = bus.fire("route/remote", ev)
        if r is None:
            return self.reply_error(ev.stanza, "remote-server-not-found")
        return r

    def redispatch(self, ev: StanzaEvent) -> Any:
        """Run the destination side for a stanza whose origin side already ran elsewhere (another worker
        process); returns ``None`` or an awaitable, like :meth:`route`."""
        r = self.dispatch(ev)
        if r is None or r is True:
            return None
        return self._result(ev, r)

    def _local(self, ev: StanzaEvent) -> Any:
        kind = ev.kind
        if kind == "iq":
            if ev.resource and ev.node:
                return self.bus.fire("iq/full", ev)
            return self._iq_local(ev)
        if not ev.node:
            r = self.bus.fire(f"{kind}/host", ev)
            if r is None and kind == "message" and ev.type not in ("error", "headline", "groupchat"):
                return self.reply_error(ev.stanza, "service-unavailable")
            return r
        where = "full" if ev.resource else "bare"
        return self.bus.fire(f"{kind}/{where}", ev)

    def _iq_local(self, ev: StanzaEvent) -> Any:
        t = ev.type
        stanza = ev.stanza
        if t in ("get", "set"):
            if len(stanza) != 1 or not stanza.get("id"):
                return self.reply_error(stanza, "bad-request", "An IQ get/set needs an id and one payload")
            r = self.bus.fire(f"iq/{t}/{payload_ns(stanza)}", ev)
            if r is None:
                return self.reply_error(stanza, "service-unavailable")
            return r
        if t in ("result", "error"):
            return self.bus.fire("iq/response", ev)
        return self.reply_error(stanza, "bad-request", "Unknown IQ type")

    # ----------------------------------------------------------- results
    def _result(self, ev: StanzaEvent, r: Any) -> Any:
        if isinstance(r, HandlerFailed):
            return self.reply_error(ev.stanza, "internal-server-error", f"A plugin failed ({r.owner})")
        if isinstance(r, Element):
            # A handler may answer with the reply stanza itself (an IQ result, an error reply).
            return self.route(SERVER, r)
        if hasattr(r, "__await__"):
            return self._guard(ev, r)
        return None

    async def _guard(self, ev: StanzaEvent, aw: Awaitable[Any]) -> None:
        try:
            r = await aw
        except Exception:
            # Already logged and counted against its plugin (EventBus._owned); answer this stanza alone.
            r2 = self.reply_error(ev.stanza, "internal-server-error")
            if r2 is not None:
                await r2
            return
        if r is not None and r is not True:
            inner = self._result(ev, r)
            if inner is not None:
                await inner

    def route_reply(self, stanza: Element) -> None:
        """Route a stanza the server generated as an answer; async follow-ups run in the background."""
        r = self.route(SERVER, stanza)
        if r is not None:
            task = asyncio.ensure_future(r)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def reply_error(self, stanza: Element, condition: str, text: str | None = None, **kw: Any) -> Any:
        """Answer ``stanza`` with a stanza error — never an error or an IQ result (RFC 6120 §8.3.1)."""
        if stanza.get("type") in ("error", "result"):
            return None
        if not stanza.get("from"):
            return None
        return self.route(SERVER, error_reply(stanza, condition, text, **kw))

    # ------------------------------------------------------ default actions
    def _message_bare(self, ev: StanzaEvent) -> Any:
        """RFC 6121 §8.5.2: choose the resources of a local bare JID for a message."""
        t = ev.type or "normal"
        if t == "error":
            return True
        if t == "groupchat":
            return self.reply_error(ev.stanza, "service-unavailable")
        resources = [s for s in self.sessions.available(ev.bare_to) if s.priority >= 0]
        if not resources:
            if t == "headline":
                return True
            r = self.bus.fire("message/offline", ev)
            if r is None:
                return self.reply_error(ev.stanza, "service-unavailable")
            return r
        if t != "headline":
            top = max(s.priority for s in resources)
            resources = [s for s in resources if s.priority == top]
        result: Any = True
        for s in resources:
            r = self.bus.fire("message/deliver", DeliverEvent(ev, s))
            if r is not None and r is not True:
                result = r
        return result

    def _message_full(self, ev: StanzaEvent) -> Any:
        s = self.sessions.get(ev.to)
        if s is not None:
            return self.bus.fire("message/deliver", DeliverEvent(ev, s))
        t = ev.type or "normal"
        if t == "groupchat":
            return self.reply_error(ev.stanza, "service-unavailable")
        if t in ("error", "headline"):
            return True
        # RFC 6121 §8.5.3.2.1: chat and normal to a gone resource are treated as sent to the bare JID.
        return self.bus.fire("message/bare", ev)

    def _deliver(self, de: DeliverEvent) -> Any:
        if self.fault_drop_messages and de.event.stanza.get("type", "normal") in ("chat", "normal"):
            return True
        de.session.deliver(de.event.stanza)
        return True

    def _presence_full(self, ev: StanzaEvent) -> Any:
        s = self.sessions.get(ev.to)
        if s is not None:
            s.deliver(ev.stanza)
        return True

    def _iq_full(self, ev: StanzaEvent) -> Any:
        s = self.sessions.get(ev.to)
        if s is not None:
            s.deliver(ev.stanza)
            return True
        if ev.type in ("get", "set"):
            return self.reply_error(ev.stanza, "service-unavailable")
        return True

    def _to_component(self, ev: StanzaEvent) -> Any:
        comp = self.components.get(ev.domain)
        if comp is not None:
            comp.deliver(ev.stanza)
            return True
        if ev.type not in ("error", "result"):
            return self.reply_error(ev.stanza, "service-unavailable", "The component is not connected")
        return True

    # --------------------------------------------------------- IQ requests
    def send_iq(self, origin: Any, iq: Element, timeout: float = 30.0) -> asyncio.Future[Element]:
        """Send an IQ get/set from the server or a plugin; the future resolves with the result or error IQ."""
        key = (iq.get("to", ""), iq.get("id", ""))
        fut: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        self._pending_iq[key] = fut
        loop = asyncio.get_running_loop()
        handle = loop.call_later(timeout, self._iq_timeout, key)
        fut.add_done_callback(lambda _f: handle.cancel())
        self.route(origin, iq)
        return fut

    def _iq_timeout(self, key: tuple[str, str]) -> None:
        fut = self._pending_iq.pop(key, None)
        if fut is not None and not fut.done():
            fut.set_exception(TimeoutError(f"no answer to IQ {key[1]} from {key[0]}"))

    def resolve_iq(self, stanza: Element) -> bool:
        """Hand a result/error IQ to the ``send_iq`` future waiting for it; False if nobody waits."""
        fut = self._pending_iq.pop((stanza.get("from", ""), stanza.get("id", "")), None)
        if fut is None:
            return False
        if not fut.done():
            fut.set_result(stanza)
        return True

    def _iq_response(self, ev: StanzaEvent) -> Any:
        self.resolve_iq(ev.stanza)
        return True


def iq_event_name(type_: str, namespace: str) -> str:
    return f"iq/{type_}/{namespace}"


OnStanza = Callable[[StanzaEvent], Any]
__all__ = ["Router", "StanzaEvent", "DeliverEvent", "Origin", "ServerOrigin", "SERVER", "C", "iq_event_name"]
