"""Database access for the ads tables (async SQLAlchemy Core, SQLite or PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from .tables import campaigns, impressions, prefs, premium


def utc(dt: datetime) -> datetime:
    """SQLite hands timestamps back naive; they were written in UTC."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def dump_list(items: tuple[str, ...] | list[str]) -> str:
    return json.dumps(sorted(set(items)))


def load_list(text: str) -> tuple[str, ...]:
    try:
        v = json.loads(text or "[]")
    except ValueError:
        return ()
    return tuple(str(x) for x in v) if isinstance(v, list) else ()


def _chunks(ids: list[int], size: int = 500) -> list[list[int]]:
    """Keep ``IN (...)`` lists below SQLite's bound-parameter limit."""
    return [ids[i : i + size] for i in range(0, len(ids), size)]


class AdsStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # ------------------------------------------------------------ campaigns
    async def insert_campaign(self, values: dict[str, Any]) -> int:
        async with self.engine.begin() as conn:
            res = await conn.execute(insert(campaigns).values(**values).returning(campaigns.c.id))
            return int(res.scalar_one())

    async def update_campaign(self, cid: int, **values: Any) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(campaigns).where(campaigns.c.id == cid).values(**values))

    async def load_campaigns(self) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(select(campaigns).order_by(campaigns.c.id))).all())

    # ---------------------------------------------------------- impressions
    async def record_event(
        self, cid: int, user: str, kind: str, at: datetime, price: int, nonce: str | None = None
    ) -> int:
        """Store one delivered impression (``kind='imp'``) or click (``kind='click'``), not yet posted."""
        async with self.engine.begin() as conn:
            res = await conn.execute(
                insert(impressions)
                .values(
                    campaign_id=cid,
                    user=user,
                    kind=kind,
                    at=at,
                    price=price,
                    batch=None,
                    final=False,
                    posted=False,
                    nonce=nonce,
                )
                .returning(impressions.c.id)
            )
            return int(res.scalar_one())

    async def assign_batch(self, ids: list[int], batch: int, final: bool) -> None:
        """Step 1 of a post: the rows of batch ``batch`` are fixed before the wallet sees its key."""
        async with self.engine.begin() as conn:
            for chunk in _chunks(ids):
                await conn.execute(
                    update(impressions).where(impressions.c.id.in_(chunk)).values(batch=batch, final=final)
                )

    async def complete_batch(self, cid: int, batch: int, **campaign_values: Any) -> None:
        """Step 3 of a post (after the wallet accepted it): rows posted and campaign counters, atomically."""
        async with self.engine.begin() as conn:
            await conn.execute(
                update(impressions)
                .where(impressions.c.campaign_id == cid, impressions.c.batch == batch)
                .values(posted=True)
            )
            if campaign_values:
                await conn.execute(update(campaigns).where(campaigns.c.id == cid).values(**campaign_values))

    async def settle_unbillable(self, ids: list[int]) -> None:
        """Rows whose hold closed before they could be posted: settled without a charge."""
        async with self.engine.begin() as conn:
            for chunk in _chunks(ids):
                await conn.execute(update(impressions).where(impressions.c.id.in_(chunk)).values(posted=True))

    async def unposted_events(self) -> list[Any]:
        async with self.engine.connect() as conn:
            q = select(impressions).where(impressions.c.posted.is_(False)).order_by(impressions.c.id)
            return list((await conn.execute(q)).all())

    async def impressions_since(self, since: datetime) -> list[Any]:
        """Impressions delivered after ``since`` (the caps' windows), oldest first."""
        async with self.engine.connect() as conn:
            q = (
                select(impressions.c.campaign_id, impressions.c.user, impressions.c.at)
                .where(impressions.c.kind == "imp", impressions.c.at > since)
                .order_by(impressions.c.at, impressions.c.id)
            )
            return list((await conn.execute(q)).all())

    async def click_nonces_since(self, since: datetime) -> list[Any]:
        """``(nonce, at)`` of clicks recorded after ``since`` (their tokens may still be valid)."""
        async with self.engine.connect() as conn:
            q = select(impressions.c.nonce, impressions.c.at).where(
                impressions.c.kind == "click", impressions.c.at > since, impressions.c.nonce.is_not(None)
            )
            return list((await conn.execute(q)).all())

    # ---------------------------------------------------------------- prefs
    async def get_prefs(self, user: str) -> tuple[bool, tuple[str, ...]]:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(prefs).where(prefs.c.user == user))).first()
        if row is None:
            return False, ()
        return bool(row.opt_out), load_list(str(row.topics))

    async def set_prefs(self, user: str, opt_out: bool, topics: tuple[str, ...], now: datetime) -> None:
        async with self.engine.begin() as conn:
            res = await conn.execute(
                update(prefs)
                .where(prefs.c.user == user)
                .values(opt_out=opt_out, topics=dump_list(topics), updated_at=now)
            )
            if res.rowcount == 0:
                await conn.execute(
                    insert(prefs).values(user=user, opt_out=opt_out, topics=dump_list(topics), updated_at=now)
                )

    # -------------------------------------------------------------- premium
    async def premium_until(self, user: str, now: datetime) -> datetime | None:
        """End of the user's latest active ad-free period, if it is still running."""
        async with self.engine.connect() as conn:
            v = (
                await conn.execute(
                    select(func.max(premium.c.ends_at)).where(premium.c.user == user, premium.c.status == "active")
                )
            ).scalar()
        if v is None:
            return None
        end = utc(v)
        return end if end > now else None

    async def premium_row(self, user: str, start: datetime) -> Any | None:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(select(premium).where(premium.c.user == user, premium.c.starts_at == start))
            ).first()

    async def insert_premium(self, values: dict[str, Any]) -> int:
        async with self.engine.begin() as conn:
            res = await conn.execute(insert(premium).values(**values).returning(premium.c.id))
            return int(res.scalar_one())

    async def set_premium_status(self, pid: int, status: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(premium).where(premium.c.id == pid).values(status=status))

    async def pending_premiums(self) -> list[Any]:
        async with self.engine.connect() as conn:
            return list((await conn.execute(select(premium).where(premium.c.status == "pending"))).all())
