"""XEP-0012 last activity: when each user last logged out, and the status text they left with."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import sessionmaker, writer
from ..tables import LastActivity


class LastActivityStore(Protocol):
    async def get(self, owner: str) -> tuple[datetime, str] | None: ...
    async def set(self, owner: str, when: datetime, status: str) -> None: ...
    async def set_many(self, rows: list[tuple[str, datetime, str]]) -> None: ...
    async def recent(self, limit: int) -> list[tuple[str, datetime, str]]: ...
    async def delete(self, owner: str) -> bool: ...


class SQLLastActivityStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._writer = writer(engine)
        self._sm = sessionmaker(engine)
        self._upsert = _upsert(engine)

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
        await self.set_many([(owner, when, status)])

    async def set_many(self, rows: list[tuple[str, datetime, str]]) -> None:
        """Upsert many logout times in one transaction, with one statement built once (Core, executemany).

        The last row of an owner wins (PostgreSQL refuses one multi-row upsert that touches a row twice)."""
        if not rows:
            return
        latest = {o: (w, st) for o, w, st in rows}
        params = [{"owner": o, "timestamp": w, "status": st} for o, (w, st) in latest.items()]
        async with self._writer.begin() as conn:
            await conn.execute(self._upsert, params)

    async def delete(self, owner: str) -> bool:
        async with self._sm.begin() as s:
            r = await s.execute(delete(LastActivity).where(LastActivity.owner == owner))
            return bool(r.rowcount)


def _upsert(engine: AsyncEngine) -> Any:
    """``INSERT ... ON CONFLICT (owner) DO UPDATE`` with bound parameters (SQLite and PostgreSQL)."""
    dialect: Any = sqlite if engine.dialect.name == "sqlite" else postgresql
    ins = dialect.insert(LastActivity.__table__)
    return ins.on_conflict_do_update(
        index_elements=["owner"], set_={"timestamp": ins.excluded.timestamp, "status": ins.excluded.status}
    )


def _utc(when: datetime) -> datetime:
    """SQLite hands back naive datetimes; we only ever store UTC."""
    return when if when.tzinfo else when.replace(tzinfo=UTC)
