"""XEP-0012 last activity: when each user last logged out, and the status text they left with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import sessionmaker, writer
from ..tables import LastActivity
from .private import upsert


class LastActivityStore(Protocol):
    async def get(self, owner: str) -> tuple[datetime, str] | None: ...
    async def set(self, owner: str, when: datetime, status: str) -> None: ...
    async def recent(self, limit: int) -> list[tuple[str, datetime, str]]: ...
    async def delete(self, owner: str) -> bool: ...


class SQLLastActivityStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._sm = sessionmaker(engine)

    async def get(self, owner: str) -> tuple[datetime, str] | None:
        async with self._sm() as s:
            q = select(LastActivity.timestamp, LastActivity.status).where(LastActivity.owner == owner)
            row = (await s.execute(q)).first()
        if row is None:
            return None
        when, status = row
        return _utc(when), status or ""

    async def recent(self, limit: int) -> list[tuple[str, datetime, str]]:
        """The ``limit`` most recent logouts, newest last (to warm an LRU cache in order)."""
        if limit <= 0:
            return []
        q = (
            select(LastActivity.owner, LastActivity.timestamp, LastActivity.status)
            .order_by(LastActivity.timestamp.desc())
            .limit(limit)
        )
        async with self._sm() as s:
            rows = (await s.execute(q)).all()
        return [(o, _utc(w), st or "") for o, w, st in reversed(rows)]

    async def set(self, owner: str, when: datetime, status: str) -> None:
        stmt = upsert(
            self._engine,
            LastActivity.__table__,
            ["owner"],
            {"owner": owner, "timestamp": when, "status": status},
            ["timestamp", "status"],
        )
        async with self._writer.begin() as conn:  # Core, one statement: this runs at every logout
            await conn.execute(stmt)

    async def delete(self, owner: str) -> bool:
        async with self._sm.begin() as s:
            r = await s.execute(delete(LastActivity).where(LastActivity.owner == owner))
            return bool(r.rowcount)


def _utc(when: datetime) -> datetime:
    """SQLite hands back naive datetimes; we only ever store UTC."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)
