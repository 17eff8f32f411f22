"""Offline message storage (XEP-0160): append, count, fetch in order, delete what was delivered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import sessionmaker
from ..group_commit import group_commit
from ..tables import OfflineMessage

_INSERT = insert(OfflineMessage)


class OfflineStore(Protocol):
    async def store(self, owner: str, stanza: str, quota: int) -> bool: ...
    async def fetch(self, owner: str, limit: int) -> list[tuple[int, str]]: ...
    async def delete(self, owner: str, ids: list[int]) -> None: ...
    def forget(self, owner: str) -> None: ...
    async def count(self, owner: str) -> int: ...


class SQLOfflineStore:
    """Counts per owner are cached after the first look (this store is the only writer of the table in its
    process; with several worker processes, :meth:`forget` drops a count another worker made stale), so
    storing a message is one INSERT in one short write transaction."""

    def __init__(self, engine: AsyncEngine, sqlite_synchronous: str = "normal") -> None:
        self._sm = sessionmaker(engine)
        self._writer = group_commit(engine, sqlite_synchronous)
        self._counts: dict[str, int] = {}

    async def store(self, owner: str, stanza: str, quota: int) -> bool:
        """Append unless the user already has ``quota`` messages; True once committed (durable)."""
        n = self._counts.get(owner)
        if n is None:
            n = self._counts[owner] = await self.count(owner)
        if n >= quota:
            return False
        self._counts[owner] = n + 1  # reserved now: concurrent senders can't overshoot the quota
        row = {"owner": owner, "stanza": stanza, "created_at": datetime.now(UTC)}
        try:
            await self._writer.submit(lambda conn: conn.execute(_INSERT, row))
        except BaseException:
            self._counts.pop(owner, None)  # unsure what happened: count again next time
            raise
        return True

    async def fetch(self, owner: str, limit: int) -> list[tuple[int, str]]:
        async with self._sm() as s:
            rows = await s.execute(
                select(OfflineMessage.id, OfflineMessage.stanza)
                .where(OfflineMessage.owner == owner)
                .order_by(OfflineMessage.id)
                .limit(limit)
            )
            return [(int(i), str(t)) for i, t in rows.all()]

    async def delete(self, owner: str, ids: list[int]) -> None:
        if not ids:
            return
        async with self._sm.begin() as s:
            await s.execute(delete(OfflineMessage).where(OfflineMessage.owner == owner, OfflineMessage.id.in_(ids)))
        self._counts.pop(owner, None)

    def forget(self, owner: str) -> None:
        """Another process stored or delivered ``owner``'s messages: count again next time."""
        self._counts.pop(owner, None)

    async def count(self, owner: str) -> int:
        async with self._sm() as s:
            return int(
                (
                    await s.execute(
                        select(func.count()).select_from(OfflineMessage).where(OfflineMessage.owner == owner)
                    )
                ).scalar_one()
            )
