"""XEP-0191 Blocking Command: users block JIDs; the server enforces it in both directions.

Done (XEP-0191 1.3):

* §3.2 blocklist get (own account only); §3.3 block, §3.4 unblock, §3.5 unblock all, each answered and then
  pushed to every resource of the user that has requested the blocklist (marked on ``session.meta``).
  Block without items → ``bad-request``; an invalid JID → ``jid-malformed``; more than ``max_items`` →
  ``policy-violation``; blocking one's own account is refused (§5: never block one's own resources).
* §3.3: on block, each available resource of the user sends ``unavailable`` to the blocked JID if that JID
  may see the user's presence (roster subscription 'from'/'both', or directed presence it received).
  §3.4/§3.5: on unblock, the user's current presence goes to the unblocked JIDs allowed to see it, and the
  server probes the unblocked contacts the user is subscribed to (their presence was dropped meanwhile).
* Enforcement, in a ``stanza/in`` hook at ``PRIORITY_FIRST`` (before any routing or handler):

  - inbound (§3.3): to a local user from a JID on their blocklist — presence dropped silently, messages
    and IQ get/set answered with ``service-unavailable`` (the user looks offline), errors and IQ results
    dropped;
  - outbound (§3.3): from a local user to a JID on their blocklist — presence dropped, messages and IQ
    get/set bounced with ``not-acceptable`` + ``<blocked xmlns='urn:xmpp:blocking:errors'/>``, errors and
    IQ results dropped.

  Matching (§5, as XEP-0016): an item matches the full JID, the bare JID, or the domain (a domain item
  matches every JID at it). The user's own account and the served domains themselves are never blocked
  (the server must stay reachable, e.g. for pings and pushes).
* ``urn:xmpp:blocking`` in the server's disco#info; a ``blocking`` service (:meth:`is_blocked`) for modules
  that deliver without routing (presence probes answered locally).

Why every blocklist is in memory (not only online users'): stanzas to *offline* users must be refused too
(messages would otherwise land in offline storage), and the check must stay synchronous. Only users with a
non-empty list have an entry, so a server with no blocklists pays one truthiness test per stanza, and one
dict lookup per address otherwise. This module is the only writer of the table, so the index stays exact.

Not done: XEP-0016 privacy lists (not offered), polite-blocking options such as cancelling subscriptions.
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from .. import jid as jidlib
from ..plugins.api import PRIORITY_FIRST, Plugin, StanzaEvent, Xep, error_reply, iq_result
from ..stanza import IQ, PRESENCE
from ..storage.repositories.blocklist import SQLBlocklistStore

NS = "urn:xmpp:blocking"
ERRORS = "urn:xmpp:blocking:errors"
BLOCKLIST = f"{{{NS}}}blocklist"
BLOCK = f"{{{NS}}}block"
UNBLOCK = f"{{{NS}}}unblock"
ITEM = f"{{{NS}}}item"
REQUESTED = "blocking.requested"
"""``session.meta`` key: this resource asked for the blocklist, so it gets pushes (§3.3)."""


@dataclass
class BlockingConfig:
    max_items: int = 1000
    """Longest blocklist a user may have."""


def matches(blocked: frozenset[str], jid: str) -> bool:
    """Whether ``jid`` (normalised) is covered by a blocklist: full JID, bare JID or domain (§5)."""
    if jid in blocked:
        return True
    bare, _, _ = jid.partition("/")
    if bare != jid and bare in blocked:
        return True
    _, at, domain = bare.rpartition("@")
    return bool(at) and domain in blocked


class BlockingModule(Plugin):
    name = "blocking"
    builtin = True
    xeps = (Xep(191, "1.3"),)
    Config = BlockingConfig
    description = "XEP-0191 blocking command"

    async def start(self) -> None:
        cfg: BlockingConfig = self.ctx.config
        self.max_items = cfg.max_items
        self.store = SQLBlocklistStore(self.ctx.db)
        self.index: dict[str, frozenset[str]] = {o: frozenset(j) for o, j in (await self.store.all()).items()}
        self.hosts = self.ctx.hosts
        self._bypass: Element | None = None
        self.ctx.add_feature(NS)
        self.ctx.hook("stanza/in", self.on_stanza, PRIORITY_FIRST)
        self.ctx.iq_handler("get", NS, self.on_get)
        self.ctx.iq_handler("set", NS, self.on_set)
        self.ctx.hook("user/deleted", self.on_user_deleted)
        # Several worker processes: blocklist changes run on the user's home worker, the others follow.
        self.ctx.pin_to_user("sender", ("iq",), _blocking_iq)
        self.ctx.hook("cluster/blocking/changed", self.on_changed_elsewhere)
        self.ctx.provide("blocking", self)

    # ------------------------------------------------------------ service
    def blocklist(self, owner: str) -> frozenset[str]:
        return self.index.get(owner, frozenset())

    def is_blocked(self, owner: str, jid: str) -> bool:
        """Whether local user ``owner`` (bare JID) blocked ``jid`` — either direction is refused."""
        blocked = self.index.get(owner)
        if blocked is None or not jid:
            return False
        return self._covers(blocked, owner, _norm(jid))

    def _covers(self, blocked: frozenset[str], owner: str, norm: str) -> bool:
        """``blocked`` (owner's list) covers normalised ``norm``, except the server and the owner's own JIDs."""
        if not norm or norm in self.hosts or norm.partition("/")[0] == owner:
            return False
        return matches(blocked, norm)

    def either(self, a: str, b: str) -> bool:
        """Whether stanzas between JIDs ``a`` and ``b`` are refused because one (a local user) blocked the other.

        For code that delivers without routing, e.g. a probe answered from a local contact's sessions.
        """
        return self.is_blocked(a.partition("/")[0], b) or self.is_blocked(b.partition("/")[0], a)

    # -------------------------------------------------------- enforcement
    def on_stanza(self, ev: StanzaEvent) -> Any:
        """§3.3: refuse stanzas between a user and the JIDs they blocked, before anything else sees them."""
        index = self.index
        if not index or ev.stanza is self._bypass:
            return None
        from_ = ev.from_
        if not from_:
            return None
        if ev.node:
            owner = f"{ev.node}@{ev.domain}"
            blocked = index.get(owner)
            # A client's 'from' is its bound full JID, already normalised; others' may not be.
            if blocked is not None and self._covers(blocked, owner, from_ if ev.origin.kind == "c2s" else _norm(from_)):
                return self._refuse_inbound(ev)
        to = ev.to
        if to:
            sender = from_.partition("/")[0]
            blocked = index.get(sender)
            if blocked is not None and self._covers(blocked, sender, to):  # the router normalised 'to'
                return self._refuse_outbound(ev)
        return None

    def _refuse_inbound(self, ev: StanzaEvent) -> Any:
        t = ev.stanza.get("type")
        if ev.kind == "presence" or t in ("error", "result"):
            return True
        if ev.kind == "message" and t == "groupchat":
            return True  # a room's broadcast: bouncing it would get the user kicked for nothing
        return self._send_unchecked(error_reply(ev.stanza, "service-unavailable"))

    def _refuse_outbound(self, ev: StanzaEvent) -> Any:
        t = ev.stanza.get("type")
        if ev.kind == "presence" or t in ("error", "result"):
            return True
        err = error_reply(ev.stanza, "not-acceptable", app_condition=Element(f"{{{ERRORS}}}blocked"))
        return self._send_unchecked(err)

    def _send_unchecked(self, stanza: Element) -> Any:
        """Route a stanza this module makes between a user and a blocked JID without refusing it again."""
        self._bypass = stanza
        try:
            r = self.ctx.send(stanza)
        finally:
            self._bypass = None
        return True if r is None else r

    # ------------------------------------------------------------- IQs
    def _own(self, ev: StanzaEvent) -> bool:
        return ev.origin.kind == "c2s" and ev.bare_to == str(ev.origin.bare_jid)

    def on_get(self, ev: StanzaEvent) -> Any:
        if not self._own(ev):
            return error_reply(ev.stanza, "forbidden", "Only your own blocklist can be read")
        if ev.stanza[0].tag != BLOCKLIST:
            return error_reply(ev.stanza, "bad-request", "Expected <blocklist xmlns='urn:xmpp:blocking'/>")
        ev.origin.meta[REQUESTED] = True
        bl = Element(BLOCKLIST)
        for jid in sorted(self.blocklist(ev.bare_to)):
            SubElement(bl, ITEM, {"jid": jid})
        return iq_result(ev.stanza, bl)

    def on_set(self, ev: StanzaEvent) -> Any:
        if not self._own(ev):
            return error_reply(ev.stanza, "forbidden", "Only your own blocklist can be changed")
        cmd = ev.stanza[0]
        if cmd.tag not in (BLOCK, UNBLOCK):
            return error_reply(ev.stanza, "bad-request", "Expected <block/> or <unblock/>")
        jids: list[str] = []
        for item in cmd:
            if item.tag != ITEM:
                continue
            try:
                jids.append(jidlib.parse(item.get("jid", "")))
            except jidlib.InvalidJID:
                return error_reply(ev.stanza, "jid-malformed", f"Not a valid JID: {item.get('jid', '')!r}")
        owner = ev.bare_to
        if cmd.tag == BLOCK:
            if not jids:
                return error_reply(ev.stanza, "bad-request", "Name at least one JID to block")
            if any(j.partition("/")[0] == owner for j in jids):
                return error_reply(ev.stanza, "not-acceptable", "You cannot block your own account")
            if len(self.blocklist(owner) | set(jids)) > self.max_items:
                text = f"A blocklist holds at most {self.max_items} JIDs"
                return error_reply(ev.stanza, "policy-violation", text)
            return self._block(ev, owner, jids)
        return self._unblock(ev, owner, jids)

    async def _block(self, ev: StanzaEvent, owner: str, jids: list[str]) -> Any:
        new = await self.store.add(owner, jids)
        if new:
            await self._unavailable_to(owner, new)
            self._set(owner, self.blocklist(owner) | frozenset(new))
        await self._reply(ev)
        if new:
            self._push(owner, BLOCK, new)
        return True

    async def _unblock(self, ev: StanzaEvent, owner: str, jids: list[str]) -> Any:
        if jids:
            gone = await self.store.remove(owner, jids)
        else:
            gone = await self.store.clear(owner)
        if gone:
            self._set(owner, self.blocklist(owner) - frozenset(gone))
        await self._reply(ev)
        if gone or not jids:
            self._push(owner, UNBLOCK, jids)  # an empty <unblock/> tells resources "everything" (§3.5)
        if gone:
            await self._presence_to(owner, gone)
            await self._probe(owner, gone)
        return True

    async def _reply(self, ev: StanzaEvent) -> None:
        r = self.ctx.send(iq_result(ev.stanza))
        if r is not None:
            await r

    def _push(self, owner: str, tag: str, jids: Iterable[str]) -> None:
        """§3.3-§3.5: tell every resource that asked for the blocklist what changed."""
        for s in self.ctx.sessions.resources(owner):
            if not s.meta.get(REQUESTED):
                continue
            iq = Element(IQ, {"type": "set", "id": f"block-{secrets.token_hex(6)}", "to": s.full_jid})
            cmd = SubElement(iq, tag)
            for jid in jids:
                SubElement(cmd, ITEM, {"jid": jid})
            s.deliver(iq)

    # ---------------------------------------------------------- presence
    async def _may_see_presence(self, owner: str, jid: str) -> bool:
        bare = jid.partition("/")[0]
        if "@" not in bare:
            return False
        try:
            roster = self.ctx.service("roster")
        except KeyError:
            return False
        return bool(await roster.is_subscribed_from(owner, bare))

    async def _unavailable_to(self, owner: str, blocked: list[str]) -> None:
        """§3.3: the newly blocked JIDs that could see the user get ``unavailable`` from each resource."""
        resources = self.ctx.sessions.available(owner)
        if not resources:
            return
        subscribed = [j for j in blocked if await self._may_see_presence(owner, j)]
        one = frozenset(blocked)
        for s in resources:
            targets = list(subscribed)
            for d in list(s.directed):
                dn = _norm(d)
                if dn and matches(one, dn):
                    s.directed.discard(d)
                    if dn not in targets:
                        targets.append(dn)
            for to in targets:
                await self._route(Element(PRESENCE, {"type": "unavailable", "from": s.full_jid, "to": to}))

    async def _presence_to(self, owner: str, unblocked: list[str]) -> None:
        """§3.4: unblocked JIDs allowed to see the user's presence get its current presence again."""
        resources = self.ctx.sessions.available(owner)
        if not resources:
            return
        for jid in unblocked:
            if not await self._may_see_presence(owner, jid):
                continue
            for s in resources:
                if s.presence is None:
                    continue
                p = copy.copy(s.presence)
                p.attrib = dict(s.presence.attrib, to=jid, **{"from": s.full_jid})
                await self._route(p)

    async def _probe(self, owner: str, unblocked: list[str]) -> None:
        """After unblocking, learn the current presence of unblocked contacts the user is subscribed to.

        Not required by XEP-0191, but their presence was dropped while blocked, so the user's clients would
        show them offline until they next change presence (RFC 6121 §4.3: the server probes for the user).
        """
        if not self.ctx.sessions.available(owner):
            return
        try:
            roster = await self.ctx.service("roster").get(owner)
            subscribed_to = set(roster.subscriptions())
        except (KeyError, AttributeError):
            return
        for jid in unblocked:
            if jid in subscribed_to:
                await self._route(Element(PRESENCE, {"type": "probe", "from": owner, "to": jid}))

    async def _route(self, stanza: Element) -> None:
        r = self._send_unchecked(stanza)
        if r is not True:
            await r

    async def on_user_deleted(self, bare: str) -> None:
        self._set(bare, frozenset())
        await self.store.clear(bare)

    def _set(self, owner: str, blocked: frozenset[str]) -> None:
        if blocked:
            self.index[owner] = blocked
        else:
            self.index.pop(owner, None)
        self.ctx.broadcast("blocking/changed", {"owner": owner, "jids": sorted(blocked)})

    def on_changed_elsewhere(self, d: dict[str, Any]) -> None:
        if d["jids"]:
            self.index[d["owner"]] = frozenset(d["jids"])
        else:
            self.index.pop(d["owner"], None)


def _blocking_iq(ev: StanzaEvent) -> bool:
    return len(ev.stanza) == 1 and ev.stanza[0].tag.startswith(f"{{{NS}}}")


def _norm(jid: str) -> str:
    try:
        return jidlib.parse(jid)
    except jidlib.InvalidJID:
        return ""
