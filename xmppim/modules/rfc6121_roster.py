"""RFC 6121 §2-§3: rosters (get, set, remove, pushes, XEP-0237 versioning) and presence subscriptions.

The subscription state tables live in :mod:`xmppim.sessions.roster` (pure functions); this module does the
I/O around them. Every change to one user's roster runs under that user's lock and commits before anyone is
told (push, delivery), so a crash never leaves a client believing in a state the database lacks.

Choices where the RFC leaves room, as Prosody and ejabberd do:
* a roster get or set addressed to another user's JID is refused with ``forbidden`` (§2.3.3: the sender is
  not authorised to touch that roster);
* pushes carry no ``from`` (implicitly the user's bare JID, §2.1.6);
* an inbound subscription request for an account that does not exist is dropped silently (§3.1.3),
  revealing nothing;
* pre-approval (§3.4) is supported and advertised with the ``urn:xmpp:features:pre-approval`` feature.
"""

from __future__ import annotations

import asyncio
import copy
import secrets
from collections.abc import Awaitable
from dataclasses import replace
from typing import Any
from xml.etree.ElementTree import Element, SubElement, fromstring

from .. import faults
from .. import jid as jidlib
from ..plugins.api import PRIORITY_EARLY, PRIORITY_LATE, Plugin, StanzaEvent, Xep, error_reply, iq_result
from ..sessions.roster import (
    SUBSCRIPTION_TYPES,
    RosterEntry,
    inbound,
    inbound_auto_reply,
    inbound_delivers,
    outbound,
    outbound_routes,
)
from ..stanza import IQ, PRESENCE
from ..storage.repositories.roster import SQLRosterStore
from ..xml.serialize import serialize

NS = "jabber:iq:roster"
Q = f"{{{NS}}}query"
ITEM = f"{{{NS}}}item"
GROUP = f"{{{NS}}}group"
MAX_NAME = 1023
MAX_GROUP = 1023
MAX_ITEMS = 2000
OFFLINE_CACHE = 10_000


class Roster:
    """One user's roster in memory: version and entries by contact bare JID."""

    __slots__ = ("owner", "version", "items", "lock")

    def __init__(self, owner: str, version: int, items: dict[str, RosterEntry]) -> None:
        self.owner = owner
        self.version = version
        self.items = items
        self.lock = asyncio.Lock()

    def visible(self) -> list[RosterEntry]:
        return [e for e in self.items.values() if e.in_roster]

    def subscribers(self) -> list[str]:
        """Contacts that receive this user's presence (subscription from/both)."""
        return [c for c, e in self.items.items() if e.state.subscribed_from]

    def subscriptions(self) -> list[str]:
        """Contacts whose presence this user receives (subscription to/both)."""
        return [c for c, e in self.items.items() if e.state.subscribed_to]


def item_element(entry: RosterEntry, removed: bool = False) -> Element:
    attrs = {"jid": entry.contact, "subscription": "remove" if removed else entry.state.sub}
    if not removed:
        if entry.name:
            attrs["name"] = entry.name
        if entry.state.pending_out:
            attrs["ask"] = "subscribe"
        if entry.state.approved:
            attrs["approved"] = "true"
    item = Element(ITEM, attrs)
    if not removed:
        for g in entry.groups:
            SubElement(item, GROUP).text = g
    return item


class RosterModule(Plugin):
    name = "roster"
    builtin = True
    xeps = (Xep(237, "1.3"),)
    description = "RFC 6121 rosters and presence subscriptions"

    async def start(self) -> None:
        self.store = SQLRosterStore(self.ctx.db)
        self.rosters: dict[str, Roster] = {}
        self._loading: dict[str, asyncio.Future[Roster]] = {}
        self.origin = self.ctx.server_origin("roster")
        self.ctx.add_feature(NS)
        self.ctx.stream_feature("bound", lambda _c: Element("{urn:xmpp:features:rosterver}ver"))
        self.ctx.stream_feature("bound", lambda _c: Element("{urn:xmpp:features:pre-approval}sub"))
        self.ctx.iq_handler("get", NS, self.on_get)
        self.ctx.iq_handler("set", NS, self.on_set)
        self.ctx.hook("presence/pre-route", self.on_outbound, PRIORITY_EARLY)
        self.ctx.hook("presence/bare", self.on_inbound, PRIORITY_EARLY)
        self.ctx.hook("presence/full", self.on_inbound, PRIORITY_EARLY)
        # Late: presence still needs the roster to broadcast 'unavailable' when the session closes.
        self.ctx.hook("session/closed", self.on_closed, PRIORITY_LATE)
        self.ctx.hook("user/deleted", self.on_user_deleted)
        # Several worker processes: a user's roster has one writer, the user's home worker.
        self.ctx.pin_to_user("sender", ("iq", "presence"), _touches_own_roster)
        self.ctx.pin_to_user("recipient", ("presence",), _is_subscription)
        self.ctx.hook("cluster/roster/changed", self.on_changed_elsewhere)
        self.ctx.provide("roster", self)

    # --------------------------------------------------------------- cache
    def cached(self, owner: str) -> Roster | None:
        return self.rosters.get(owner)

    async def get(self, owner: str) -> Roster:
        """The roster of ``owner``, loaded once and kept while the user has sessions."""
        r = self.rosters.get(owner)
        if r is not None:
            return r
        fut = self._loading.get(owner)
        if fut is not None:
            return await asyncio.shield(fut)
        fut = asyncio.get_running_loop().create_future()
        self._loading[owner] = fut
        try:
            version, items = await self.store.load(owner)
            r = Roster(owner, version, items)
            self.rosters[owner] = r
            self._trim()
            fut.set_result(r)
            return r
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()
            raise
        finally:
            self._loading.pop(owner, None)

    def _trim(self) -> None:
        """Keep online users' rosters; of offline users' (loaded for probes, subscriptions, last activity)
        keep at most OFFLINE_CACHE, dropping the oldest that nobody is changing right now."""
        excess = len(self.rosters) - OFFLINE_CACHE
        if excess <= 0:
            return
        for owner in list(self.rosters):
            if excess <= 0:
                break
            r = self.rosters[owner]
            if not r.lock.locked() and not self.ctx.sessions.is_online(owner):
                del self.rosters[owner]
                excess -= 1

    def on_closed(self, session: Any) -> None:
        if not self.ctx.sessions.is_online(session.bare_jid):
            r = self.rosters.get(session.bare_jid)
            if r is not None and not r.lock.locked():
                del self.rosters[session.bare_jid]

    async def on_user_deleted(self, bare: str) -> None:
        await self.store.remove_all(bare)
        self.rosters.pop(bare, None)
        self.ctx.broadcast("roster/changed", bare)

    def on_changed_elsewhere(self, owner: str) -> None:
        """Another worker (the owner's home) changed this roster: our copy is stale, reload when needed."""
        self.rosters.pop(owner, None)

    async def is_subscribed_from(self, owner: str, contact: str) -> bool:
        """Whether ``contact`` may see ``owner``'s presence (owner's item has subscription from/both)."""
        r = await self.get(owner)
        e = r.items.get(contact)
        return bool(e and e.state.subscribed_from)

    # --------------------------------------------------------------- pushes
    def push(self, roster: Roster, entry: RosterEntry, removed: bool = False) -> None:
        """RFC 6121 §2.1.6: push the changed item to every interested resource."""
        if faults.active("drop-roster-push"):
            return
        for s in self.ctx.sessions.resources(roster.owner):
            if not s.interested:
                continue
            iq = Element(IQ, {"type": "set", "id": "push" + secrets.token_hex(6), "to": s.full_jid})
            q = SubElement(iq, Q, {"ver": str(roster.version)})
            q.append(item_element(entry, removed))
            s.deliver(iq)

    async def _save(self, roster: Roster, entry: RosterEntry, push: bool = True) -> None:
        if entry.is_empty():
            if entry.contact in roster.items:
                roster.version = await self.store.remove(roster.owner, entry.contact)
                del roster.items[entry.contact]
                self.ctx.broadcast("roster/changed", roster.owner)
            return
        roster.version = await self.store.save(roster.owner, entry)
        roster.items[entry.contact] = entry
        self.ctx.broadcast("roster/changed", roster.owner)
        if push and entry.in_roster:
            self.push(roster, entry)

    # ---------------------------------------------------------- roster get
    def _own(self, ev: StanzaEvent) -> bool:
        o = ev.origin
        return o.kind == "c2s" and (not ev.node or f"{ev.node}@{ev.domain}" == o.bare_jid)

    def on_get(self, ev: StanzaEvent) -> Any:
        if not self._own(ev):
            return error_reply(ev.stanza, "forbidden")
        return self._get(ev)

    async def _get(self, ev: StanzaEvent) -> Element:
        s = ev.origin
        roster = await self.get(s.bare_jid)
        s.interested = True
        asked = ev.stanza[0].get("ver")
        if asked is not None and asked == str(roster.version) and asked != "":
            return iq_result(ev.stanza)  # XEP-0237 §2.4: up to date; changes follow as pushes
        q = Element(Q, {"ver": str(roster.version)})
        for entry in roster.visible():
            q.append(item_element(entry))
        return iq_result(ev.stanza, q)

    # ---------------------------------------------------------- roster set
    def on_set(self, ev: StanzaEvent) -> Any:
        if not self._own(ev):
            return error_reply(ev.stanza, "forbidden")
        q = ev.stanza[0]
        items = q.findall(ITEM)
        if len(items) != 1 or len(q) != 1:
            return error_reply(ev.stanza, "bad-request", "A roster set carries exactly one item")
        item = items[0]
        try:
            contact = jidlib.bare(item.get("jid", ""))
        except jidlib.InvalidJID:
            return error_reply(ev.stanza, "jid-malformed", "The item's jid is not a valid JID")
        # §2.1.2.5: in a roster set the server MUST ignore every 'subscription' value but "remove"
        # (slixmpp's update_roster sends the current one, e.g. 'none').
        sub = item.get("subscription")
        if sub != "remove":
            sub = None
        name = item.get("name")
        if name is not None and len(name) > MAX_NAME:
            return error_reply(ev.stanza, "not-acceptable", "The name is too long")
        groups = [g.text or "" for g in item.findall(GROUP)]
        if any(not g for g in groups):
            return error_reply(ev.stanza, "not-acceptable", "A group name is empty")
        if any(len(g) > MAX_GROUP for g in groups):
            return error_reply(ev.stanza, "not-acceptable", "A group name is too long")
        if len(set(groups)) != len(groups):
            return error_reply(ev.stanza, "bad-request", "Duplicate groups")
        if contact == ev.origin.bare_jid:
            return error_reply(ev.stanza, "not-allowed", "You cannot add yourself")
        return self._set(ev, contact, sub == "remove", name, groups)

    async def _set(self, ev: StanzaEvent, contact: str, remove: bool, name: str | None, groups: list[str]) -> Any:
        s = ev.origin
        roster = await self.get(s.bare_jid)
        if remove:
            async with roster.lock:
                entry = roster.items.get(contact)
                if entry is None or not entry.in_roster:
                    return error_reply(ev.stanza, "item-not-found")
                st = entry.state
                roster.version = await self.store.remove(roster.owner, contact)
                del roster.items[contact]
                self.ctx.send(iq_result(ev.stanza))
                self.push(roster, entry, removed=True)
            # §2.5.2: removing an item cancels both directions of the subscription.
            if st.subscribed_to or st.pending_out:
                await self._route_subscription(s.bare_jid, contact, "unsubscribe")
            if st.subscribed_from or st.pending_in:
                await self._route_subscription(s.bare_jid, contact, "unsubscribed")
                if st.subscribed_from:
                    await self._unavailable_to(s.bare_jid, contact)
            return True
        async with roster.lock:
            entry = roster.items.get(contact)
            if entry is None:
                if len(roster.visible()) >= MAX_ITEMS:
                    return error_reply(ev.stanza, "not-acceptable", "The roster is full")
                entry = RosterEntry(contact)
            entry = replace(entry, name=name, groups=groups, in_roster=True)
            await self._save(roster, entry, push=False)
            self.ctx.send(iq_result(ev.stanza))
            self.push(roster, entry)
            return True

    # ------------------------------------------------ outbound subscription
    def on_outbound(self, ev: StanzaEvent) -> Any:
        t = ev.stanza.get("type")
        if t not in SUBSCRIPTION_TYPES or ev.origin.kind != "c2s":
            return None
        if not ev.to:
            return error_reply(ev.stanza, "bad-request", "A subscription stanza needs a 'to'")
        # §3.1.2: the server stamps the user's bare JID and addresses the contact's bare JID.
        user = ev.origin.bare_jid
        contact = ev.bare_to
        ev.stanza.set("from", user)
        ev.stanza.set("to", contact)
        ev.from_, ev.to, ev.resource = user, contact, ""
        if contact == user:
            return True
        return self._outbound(ev, user, contact, t)

    async def _outbound(self, ev: StanzaEvent, user: str, contact: str, t: str) -> Any:
        roster = await self.get(user)
        async with roster.lock:
            entry = roster.items.get(contact) or RosterEntry(contact)
            before = entry.state
            after = outbound(before, t)
            routes = outbound_routes(before, after, t)
            if after != before or (t == "subscribe" and not entry.in_roster):
                if t == "subscribe":
                    entry = replace(entry, in_roster=True)
                if t == "subscribed" and before.pending_in:
                    entry = replace(entry, in_roster=True, pending_in_stanza=None)
                if t == "unsubscribed":
                    entry = replace(entry, pending_in_stanza=None)
                entry = replace(entry, state=after)
                await self._save(roster, entry)
        if t == "unsubscribed" and before.subscribed_from:
            await self._unavailable_to(user, contact)
        if not routes:
            return True
        r = self.ctx.dispatch(ev)
        if r is not None and hasattr(r, "__await__"):
            await r
        if t == "subscribed" and before.pending_in:
            # §3.1.5: the approving user's available resources send their presence to the new subscriber.
            await self._presence_to(user, contact)
        return True

    async def _route_subscription(self, user: str, contact: str, t: str) -> None:
        await self._send(Element(PRESENCE, {"from": user, "to": contact, "type": t}))

    async def _send(self, stanza: Element) -> None:
        """Route and wait: the follow-up stanzas of one subscription step finish before the next starts."""
        r = self.ctx.route_as(self.origin, stanza)
        if r is not None:
            await r

    async def _unavailable_to(self, user: str, contact: str) -> None:
        for s in self.ctx.sessions.available(user):
            await self._send(Element(PRESENCE, {"from": s.full_jid, "to": contact, "type": "unavailable"}))

    async def _presence_to(self, user: str, contact: str) -> None:
        for s in self.ctx.sessions.available(user):
            assert s.presence is not None
            p = copy.copy(s.presence)
            p.attrib = dict(p.attrib, to=contact, **{"from": s.full_jid})
            await self._send(p)

    # ------------------------------------------------- inbound subscription
    def on_inbound(self, ev: StanzaEvent) -> Any:
        t = ev.stanza.get("type")
        if t not in SUBSCRIPTION_TYPES:
            return None
        try:
            contact = jidlib.bare(ev.from_)
        except jidlib.InvalidJID:
            return True
        return self._inbound(ev, ev.bare_to, contact, t)

    async def _inbound(self, ev: StanzaEvent, owner: str, contact: str, t: str) -> Any:
        if not await self.ctx.user_exists(owner):
            return True
        roster = await self.get(owner)
        async with roster.lock:
            entry = roster.items.get(contact) or RosterEntry(contact, in_roster=False)
            before = entry.state
            after = inbound(before, t)
            if after != before:
                if t == "subscribe" and after.pending_in:
                    entry = replace(entry, pending_in_stanza=serialize(ev.stanza).decode())
                if t == "unsubscribe":
                    entry = replace(entry, pending_in_stanza=None)
                entry = replace(entry, state=after)
                await self._save(roster, entry)
        if inbound_auto_reply(before, after, t):
            await self._route_subscription(owner, contact, "subscribed")
            if before.approved:
                await self._presence_to(owner, contact)
            return True
        if inbound_delivers(before, after, t):
            stanza = ev.stanza
            stanza.set("from", contact)
            for s in self.ctx.sessions.available(owner):
                s.deliver(stanza)
        if t == "unsubscribe" and before.subscribed_from:
            await self._unavailable_to(owner, contact)
        return True

    def pending_requests(self, owner: str) -> list[Element]:
        """Subscription requests waiting for the user's answer, to re-deliver at login (§3.1.3)."""
        r = self.rosters.get(owner)
        if r is None:
            return []
        out = []
        for e in r.items.values():
            if e.state.pending_in:
                if e.pending_in_stanza:
                    try:
                        out.append(fromstring_client(e.pending_in_stanza))
                        continue
                    except Exception:
                        pass
                out.append(Element(PRESENCE, {"from": e.contact, "to": owner, "type": "subscribe"}))
        return out


def _touches_own_roster(ev: StanzaEvent) -> bool:
    """Roster IQs (a get marks the resource interested in pushes) and outbound subscription presence."""
    if ev.kind == "iq":
        return len(ev.stanza) == 1 and ev.stanza[0].tag == Q
    return bool(ev.to) and ev.stanza.get("type") in SUBSCRIPTION_TYPES


def _is_subscription(ev: StanzaEvent) -> bool:
    return ev.stanza.get("type") in SUBSCRIPTION_TYPES


def fromstring_client(text: str) -> Element:
    """Parse a stored stanza back into the canonical jabber:client namespace."""
    from ..xml.parser import StanzaReceived, StreamParser

    p = StreamParser(max_stanza_bytes=1 << 20)
    wrapped = ("<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>" + text).encode()
    for ev in p.feed(wrapped):
        if isinstance(ev, StanzaReceived):
            return ev.element
    return fromstring(text)


__all__ = ["RosterModule", "Roster", "Awaitable"]
