"""Ad-free time ("premium", like QQ VIP) bought with coins as a two-phase wallet transfer.

``buy``: hold the price (phase one, when the user asks), record the period as ``pending``, then post the
hold (phase two, when the period starts) and mark the period ``active``; if anything in between fails the
hold is voided and the period ``voided``, so the user pays only for an active period.

The idempotency key of the charge is derived from what makes a period unique — the user and the period's
start (``ads-premium:USER:START``) — not from the request, so a retried activation (``recover`` after a
crash, or a repeat of the same purchase) finds the same hold and never charges twice.  A new period starts
when the current one ends, so buying twice in a row extends the time instead of colliding.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError

from .engine import LedgerLike
from .store import AdsStore, utc

log = logging.getLogger("xmppim.plugin.ads")


@dataclass(frozen=True)
class Period:
    user: str
    starts_at: datetime
    ends_at: datetime
    price: int
    replayed: bool = False


class PremiumError(Exception):
    pass


def idem_key(user: str, start: datetime) -> str:
    return f"ads-premium:{user}:{utc(start).isoformat()}"


class Premium:
    def __init__(
        self,
        ledger: LedgerLike,
        store: AdsStore,
        *,
        price_per_day: int,
        max_days: int,
        clock: Callable[[], datetime],
    ) -> None:
        self.ledger = ledger
        self.store = store
        self.price_per_day = price_per_day
        self.max_days = max_days
        self.clock = clock
        self.until: dict[str, datetime] = {}
        """Cache: end of each user's ad-free time (filled at login and on purchase)."""
        self._locks: dict[str, asyncio.Lock] = {}

    def now(self) -> datetime:
        return utc(self.clock())

    def is_premium(self, user: str) -> bool:
        end = self.until.get(user)
        return end is not None and end > self.now()

    async def refresh(self, user: str) -> datetime | None:
        end = await self.store.premium_until(user, self.now())
        if end is None:
            self.until.pop(user, None)
        else:
            self.until[user] = end
        return end

    async def buy(self, user: str, days: int) -> Period:
        """Buy ``days`` of ad-free time starting now or when the current period ends."""
        if not 1 <= days <= self.max_days:
            raise PremiumError(f"Choose between 1 and {self.max_days} days.")
        lock = self._locks.setdefault(user, asyncio.Lock())
        async with lock:
            now = self.now().replace(microsecond=0)
            current = await self.store.premium_until(user, now)
            start = current if current is not None else now
            return await self._activate(user, start, start + timedelta(days=days), days * self.price_per_day)

    async def _activate(self, user: str, start: datetime, end: datetime, price: int) -> Period:
        key = idem_key(user, start)
        hold = await self.ledger.hold(
            user, price, payee="revenue", memo=f"ad-free until {end:%Y-%m-%d %H:%M} UTC",
            idem_key=f"{key}:hold", initiator=user, timeout_s=600,
        )
        row = await self.store.premium_row(user, start)
        if row is not None and str(row.status) == "active":
            self.until[user] = max(self.until.get(user, end), utc(row.ends_at))
            return Period(user, utc(row.starts_at), utc(row.ends_at), int(row.price), replayed=True)
        pid: int | None = None if row is None else int(row.id)
        try:
            if pid is None:
                try:
                    pid = await self.store.insert_premium(
                        {"user": user, "starts_at": start, "ends_at": end, "price": price,
                         "hold_id": int(hold.id), "status": "pending", "created_at": self.now()}
                    )
                except IntegrityError:
                    raise PremiumError("A purchase for this period is already being processed.") from None
            # Phase two: the period starts now (or right after the current one, already paid for).
            await self.ledger.post(int(hold.id), idem_key=f"{key}:post", memo="ad-free period starts")
            await self.store.set_premium_status(pid, "active")
        except Exception:
            try:
                h = await self.ledger.get_hold(int(hold.id))
                if h.status == "pending":
                    await self.ledger.void(int(hold.id), memo="ad-free activation failed")
                if pid is not None and h.status != "posted":
                    await self.store.set_premium_status(pid, "voided")
            except Exception:
                log.exception("could not void premium hold %s", hold.id)
            raise
        self.until[user] = max(self.until.get(user, end), end)
        return Period(user, start, end, price, replayed=bool(getattr(hold, "replayed", False)))

    async def recover(self) -> int:
        """Finish activations a crash interrupted (same keys: no double charge). Returns how many."""
        done = 0
        for row in await self.store.pending_premiums():
            try:
                await self._activate(str(row.user), utc(row.starts_at), utc(row.ends_at), int(row.price))
                done += 1
            except Exception:
                log.warning("premium period %s of %s could not be activated", row.id, row.user)
                await self.store.set_premium_status(int(row.id), "voided")
        return done

    def status_text(self, user: str) -> str:
        end = self.until.get(user)
        if end is None or end <= self.now():
            return "No ad-free time."
        return f"Ad-free until {end:%Y-%m-%d %H:%M} UTC."


__all__ = ["Premium", "PremiumError", "Period", "idem_key", "Any"]
