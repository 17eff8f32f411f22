"""RFC 6121 §4: presence broadcast, probes answered on the users' behalf, directed presence, and the
unavailable broadcast when a session ends — cleanly or not.

Presence a client sends without ``to`` goes to every contact with subscription from/both and to all of the
user's own available resources (including the sender, §4.2.2); the first one of a session also probes the
contacts the user is subscribed to. Probes to local users are answered right here, from the sessions'
last presence; a local contact with no available resource answers with ``unavailable`` carrying the
XEP-0203 time of the last logout when the ``last`` service knows it. Directed presence (§4.6) is
remembered per session, and those entities get ``unavailable`` when the session goes away.

Events: ``presence/broadcast`` (a :class:`Broadcast`, notify) lets plugins see or trim the recipients;
``presence/initial`` (the session, notify) fires after a session's first available presence — offline
delivery and pending subscription requests hang off it.
"""

from __future__ import annotations

import copy
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from ..plugins.api import PRIORITY_DEFAULT_ACTION, Plugin, StanzaEvent, error_reply
from ..sessions.roster import SUBSCRIPTION_TYPES
from ..stanza import PRESENCE, PRIORITY


class Broadcast:
    """Payload of ``presence/broadcast``: who gets ``stanza`` from ``session``. Handlers may edit ``contacts``."""

    __slots__ = ("session", "stanza", "contacts")

    def __init__(self, session: Any, stanza: Element, contacts: list[str]) -> None:
        self.session = session
        self.stanza = stanza
        self.contacts = contacts


def parse_priority(stanza: Element) -> int | None:
    text = stanza.findtext(PRIORITY)
    if text is None:
        return 0
    try:
        p = int(text.strip())
    except ValueError:
        return None
    return p if -128 <= p <= 127 else None


class PresenceModule(Plugin):
    name = "presence"
    builtin = True
    dependencies = ("roster",)
    description = "RFC 6121 presence"

    async def start(self) -> None:
        self.roster = self.ctx.service("roster")
        self.origin = self.ctx.server_origin("presence")
        self.ctx.hook("presence/self", self.on_self)
        self.ctx.hook("presence/pre-route", self.on_directed)
        self.ctx.hook("presence/bare", self.on_bare, PRIORITY_DEFAULT_ACTION)
        self.ctx.hook("presence/host", lambda _ev: True, PRIORITY_DEFAULT_ACTION)
        self.ctx.hook("session/closed", self.on_closed)
        self.ctx.provide("presence", self)

    # ----------------------------------------------------- from the client
    def on_self(self, ev: StanzaEvent) -> Any:
        s = ev.origin
        t = ev.stanza.get("type")
        if t is None:
            prio = parse_priority(ev.stanza)
            if prio is None:
                return error_reply(ev.stanza, "bad-request", "Priority must be an integer from -128 to 127")
            initial = s.presence is None
            s.presence = ev.stanza
            s.priority = prio
            roster = self.roster.cached(s.bare_jid)
            if roster is None:
                return self._later(ev, initial)
            self._available(s, ev.stanza, roster, initial)
            if initial:
                return self._initial_done(s)
            return True
        if t == "unavailable":
            self.go_unavailable(s, ev.stanza)
            return True
        if t in SUBSCRIPTION_TYPES or t == "probe":
            return True  # without 'to' these mean nothing
        if t == "error":
            return True
        return error_reply(ev.stanza, "bad-request", "Unknown presence type")

    async def _later(self, ev: StanzaEvent, initial: bool) -> Any:
        s = ev.origin
        roster = await self.roster.get(s.bare_jid)
        if s.presence is not ev.stanza:
            return True  # superseded meanwhile
        self._available(s, ev.stanza, roster, initial)
        if initial:
            r = self._initial_done(s)
            if r is not None:
                await r
        return True

    def _initial_done(self, s: Any) -> Any:
        for req in self.roster.pending_requests(s.bare_jid):
            s.deliver(req)
        pending = self.ctx.notify("presence/initial", s)
        if not pending:
            return True
        import asyncio

        return asyncio.gather(*pending)

    def _available(self, s: Any, stanza: Element, roster: Any, initial: bool) -> None:
        b = Broadcast(s, stanza, roster.subscribers())
        self.ctx.notify("presence/broadcast", b)
        self._fan_out(s, stanza, b.contacts)
        if initial:
            self._probe(s, roster.subscriptions())

    def _fan_out(self, s: Any, stanza: Element, contacts: list[str]) -> None:
        """Send ``stanza`` from ``s`` to each contact's bare JID and to the user's own available resources."""
        base = dict(stanza.attrib)
        base["from"] = s.full_jid
        base.pop("to", None)
        for contact in contacts:
            p = copy.copy(stanza)
            p.attrib = dict(base, to=contact)
            r = self.ctx.route_as(self.origin, p)
            if r is not None:
                self.ctx.spawn(r)
        for own in self.ctx.sessions.available(s.bare_jid):
            p = copy.copy(stanza)
            p.attrib = dict(base, to=own.full_jid)
            own.deliver(p)

    def _probe(self, s: Any, contacts: list[str]) -> None:
        """§4.2.2: learn the current presence of everyone the user is subscribed to."""
        for contact in contacts:
            node, _, domain = contact.partition("@")
            if domain in self.ctx.hosts:
                self._answer_probe_locally(contact, s)
            else:
                p = Element(PRESENCE, {"type": "probe", "from": s.bare_jid, "to": contact})
                r = self.ctx.route_as(self.origin, p)
                if r is not None:
                    self.ctx.spawn(r)

    def _answer_probe_locally(self, contact: str, to_session: Any) -> None:
        """Answer the probe for a local contact right away — through the router, so that every stanza/in
        policy (blocking, say) applies to these presences exactly as to any other."""
        resources = self.ctx.sessions.available(contact)
        answers = []
        if not resources:
            p = Element(PRESENCE, {"type": "unavailable", "from": contact, "to": to_session.full_jid})
            last = self._last_logout(contact)
            if last:
                SubElement(p, "{urn:xmpp:delay}delay", {"from": contact.split("@")[-1], "stamp": last})
            answers.append(p)
        for r in resources:
            assert r.presence is not None
            p = copy.copy(r.presence)
            p.attrib = dict(r.presence.attrib, **{"from": r.full_jid, "to": to_session.full_jid})
            answers.append(p)
        for p in answers:
            result = self.ctx.route_as(self.origin, p)
            if result is not None:
                self.ctx.spawn(result)

    def _last_logout(self, contact: str) -> str:
        try:
            last = self.ctx.service("last")
        except KeyError:
            return ""
        fn = getattr(last, "cached_logout_stamp", None)
        return fn(contact) if fn else ""

    # --------------------------------------------------------- unavailable
    def go_unavailable(self, s: Any, stanza: Element | None = None) -> None:
        """Broadcast unavailable for ``s`` (explicit, or because its stream ended, §4.5.2)."""
        if stanza is None:
            stanza = Element(PRESENCE, {"type": "unavailable", "from": s.full_jid})
        was_available = s.presence is not None
        s.presence = None
        directed = s.directed
        s.directed = set()
        roster = self.roster.cached(s.bare_jid)
        contacts = roster.subscribers() if (roster is not None and was_available) else []
        targets = [c for c in directed if c not in contacts]
        if was_available:
            b = Broadcast(s, stanza, contacts)
            self.ctx.notify("presence/broadcast", b)
            self._fan_out(s, stanza, b.contacts + targets)
        elif targets:
            self._fan_out(s, stanza, targets)

    def on_closed(self, session: Any) -> None:
        if session.presence is not None or session.directed:
            self.go_unavailable(session)

    # ------------------------------------------------------------ directed
    def on_directed(self, ev: StanzaEvent) -> Any:
        if ev.origin.kind != "c2s" or not ev.to:
            return None
        t = ev.stanza.get("type")
        s = ev.origin
        if t is None:
            roster = self.roster.cached(s.bare_jid)
            bare = ev.bare_to
            entry = roster.items.get(bare) if roster is not None else None
            if entry is None or not entry.state.subscribed_from:
                s.directed.add(ev.to)
        elif t == "unavailable":
            s.directed.discard(ev.to)
        elif t == "probe":
            return True  # clients do not probe (§4.3: the server does)
        return None

    # ------------------------------------------------- to local bare JIDs
    def on_bare(self, ev: StanzaEvent) -> Any:
        t = ev.stanza.get("type")
        if t == "probe":
            return self._probe_in(ev)
        if t in SUBSCRIPTION_TYPES:
            return True
        # §4.3.3 / §4.5.3: available, unavailable and error presence go to all available resources.
        for s in self.ctx.sessions.available(ev.bare_to):
            p = copy.copy(ev.stanza)
            p.attrib = dict(ev.stanza.attrib, to=s.full_jid)
            s.deliver(p)
        return True

    def _probe_in(self, ev: StanzaEvent) -> Any:
        return self._probe_in_async(ev)

    async def _probe_in_async(self, ev: StanzaEvent) -> Any:
        from .. import jid as jidlib

        owner = ev.bare_to
        try:
            prober = jidlib.bare(ev.from_)
        except jidlib.InvalidJID:
            return True
        if not await self.roster.is_subscribed_from(owner, prober):
            return True  # §4.3.2: not subscribed: nothing is revealed
        resources = self.ctx.sessions.available(owner)
        if not resources:
            p = Element(PRESENCE, {"type": "unavailable", "from": owner, "to": ev.from_})
            r = self.ctx.route_as(self.origin, p)
            if r is not None:
                await r
            return True
        for s in resources:
            assert s.presence is not None
            p = copy.copy(s.presence)
            p.attrib = dict(s.presence.attrib, **{"from": s.full_jid, "to": ev.from_})
            r = self.ctx.route_as(self.origin, p)
            if r is not None:
                await r
        return True
