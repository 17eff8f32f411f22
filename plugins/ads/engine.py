"""Campaign selection, frequency caps, budget reservation and batched billing — no XMPP in here.

Money rules (issue 6 "Billing"):

* A campaign's whole budget is held in escrow when it is created (``Ledger.hold``: payer the advertiser,
  payee ``revenue``, deadline one day after the campaign's end).
* Before an ad is sent, its impression price is *reserved* in memory (``Campaign.reserved``); nothing is
  sent that the budget cannot pay for.  When the ad stanza is actually delivered the reservation becomes a
  pending impression; when delivery fails it is released.
* Pending impressions and clicks are posted to the hold in batches (``post(final=False)``, idempotency key
  ``ads:c<ID>:b<N>``); when the campaign ends (schedule over, budget spent, stopped) the last batch is
  posted with ``final=True`` — or the hold is voided when nothing is pending — so the rest goes back to the
  advertiser.  Hence ``captured = impressions × price_impression + billed clicks × price_click`` and
  ``captured + refunded = budget``.
* A campaign is *exhausted* as soon as what is left cannot pay for one more impression.

Frequency caps are sliding windows (one hour, one day) per user and campaign (the campaign's caps) and per
user over all campaigns (the operator's caps); an ad in flight counts against them.

Durability (table ``ads_impressions``): every delivered impression and every recorded click is written as a
row (``posted`` false) as soon as it happens, in a background task the next batch post waits for.  A batch
post is three steps, so that a crash at any point neither loses nor double-bills an event:

1. *mark*: the batch's rows get ``batch = N`` (and the post's ``final`` flag) in one transaction;
2. *post*: ``Ledger.post(hold, sum of their prices, idem_key="ads:c<ID>:b<N>")``;
3. *complete*: the rows get ``posted`` and the campaign row its counters (``batches = N``), atomically.

A crash before 1 leaves rows without a batch: they are billed in a new batch after the restart.  A crash
between 1 and 3 leaves rows with ``batch = N`` and ``posted`` false: after the restart exactly those rows are
posted again with the same key, amount, ``final`` flag and memo — the ledger replays the first post if it
had been committed (same key and same request → no second move) and performs it otherwise.  So each event
is billed at most once and, while its hold can still be posted, exactly once (a crash while an event's
row is still being written — milliseconds after delivery — loses that one event: neither billed nor
capped).  Events whose hold closed or expired before they could be posted are settled without a charge
(logged).

On start (:meth:`AdEngine.recover`) the caps' windows are rebuilt from the impressions of the last 24 hours
and unposted rows are billed as above (campaigns that already ended get their final post and release).
Charged clicks keep their token's nonce, so the plugin still charges each click token once after a restart
(clicks that were not recorded — no budget left — are not remembered).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .store import AdsStore, dump_list, load_list, utc

log = logging.getLogger("xmppim.plugin.ads")

HOUR = 3600.0
DAY = 86400.0
LIVE = ("active", "paused")
"""Statuses that still hold escrow (the others are final)."""


class LedgerLike(Protocol):
    """The part of the wallet's ``Ledger`` the ads plugin uses."""

    async def hold(
        self,
        jid: str,
        amount: int,
        *,
        payee: str = ...,
        memo: str = ...,
        idem_key: str | None = ...,
        initiator: str | None = ...,
        timeout_s: float | None = ...,
        currency: str | None = ...,
    ) -> Any: ...

    async def post(
        self, hold_id: int, amount: int | None = ..., *, final: bool = ..., memo: str = ..., idem_key: str | None = ...
    ) -> Any: ...

    async def void(self, hold_id: int, *, memo: str = ...) -> Any: ...

    async def get_hold(self, hold_id: int) -> Any: ...


@dataclass(frozen=True)
class Targeting:
    """Empty tuples mean "everyone"; several criteria must all match."""

    domains: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    """Matches users who opted into at least one of these topics."""
    locales: tuple[str, ...] = ()
    """Language tags (``en``, ``de-AT``); ``en`` matches ``en-GB`` too (RFC 4647 basic filtering)."""

    def matches(self, viewer: Viewer) -> bool:
        if self.domains and viewer.domain not in self.domains:
            return False
        if self.topics and not (set(self.topics) & viewer.topics):
            return False
        if self.locales:
            lang = viewer.lang.lower()
            if not any(lang == loc.lower() or lang.startswith(loc.lower() + "-") for loc in self.locales):
                return False
        return True


@dataclass(frozen=True)
class Viewer:
    """Who would see an ad: the user's bare JID, domain, stream language and opted-in topics."""

    jid: str
    domain: str
    lang: str = ""
    topics: frozenset[str] = frozenset()
    topic_counts: Mapping[str, int] = field(default_factory=dict)
    """Today's mentions per opted-in topic (counts only, never text); ranks topic campaigns."""


@dataclass
class CampaignSpec:
    """What an advertiser asks for (validated by :meth:`validate`)."""

    text: str
    link: str
    budget: int
    price_impression: int
    price_click: int = 0
    cap_hour: int = 2
    cap_day: int = 10
    image_url: str = ""
    targeting: Targeting = Targeting()
    starts_at: datetime | None = None
    ends_at: datetime | None = None

    def validate(self, max_text: int, max_budget: int) -> str | None:
        """An error text, or None when the spec is acceptable."""
        if not self.text.strip():
            return "The ad text is empty."
        if len(self.text) > max_text:
            return f"The ad text is longer than {max_text} characters."
        for url in (self.link, self.image_url):
            if url and not (url.startswith("https://") or url.startswith("http://")):
                return "Links must start with http:// or https://."
        if not self.link:
            return "A link is required."
        if self.price_impression < 1:
            return "The price per impression must be at least 1 coin."
        if self.price_click < 0:
            return "The price per click cannot be negative."
        if self.budget < self.price_impression:
            return "The budget must pay for at least one impression."
        if self.budget > max_budget:
            return f"The budget may be at most {max_budget} coins."
        if self.cap_hour < 1 or self.cap_day < 1:
            return "Frequency caps must be at least 1."
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            return "The campaign must end after it starts."
        return None


@dataclass(frozen=True)
class Event:
    """One stored impression (``kind='imp'``) or click (``kind='click'``) row."""

    id: int
    kind: str
    price: int


@dataclass(frozen=True)
class OpenBatch:
    number: int
    events: tuple[Event, ...]
    final: bool


@dataclass
class Campaign:
    id: int
    advertiser: str
    text: str
    link: str
    image_url: str
    targeting: Targeting
    starts_at: datetime
    ends_at: datetime
    budget: int
    price_impression: int
    price_click: int
    cap_hour: int
    cap_day: int
    status: str
    hold_id: int | None
    impressions: int = 0
    """Posted to the hold (billed)."""
    clicks: int = 0
    spent: int = 0
    batches: int = 0
    reserved: int = 0
    """Coins reserved for ads in flight (memory only)."""
    pending_impressions: int = 0
    pending_clicks: int = 0
    pending_amount: int = 0
    free_clicks: int = 0
    """Clicks the remaining budget could not pay for (redirected, not charged)."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    recorded: list[Event] = field(default_factory=list, repr=False)
    """Stored, not yet posted events (the next batch)."""
    recording: set[asyncio.Task[None]] = field(default_factory=set, repr=False)
    """Writes of events in progress (a batch post waits for them)."""
    open_batch: OpenBatch | None = field(default=None, repr=False)
    """A batch marked in the database whose post has not completed (retried first, same key)."""

    def available(self) -> int:
        return self.budget - self.spent - self.pending_amount - self.reserved

    def running(self, now: datetime) -> bool:
        return self.status == "active" and self.starts_at <= now < self.ends_at

    def stats(self) -> dict[str, Any]:
        imps = self.impressions + self.pending_impressions
        clicks = self.clicks + self.pending_clicks
        return {
            "id": self.id,
            "advertiser": self.advertiser,
            "status": self.status,
            "impressions": imps,
            "clicks": clicks,
            "ctr": round(clicks / imps, 4) if imps else 0.0,
            "spend": self.spent + self.pending_amount,
            "billed": self.spent,
            "budget": self.budget,
            "remaining": self.available(),
            "price_impression": self.price_impression,
            "price_click": self.price_click,
            "starts_at": self.starts_at.isoformat(),
            "ends_at": self.ends_at.isoformat(),
        }


@dataclass
class Policy:
    """Operator caps over all campaigns, and billing cadence."""

    user_cap_hour: int = 4
    user_cap_day: int = 20
    batch_size: int = 20
    max_campaign_days: int = 90
    max_text: int = 280
    max_budget: int = 1_000_000


class Caps:
    """Sliding-window counters of timestamps per key (bounded by the largest cap)."""

    def __init__(self) -> None:
        self._seen: dict[Any, deque[float]] = {}

    def count(self, key: Any, now: float, window: float) -> int:
        q = self._seen.get(key)
        if not q:
            return 0
        while q and q[0] <= now - DAY:
            q.popleft()
        if not q:
            del self._seen[key]
            return 0
        return sum(1 for t in q if t > now - window)

    def add(self, key: Any, now: float) -> None:
        self._seen.setdefault(key, deque()).append(now)

    def remove(self, key: Any, at: float) -> None:
        q = self._seen.get(key)
        if q is not None:
            try:
                q.remove(at)
            except ValueError:
                pass


@dataclass
class Reservation:
    """One ad in flight to one user."""

    id: int
    campaign: Campaign
    user: str
    at: float
    amount: int
    settled: bool = False
    ok: bool = False
    """Delivered (billable)."""


class AdEngine:
    def __init__(
        self,
        ledger: LedgerLike,
        store: AdsStore,
        policy: Policy,
        *,
        clock: Callable[[], datetime],
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.policy = policy
        self.clock = clock
        self.campaigns: dict[int, Campaign] = {}
        self.caps = Caps()
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()

    def now(self) -> datetime:
        return utc(self.clock())

    # ------------------------------------------------------------------ load
    async def load(self) -> None:
        for row in await self.store.load_campaigns():
            if str(row.status) in ("creating", "failed"):
                continue  # never funded (or interrupted before its hold was recorded: that hold expires)
            c = Campaign(
                id=int(row.id),
                advertiser=str(row.advertiser),
                text=str(row.text),
                link=str(row.link),
                image_url=str(row.image_url),
                targeting=Targeting(
                    load_list(str(row.target_domains)),
                    load_list(str(row.target_topics)),
                    load_list(str(row.target_locales)),
                ),
                starts_at=utc(row.starts_at),
                ends_at=utc(row.ends_at),
                budget=int(row.budget),
                price_impression=int(row.price_impression),
                price_click=int(row.price_click),
                cap_hour=int(row.cap_hour),
                cap_day=int(row.cap_day),
                status=str(row.status),
                hold_id=None if row.hold_id is None else int(row.hold_id),
                impressions=int(row.impressions),
                clicks=int(row.clicks),
                spent=int(row.spent),
                batches=int(row.batches),
            )
            self.campaigns[c.id] = c

    # ---------------------------------------------------------------- create
    async def create(self, advertiser: str, spec: CampaignSpec) -> Campaign:
        """Validate, hold the budget in escrow, store the campaign.  Raises ``ValueError`` with a text the
        advertiser can read, or the wallet's ``WalletError`` (e.g. insufficient funds)."""
        err = spec.validate(self.policy.max_text, self.policy.max_budget)
        if err:
            raise ValueError(err)
        now = self.now()
        start = utc(spec.starts_at) if spec.starts_at else now
        longest = now + timedelta(days=self.policy.max_campaign_days)
        end = min(utc(spec.ends_at), longest) if spec.ends_at else longest
        if end <= now:
            raise ValueError("The campaign would end in the past.")
        t = spec.targeting
        values: dict[str, Any] = {
            "advertiser": advertiser,
            "text": spec.text,
            "link": spec.link,
            "image_url": spec.image_url,
            "target_domains": dump_list(t.domains),
            "target_topics": dump_list(t.topics),
            "target_locales": dump_list(t.locales),
            "starts_at": start,
            "ends_at": end,
            "budget": spec.budget,
            "price_impression": spec.price_impression,
            "price_click": spec.price_click,
            "cap_hour": spec.cap_hour,
            "cap_day": spec.cap_day,
            "status": "creating",
            "hold_id": None,
            "impressions": 0,
            "clicks": 0,
            "spent": 0,
            "batches": 0,
            "created_at": now,
            "updated_at": now,
        }
        cid = await self.store.insert_campaign(values)
        try:
            hold = await self.ledger.hold(
                advertiser,
                spec.budget,
                payee="revenue",
                memo=f"ad campaign #{cid} escrow",
                idem_key=f"ads:c{cid}:escrow",
                initiator=advertiser,
                timeout_s=(end - now).total_seconds() + DAY,
            )
        except Exception:
            await self.store.update_campaign(cid, status="failed", updated_at=self.now())
            raise
        await self.store.update_campaign(cid, status="active", hold_id=int(hold.id), updated_at=self.now())
        c = Campaign(
            id=cid,
            advertiser=advertiser,
            text=spec.text,
            link=spec.link,
            image_url=spec.image_url,
            targeting=Targeting(*(tuple(sorted(set(x))) for x in (t.domains, t.topics, t.locales))),
            starts_at=start,
            ends_at=end,
            budget=spec.budget,
            price_impression=spec.price_impression,
            price_click=spec.price_click,
            cap_hour=spec.cap_hour,
            cap_day=spec.cap_day,
            status="active",
            hold_id=int(hold.id),
        )
        self.campaigns[cid] = c
        return c

    # ------------------------------------------------------------- selection
    def choose(self, viewer: Viewer, ts: float) -> Campaign | None:
        """The campaign to show ``viewer`` now, or None (caps, budget, schedule, targeting)."""
        p = self.policy
        if self.caps.count(viewer.jid, ts, HOUR) >= p.user_cap_hour:
            return None
        if self.caps.count(viewer.jid, ts, DAY) >= p.user_cap_day:
            return None
        now = self.now()
        best: tuple[int, int, int] | None = None
        chosen: Campaign | None = None
        for c in self.campaigns.values():
            if not c.running(now) or c.available() < c.price_impression:
                continue
            if not c.targeting.matches(viewer):
                continue
            key = (viewer.jid, c.id)
            if self.caps.count(key, ts, HOUR) >= c.cap_hour or self.caps.count(key, ts, DAY) >= c.cap_day:
                continue
            relevance = sum(viewer.topic_counts.get(tp, 0) for tp in c.targeting.topics)
            shown_today = self.caps.count(key, ts, DAY)
            # Most relevant first, then the one this user saw least today, then the highest bid.
            rank = (relevance, -shown_today, c.price_impression)
            if best is None or rank > best:
                best, chosen = rank, c
        return chosen

    def reserve(self, viewer: Viewer) -> Reservation | None:
        """Choose a campaign and reserve one impression's price before anything is sent."""
        ts = self.now().timestamp()
        c = self.choose(viewer, ts)
        if c is None:
            return None
        c.reserved += c.price_impression
        self.caps.add(viewer.jid, ts)
        self.caps.add((viewer.jid, c.id), ts)
        return Reservation(next(self._ids), c, viewer.jid, ts, c.price_impression)

    def delivered(self, r: Reservation) -> None:
        """The ad stanza reached the user: the reservation becomes a billable impression."""
        if r.settled:
            return
        r.settled = r.ok = True
        c = r.campaign
        c.reserved -= r.amount
        c.pending_impressions += 1
        c.pending_amount += r.amount
        self._record(c, r.user, "imp", r.at, r.amount)
        if c.pending_impressions >= self.policy.batch_size:
            self._background(self.flush(c))
        self._check_exhausted(c)

    def failed(self, r: Reservation) -> None:
        """Nothing was delivered: free the reservation and the cap slots."""
        if r.settled:
            return
        r.settled = True
        c = r.campaign
        c.reserved -= r.amount
        self.caps.remove(r.user, r.at)
        self.caps.remove((r.user, c.id), r.at)
        self._check_exhausted(c)

    def click(self, cid: int, nonce: str | None = None) -> tuple[Campaign | None, bool]:
        """Record a click (``nonce``: its token's, stored with it); returns the campaign and whether it was
        charged (budget left for it)."""
        c = self.campaigns.get(cid)
        if c is None:
            return None, False
        ts = self.now().timestamp()
        if c.price_click == 0:
            c.pending_clicks += 1
            self._record(c, "", "click", ts, 0, nonce)
            return c, False
        if c.status in LIVE and c.available() >= c.price_click:
            c.pending_clicks += 1
            c.pending_amount += c.price_click
            self._record(c, "", "click", ts, c.price_click, nonce)
            self._check_exhausted(c)
            return c, True
        c.free_clicks += 1
        return c, False

    def _check_exhausted(self, c: Campaign) -> None:
        if c.status == "active" and c.reserved == 0 and c.available() < c.price_impression:
            c.status = "exhausted"
            self._background(self.finish(c, "exhausted"))

    # ------------------------------------------------------------ durability
    def _record(self, c: Campaign, user: str, kind: str, ts: float, price: int, nonce: str | None = None) -> None:
        """Store one event in the background (``delivered``/``click`` are synchronous hook paths)."""
        task = asyncio.get_running_loop().create_task(self._write_event(c, user, kind, ts, price, nonce))
        c.recording.add(task)
        task.add_done_callback(c.recording.discard)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    async def _write_event(self, c: Campaign, user: str, kind: str, ts: float, price: int, nonce: str | None) -> None:
        try:
            rid = await self.store.record_event(c.id, user, kind, datetime.fromtimestamp(ts, UTC), price, nonce)
        except Exception:
            # Not stored means not billable: drop it from the pending counters so they match the rows.
            log.exception("could not store an ads %s of campaign %s; it will not be charged", kind, c.id)
            c.pending_amount -= price
            if kind == "imp":
                c.pending_impressions -= 1
            else:
                c.pending_clicks -= 1
            return
        c.recorded.append(Event(rid, kind, price))

    async def _settle_records(self, c: Campaign) -> None:
        while c.recording:
            await asyncio.gather(*list(c.recording), return_exceptions=True)

    async def recover(self) -> None:
        """After :meth:`load`: rebuild the caps' windows and bill what was delivered but not posted."""
        now = self.now()
        for row in await self.store.impressions_since(now - timedelta(seconds=DAY)):
            ts = utc(row.at).timestamp()
            self.caps.add(str(row.user), ts)
            self.caps.add((str(row.user), int(row.campaign_id)), ts)
        groups: dict[int, list[Any]] = {}
        for row in await self.store.unposted_events():
            groups.setdefault(int(row.campaign_id), []).append(row)
        for cid, rows in groups.items():
            c = self.campaigns.get(cid)
            if c is None or c.hold_id is None:
                log.warning("ads: %d unposted events of unknown campaign %s settled unbilled", len(rows), cid)
                await self.store.settle_unbillable([int(r.id) for r in rows])
                continue
            marked: dict[int, list[Any]] = {}
            for r in rows:
                ev = Event(int(r.id), str(r.kind), int(r.price))
                c.pending_amount += ev.price
                if ev.kind == "imp":
                    c.pending_impressions += 1
                else:
                    c.pending_clicks += 1
                if r.batch is None:
                    c.recorded.append(ev)
                else:
                    marked.setdefault(int(r.batch), []).append(r)
            try:
                await self._recover_campaign(c, marked, now)
            except Exception:
                # The events stay pending in memory (and unposted in the table): ``tick`` retries them.
                log.exception("ads: could not bill the stored events of campaign %s yet", cid)

    async def _recover_campaign(self, c: Campaign, marked: dict[int, list[Any]], now: datetime) -> None:
        assert c.hold_id is not None
        hold = await self.ledger.get_hold(c.hold_id)
        open_ = hold.status == "pending" and utc(hold.expires_at) > now
        async with c.lock:
            for number in sorted(marked):  # one at most: batches are posted one after the other
                brows = marked[number]
                evs = tuple(Event(int(r.id), str(r.kind), int(r.price)) for r in brows)
                c.open_batch = OpenBatch(number, evs, bool(brows[0].final))
                c.recorded.extend(evs)
                await self._post_batch(c, c.open_batch, bill=open_)
        if open_ and c.status not in LIVE:
            await self.finish(c, c.status)  # ended before the crash: final post, release the rest
        else:
            async with c.lock:
                await self._flush_locked(c, final=False, bill=open_)

    # ---------------------------------------------------------------- billing
    def _background(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ads billing task failed", exc_info=task.exception())

    async def drain(self) -> None:
        """Wait for background billing (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def flush(self, c: Campaign, *, final: bool = False) -> None:
        """Post pending impressions/clicks to the campaign's hold (one batch, idempotent key)."""
        async with c.lock:
            await self._flush_locked(c, final=final)

    async def _flush_locked(self, c: Campaign, *, final: bool, bill: bool = True) -> None:
        """Post the stored events as one batch (mark → post → complete, see the module docstring).

        ``bill=False`` (the hold is closed): the post is still tried — a replay of a committed post succeeds
        — and otherwise the events are settled without a charge."""
        await self._settle_records(c)
        if c.hold_id is None:
            return
        if c.open_batch is not None:
            await self._post_batch(c, c.open_batch, bill=bill)
        events = tuple(c.recorded)
        if not events:
            return
        batch = OpenBatch(c.batches + 1, events, final)
        await self.store.assign_batch([e.id for e in events], batch.number, final)
        c.open_batch = batch
        await self._post_batch(c, batch, bill=bill)

    async def _post_batch(self, c: Campaign, batch: OpenBatch, *, bill: bool) -> None:
        """Steps 2 and 3 of a batch whose rows are already marked (also the retry after a crash)."""
        assert c.hold_id is not None
        amount = sum(e.price for e in batch.events)
        imps = sum(1 for e in batch.events if e.kind == "imp")
        clicks = len(batch.events) - imps
        charged = True
        if amount > 0:
            try:
                await self.ledger.post(
                    c.hold_id,
                    amount,
                    final=batch.final,
                    memo=f"ad campaign #{c.id}: {imps} impressions, {clicks} clicks",
                    idem_key=f"ads:c{c.id}:b{batch.number}",
                )
            except Exception:
                if bill:
                    raise
                log.warning(
                    "ads: hold of campaign %s is closed; batch %d (%d coins) not charged",
                    c.id,
                    batch.number,
                    amount,
                    exc_info=True,
                )
                charged = False
        c.pending_amount -= amount
        c.pending_impressions -= imps
        c.pending_clicks -= clicks
        if charged:
            c.spent += amount
            c.impressions += imps
            c.clicks += clicks
        c.batches = max(c.batches, batch.number)
        done = {e.id for e in batch.events}
        c.recorded = [e for e in c.recorded if e.id not in done]
        c.open_batch = None
        await self.store.complete_batch(
            c.id,
            batch.number,
            spent=c.spent,
            impressions=c.impressions,
            clicks=c.clicks,
            batches=c.batches,
            updated_at=self.now(),
        )

    async def finish(self, c: Campaign, status: str) -> None:
        """End a campaign for good: bill what is pending, release the rest of the escrow."""
        c.status = status
        for _ in range(500):  # ads in flight settle within one routing pass; bounded wait anyway
            if c.reserved == 0:
                break
            await asyncio.sleep(0.01)
        async with c.lock:
            hold = await self.ledger.get_hold(c.hold_id) if c.hold_id is not None else None
            still_open = hold is not None and hold.status == "pending"
            # A final post with something to bill closes the hold; otherwise it is voided below.
            await self._flush_locked(c, final=still_open, bill=still_open)
            if still_open and c.hold_id is not None:
                hold = await self.ledger.get_hold(c.hold_id)
                if hold.status == "pending":
                    await self.ledger.void(c.hold_id, memo=f"ad campaign #{c.id} {status}")
            await self.store.update_campaign(c.id, status=status, updated_at=self.now())

    async def set_status(self, c: Campaign, status: str) -> None:
        """Pause/resume (``paused``/``active``) or stop (``stopped``, final)."""
        if c.status not in LIVE:
            raise ValueError(f"campaign #{c.id} is {c.status}")
        if status == "stopped":
            await self.finish(c, "stopped")
            return
        c.status = status
        await self.store.update_campaign(c.id, status=status, updated_at=self.now())
        if status == "active":
            self._check_exhausted(c)

    async def tick(self) -> None:
        """Periodic: end campaigns whose schedule is over, post pending batches."""
        now = self.now()
        for c in list(self.campaigns.values()):
            if c.status in LIVE and now >= c.ends_at:
                await self.finish(c, "ended")
            elif c.pending_amount or c.pending_impressions or c.pending_clicks or c.recorded or c.open_batch:
                await self.flush(c)
