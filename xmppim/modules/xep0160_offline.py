"""XEP-0160 offline messages: kept for users with no available resource, delivered at their next login.

A message is committed to the database *before* the sender's stream moves on (the handler hands the router
an awaitable), so a server killed right after accepting it still has it. Each stored copy gets an XEP-0203
``<delay/>`` stamp. Delivery happens on the first available presence with non-negative priority (XEP-0160
§3), oldest first; rows are deleted only after the stanzas were written to the session, so a crash in
between re-delivers rather than loses. A full mailbox (``[limits] offline_quota``) bounces the message with
``service-unavailable`` and the text saying why, like Prosody's quota answer; messages marked with the
XEP-0334 ``<no-store/>`` hint are not kept.
"""

from __future__ import annotations

import datetime as dt
from typing import Any
from xml.etree.ElementTree import SubElement

from ..plugins.api import Plugin, StanzaEvent, Xep, error_reply
from ..storage.repositories.offline import SQLOfflineStore
from ..xml.serialize import serialize
from .rfc6121_roster import fromstring_client

HINTS = "urn:xmpp:hints"


class OfflineModule(Plugin):
    name = "offline"
    builtin = True
    dependencies = ("presence",)
    xeps = (Xep(160, "1.0.1"), Xep(203, "2.0"))

    async def start(self) -> None:
        self.store = SQLOfflineStore(self.ctx.db, self.ctx.server_config.storage.sqlite_synchronous)
        self.quota = self.ctx.server_config.limits.offline_quota
        self.batch = self.ctx.server_config.limits.max_offline_delivery
        self.ctx.add_feature("msgoffline")
        self.ctx.hook("message/offline", self.on_offline)
        self.ctx.hook("presence/initial", self.on_initial)
        self.ctx.hook("cluster/offline/stored", self.on_stored_elsewhere)
        self.ctx.hook("cluster/offline/taken", self.store.forget)
        self._running: set[str] = set()
        self._again: set[str] = set()
        self.ctx.provide("offline", self)

    def on_offline(self, ev: StanzaEvent) -> Any:
        if ev.stanza.find(f"{{{HINTS}}}no-store") is not None:
            return True
        return self._store(ev)

    async def _store(self, ev: StanzaEvent) -> Any:
        owner = ev.bare_to
        if not await self.ctx.user_exists(owner):
            return error_reply(ev.stanza, "service-unavailable")
        stanza = ev.stanza
        delay = SubElement(
            stanza,
            "{urn:xmpp:delay}delay",
            {"from": ev.domain, "stamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")},
        )
        delay.text = "Offline storage"
        ok = await self.store.store(owner, serialize(stanza).decode(), self.quota)
        if not ok:
            stanza.remove(delay)
            return (
                self.ctx.send(error_reply(stanza, "service-unavailable", "The recipient's offline storage is full"))
                or True
            )
        # Another worker process may have seen the user come online just now: it will deliver this.
        self.ctx.broadcast("offline/stored", owner)
        return True

    def on_initial(self, session: Any) -> Any:
        if session.priority < 0:
            return None
        return self.deliver(session)

    def on_stored_elsewhere(self, owner: str) -> Any:
        """A worker stored a message for ``owner`` while it looked offline there; if the user is online here
        (the announcement crossed on the way), deliver it now rather than at the next login."""
        self.store.forget(owner)
        for s in self.ctx.sessions.available(owner):
            if not getattr(s, "remote", False) and s.priority >= 0:
                return self.deliver(s)
        return None

    async def deliver(self, session: Any) -> None:
        """Deliver the mailbox to ``session``; one delivery per user at a time, repeated if more arrived."""
        owner = session.bare_jid
        if owner in self._running:
            self._again.add(owner)
            return
        self._running.add(owner)
        try:
            while True:
                self._again.discard(owner)
                await self._deliver_batches(session)
                if owner not in self._again or session.closed:
                    return
        finally:
            self._running.discard(owner)
            self._again.discard(owner)

    async def _deliver_batches(self, session: Any) -> None:
        while True:
            rows = await self.store.fetch(session.bare_jid, self.batch)
            if not rows:
                return
            for _id, text in rows:
                session.deliver(fromstring_client(text))
            await self.store.delete(session.bare_jid, [i for i, _ in rows])
            self.ctx.broadcast("offline/taken", session.bare_jid)  # other workers' mailbox counts are stale
            if len(rows) < self.batch or session.closed:
                return
