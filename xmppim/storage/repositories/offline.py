"""Offline message storage (XEP-0160): append, count, fetch in order, delete what was delivered."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import sessionmaker
from ..tables import OfflineMessage


class OfflineStore(Protocol):
    async def store(self, owner: str, stanza: str, quota: int) -> bool: ...
    async def fetch(self, owner: str, limit: int) -> list[tuple[int, str]]: ...
    async def delete(self, owner: str, ids: list[int]) -> None: ...
    async def count(self, owner: str) -> int: ...


class SQLOfflineStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sm = sessionmaker(engine)

    async def store(self, owner: str, stanza: str, quota: int) -> bool:
        """Append unless the user already has ``quota`` messages; True once committed (durable)."""
        async with self._sm.begin() as s:
            n = (
                await s.execute(select(func.count()).select_from(OfflineMessage).where(OfflineMessage.owner == owner))
            ).scalar_one()
            if n >= quota:
                return False
            s.add(OfflineMessage(owner=owner, stanza=stanza, created_at=datetime.now(UTC)))
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

    async def count(self, owner: str) -> int:
        async with self._sm() as s:
            return int(
                (
                    await s.execute(
                        select(func.count()).select_from(OfflineMessage).where(OfflineMessage.owner == owner)
                    )
                ).scalar_one()
            )
