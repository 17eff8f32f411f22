"""Roster storage: one row per item (RFC 6121 §2) plus a per-user version counter (XEP-0237)."""

from __future__ import annotations

import json
from typing import Protocol

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ...sessions.roster import RosterEntry, SubState
from ..db import sessionmaker
from ..tables import RosterItem, RosterVersion


class RosterStore(Protocol):
    async def load(self, owner: str) -> tuple[int, dict[str, RosterEntry]]: ...
    async def save(self, owner: str, entry: RosterEntry) -> int: ...
    async def remove(self, owner: str, contact: str) -> int: ...
    async def remove_all(self, owner: str) -> None: ...


class SQLRosterStore:
    """Each change commits the item and bumps the version in one transaction; returns the new version."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sm = sessionmaker(engine)
        self._engine = engine

    async def load(self, owner: str) -> tuple[int, dict[str, RosterEntry]]:
        """Core SELECTs on one connection (no ORM objects): this runs at every login."""
        items, versions = RosterItem.__table__, RosterVersion.__table__
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(items).where(items.c.owner == owner))).all()
            ver = (
                await conn.execute(select(versions.c.version).where(versions.c.owner == owner))
            ).scalar_one_or_none()
        out = {}
        for r in rows:
            out[r.contact] = RosterEntry(
                contact=r.contact,
                state=SubState(r.subscription, r.ask, r.pending_in, r.approved),
                name=r.name,
                groups=list(json.loads(r.groups or "[]")),
                in_roster=r.in_roster,
                pending_in_stanza=r.pending_in_stanza,
            )
        return int(ver or 0), out

    async def _bump(self, s: object, owner: str) -> int:
        from sqlalchemy.ext.asyncio import AsyncSession

        assert isinstance(s, AsyncSession)
        row = await s.get(RosterVersion, owner)
        if row is None:
            row = RosterVersion(owner=owner, version=1)
            s.add(row)
        else:
            row.version += 1
        return int(row.version)

    async def save(self, owner: str, entry: RosterEntry) -> int:
        async with self._sm.begin() as s:
            row = (
                await s.execute(
                    select(RosterItem).where(RosterItem.owner == owner, RosterItem.contact == entry.contact)
                )
            ).scalar_one_or_none()
            if row is None:
                row = RosterItem(owner=owner, contact=entry.contact)
                s.add(row)
            st = entry.state
            row.subscription = st.sub
            row.ask = st.pending_out
            row.pending_in = st.pending_in
            row.approved = st.approved
            row.name = entry.name
            row.groups = entry.groups_json()
            row.in_roster = entry.in_roster
            row.pending_in_stanza = entry.pending_in_stanza
            return await self._bump(s, owner)

    async def remove(self, owner: str, contact: str) -> int:
        async with self._sm.begin() as s:
            await s.execute(delete(RosterItem).where(RosterItem.owner == owner, RosterItem.contact == contact))
            return await self._bump(s, owner)

    async def remove_all(self, owner: str) -> None:
        async with self._sm.begin() as s:
            await s.execute(delete(RosterItem).where(RosterItem.owner == owner))
            await s.execute(delete(RosterVersion).where(RosterVersion.owner == owner))
