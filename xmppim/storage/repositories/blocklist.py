"""XEP-0191 blocklists: the JIDs each user blocked, one row per (owner, jid).

``all()`` loads every non-empty blocklist at start: the blocking module keeps them in memory so that its
``stanza/in`` check stays a dict lookup, including for stanzas to users who are offline.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import sessionmaker
from ..tables import BlockedJID


class BlocklistStore(Protocol):
    async def get(self, owner: str) -> list[str]: ...
    async def all(self) -> dict[str, set[str]]: ...
    async def add(self, owner: str, jids: Iterable[str]) -> list[str]: ...
    async def remove(self, owner: str, jids: Iterable[str]) -> list[str]: ...
    async def clear(self, owner: str) -> list[str]: ...


class SQLBlocklistStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sm = sessionmaker(engine)

    async def get(self, owner: str) -> list[str]:
        async with self._sm() as s:
            q = select(BlockedJID.jid).where(BlockedJID.owner == owner).order_by(BlockedJID.id)
            r = await s.execute(q)
            return list(r.scalars())

    async def all(self) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        async with self._sm() as s:
            for owner, jid in await s.execute(select(BlockedJID.owner, BlockedJID.jid)):
                out.setdefault(owner, set()).add(jid)
        return out

    async def add(self, owner: str, jids: Iterable[str]) -> list[str]:
        """Block ``jids``; returns those that were not blocked before (in the order given)."""
        wanted = list(dict.fromkeys(jids))
        async with self._sm.begin() as s:
            q = select(BlockedJID.jid).where(BlockedJID.owner == owner, BlockedJID.jid.in_(wanted))
            have = set((await s.execute(q)).scalars())
            new = [j for j in wanted if j not in have]
            s.add_all(BlockedJID(owner=owner, jid=j) for j in new)
        return new

    async def remove(self, owner: str, jids: Iterable[str]) -> list[str]:
        """Unblock ``jids``; returns those that were blocked."""
        wanted = list(dict.fromkeys(jids))
        async with self._sm.begin() as s:
            r = await s.execute(
                delete(BlockedJID)
                .where(BlockedJID.owner == owner, BlockedJID.jid.in_(wanted))
                .returning(BlockedJID.jid)
            )
            return list(r.scalars())

    async def clear(self, owner: str) -> list[str]:
        """Unblock everything; returns what was blocked."""
        async with self._sm.begin() as s:
            r = await s.execute(delete(BlockedJID).where(BlockedJID.owner == owner).returning(BlockedJID.jid))
            return list(r.scalars())
