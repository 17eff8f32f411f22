"""Database access for the ads tables (async SQLAlchemy Core, SQLite or PostgreSQL)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from .tables import campaigns, prefs, premium


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
