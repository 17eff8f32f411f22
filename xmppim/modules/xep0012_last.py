"""XEP-0012 Last Activity: server uptime, and how long ago an offline user logged out.

* To the server (a bare domain): the seconds since the server started (§5), no text.
* To a user's bare JID (§3), answered by the server on the user's behalf. Only entities allowed to see the
  user's presence get an answer (§3.1, §8: anything else would be a presence leak): the user themself, or a
  contact whose item on the user's roster has subscription 'from' or 'both' (asked of the ``roster``
  service; without one, anyone). Others get ``forbidden``. A user with a connected resource is reported
  with ``seconds='0'`` (§3.1); otherwise the seconds since their last logout and the status text of the
  last unavailable presence they sent (§3.1); an account with no recorded logout gets ``item-not-found``.
* To a full JID (§4): the IQ is delivered to that resource only if the requester may see the user's
  presence, else ``forbidden`` (§4: the server MUST NOT deliver it).

The logout time is stored when a user's *last* session closes (``session/closed``), with the status of the
last ``unavailable`` presence that session sent. Recent logouts are also kept in memory (bounded) for the
``last`` service's :meth:`LastActivityModule.cached_logout_stamp`, which the presence module uses to stamp
probe answers for offline contacts (XEP-0203).

Logouts are written behind, in batches: a logout waits in memory up to ``write_delay`` seconds (default 0.5)
and then goes to the database in one transaction with every other logout of that window. One committed
write per logout was the largest part of a login's server CPU in the issue-12 benchmark (SQLAlchemy's async
layer and ~10 hops to aiosqlite's thread per write): batching took a login without TLS from 4.35 to 1.9 ms
of server CPU, the rest of the write now costs a few µs per logout. Nothing observable
changes in this process: queries are answered from the cache or the pending batch first. What a crash can
lose is at most the last ``write_delay`` seconds of logout times (last activity is informational, XEP-0012
§3); a clean shutdown flushes the batch in :meth:`LastActivityModule.stop`. ``write_delay = 0`` writes each
logout at once, as before.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element

from .. import jid as jidlib
from ..plugins.api import PRIORITY_EARLY, PRIORITY_FIRST, Plugin, StanzaEvent, Xep, error_reply, iq_result
from ..stanza import STATUS
from ..storage.repositories.last import SQLLastActivityStore

NS = "jabber:iq:last"
QUERY = f"{{{NS}}}query"
STATUS_KEY = "last.status"
CHECKED = "last.checked"
FLUSH_AT = 1000
"""A pending batch this large is written without waiting for the rest of ``write_delay``."""

log = logging.getLogger("xmppim.last")


@dataclass
class LastConfig:
    cache_size: int = 10000
    """How many recent logouts to keep in memory (also preloaded, newest first, at start)."""
    write_delay: float = 0.5
    """Seconds a logout time waits to be written with others in one transaction (0: write each at once)."""


class LastActivityModule(Plugin):
    name = "last"
    builtin = True
    xeps = (Xep(12, "2.0"),)
    Config = LastConfig
    description = "XEP-0012 last activity (server uptime, users' last logout)"

    async def start(self) -> None:
        cfg: LastConfig = self.ctx.config
        self.store = SQLLastActivityStore(self.ctx.db)
        self.started = time.monotonic()
        self.cache_size = max(0, cfg.cache_size)
        self.cache: OrderedDict[str, tuple[dt.datetime, str]] = OrderedDict()
        self.write_delay = max(0.0, cfg.write_delay)
        self.pending: dict[str, tuple[dt.datetime, str]] = {}
        """Logouts not written yet (write-behind, see the module docstring)."""
        self._timer: asyncio.TimerHandle | None = None
        self._flushing: asyncio.Task[None] | None = None
        self._stopped = False
        for owner, when, status in await self.store.recent(self.cache_size):
            self.cache[owner] = (when, status)
        self.ctx.add_feature(NS)
        self.ctx.iq_handler("get", NS, self.on_get)
        self.ctx.hook("iq/full", self.on_full, PRIORITY_EARLY)
        self.ctx.hook("presence/self", self.note_status, PRIORITY_FIRST)
        self.ctx.hook("session/closed", self.on_closed)
        self.ctx.hook("user/deleted", self.on_user_deleted)
        self.ctx.hook("cluster/last/logout", self.on_logout_elsewhere)
        self.ctx.provide("last", self)

    async def stop(self) -> None:
        """Write every pending logout before the database goes away; later ones are written at once."""
        self._stopped = True
        await self.flush()

    # ------------------------------------------------------------ service
    def cached_logout_stamp(self, bare_jid: str) -> str:
        """XEP-0082 UTC stamp of ``bare_jid``'s last logout if it is in memory, else ''."""
        rec = self.cache.get(bare_jid)
        if rec is None:
            return ""
        return rec[0].astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    async def last_logout(self, bare_jid: str) -> tuple[dt.datetime, str] | None:
        """When ``bare_jid`` last logged out and the status they left, or None if never recorded."""
        rec = self.cache.get(bare_jid) or self.pending.get(bare_jid)
        if rec is None:
            rec = await self.store.get(bare_jid)
            if rec is not None:
                self._remember(bare_jid, rec)
        return rec

    def _remember(self, owner: str, rec: tuple[dt.datetime, str]) -> None:
        if not self.cache_size:
            return
        self.cache[owner] = rec
        self.cache.move_to_end(owner)
        while len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)

    # -------------------------------------------------------- recording
    def note_status(self, ev: StanzaEvent) -> None:
        """Remember the status text of the session's last unavailable presence (§3.1), never consume it."""
        t = ev.stanza.get("type")
        if t == "unavailable":
            ev.origin.meta[STATUS_KEY] = ev.stanza.findtext(STATUS) or ""
        elif t is None:
            ev.origin.meta.pop(STATUS_KEY, None)

    def on_closed(self, session: Any) -> Any:
        if getattr(session, "kind", "") != "c2s" or self.ctx.sessions.is_online(session.bare_jid):
            return None  # another resource is still connected: the user has not logged out
        rec = (dt.datetime.now(dt.UTC).replace(microsecond=0), session.meta.get(STATUS_KEY, ""))
        self._remember(session.bare_jid, rec)
        # Other worker processes stamp probe answers for this user from their own cache.
        self.ctx.broadcast("last/logout", {"owner": session.bare_jid, "when": rec[0].isoformat(), "status": rec[1]})
        if self._stopped or not self.write_delay:
            return self.store.set(session.bare_jid, *rec)
        self.pending[session.bare_jid] = rec
        if len(self.pending) >= FLUSH_AT:
            self._start_flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.write_delay, self._start_flush)
        return None

    def on_logout_elsewhere(self, d: dict[str, str]) -> None:
        self._remember(d["owner"], (dt.datetime.fromisoformat(d["when"]), d["status"]))

    def _start_flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._flushing is None and self.pending:
            self._flushing = self.ctx.spawn(self._write_pending())

    async def _write_pending(self) -> None:
        """Write the pending batch, and whatever arrived meanwhile, one transaction per batch."""
        try:
            while self.pending:
                batch, self.pending = self.pending, {}
                try:
                    await self.store.set_many([(owner, when, status) for owner, (when, status) in batch.items()])
                except Exception:
                    # Same as a failed single write before: logged, the times stay in the cache.
                    log.exception("writing %d logout times failed", len(batch))
        finally:
            self._flushing = None

    async def flush(self) -> None:
        """Write every pending logout now (and wait for a batch already being written)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._flushing is not None or self.pending:
            task = self._flushing
            if task is None:
                await self._write_pending()
            else:
                await asyncio.shield(task)

    async def on_user_deleted(self, bare: str) -> None:
        self.cache.pop(bare, None)
        self.pending.pop(bare, None)
        if self._flushing is not None:
            # A batch being written may hold this user's logout: let it land first, then delete it.
            await asyncio.shield(self._flushing)
        await self.store.delete(bare)

    # ------------------------------------------------------------ queries
    def on_get(self, ev: StanzaEvent) -> Any:
        if not ev.node:
            return self._answer(ev, int(time.monotonic() - self.started))
        owner = ev.bare_to
        requester = _bare(ev.from_)
        if requester == owner:
            return self._answer(ev, 0)  # asking about yourself: you are connected
        return self._bare(ev, owner, requester)

    async def _bare(self, ev: StanzaEvent, owner: str, requester: str) -> Element:
        roster = self._roster()
        if roster is not None:
            if not requester or not await roster.is_subscribed_from(owner, requester):
                return error_reply(ev.stanza, "forbidden")
        elif not await self.ctx.user_exists(owner):
            return error_reply(ev.stanza, "service-unavailable")
        if self.ctx.sessions.is_online(owner):
            return self._answer(ev, 0)
        rec = await self.last_logout(owner)
        if rec is None:
            return error_reply(ev.stanza, "item-not-found", "No logout recorded for this account")
        when, status = rec
        seconds = max(0, int((dt.datetime.now(dt.UTC) - when).total_seconds()))
        return self._answer(ev, seconds, status)

    def _answer(self, ev: StanzaEvent, seconds: int, status: str = "") -> Element:
        q = Element(QUERY, {"seconds": str(seconds)})
        if status:
            q.text = status
        return iq_result(ev.stanza, q)

    def on_full(self, ev: StanzaEvent) -> Any:
        """§4: a last-activity query to a resource is delivered only if the requester may see presence."""
        st = ev.stanza
        if st.get("type") != "get" or len(st) != 1 or st[0].tag != QUERY or ev.meta.get(CHECKED):
            return None
        requester = _bare(ev.from_)
        owner = ev.bare_to
        if not requester or requester == owner or self._roster() is None:
            return None
        return self._full(ev, owner, requester)

    async def _full(self, ev: StanzaEvent, owner: str, requester: str) -> Any:
        roster = self._roster()
        if roster is not None and not await roster.is_subscribed_from(owner, requester):
            r = self.ctx.send(error_reply(ev.stanza, "forbidden"))
        else:
            ev.meta[CHECKED] = True
            r = self.ctx.fire("iq/full", ev)
        if r is not None and hasattr(r, "__await__"):
            await r
        return True

    def _roster(self) -> Any:
        try:
            return self.ctx.service("roster")
        except KeyError:
            return None


def _bare(jid: str) -> str:
    if not jid:
        return ""
    try:
        return jidlib.bare(jid)
    except jidlib.InvalidJID:
        return ""
