"""Per-user private XML: XEP-0049 fragments and the XEP-0054 vCard, one row per (owner, namespace).

The vCard lives here under namespace ``vcard-temp`` (XEP-0049 reserves that namespace, so the two never
collide: the private-storage module refuses it). Writes are upserts, so a client that stores the same
namespace twice from two resources at once ends with one row, never an ``IntegrityError``.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from ..db import sessionmaker
from ..tables import PrivateXML


class PrivateStore(Protocol):
    async def get(self, owner: str, namespace: str) -> str | None: ...
    async def put(self, owner: str, namespace: str, xml: str) -> None: ...
    async def delete(self, owner: str, namespace: str) -> bool: ...
    async def count(self, owner: str) -> int: ...
    async def has(self, owner: str, namespace: str) -> bool: ...
    async def delete_owner(self, owner: str) -> int: ...


def upsert(engine: AsyncEngine, table: Any, index: list[str], values: dict[str, Any], update: list[str]) -> Any:
    """``INSERT ... ON CONFLICT (index) DO UPDATE`` for SQLite and PostgreSQL (both spell it alike)."""
    dialect = sqlite if engine.dialect.name == "sqlite" else postgresql
    ins = dialect.insert(table).values(**values)
    return ins.on_conflict_do_update(index_elements=index, set_={c: ins.excluded[c] for c in update})


class SQLPrivateStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._sm = sessionmaker(engine)

    async def get(self, owner: str, namespace: str) -> str | None:
        async with self._sm() as s:
            r = await s.execute(
                select(PrivateXML.xml).where(PrivateXML.owner == owner, PrivateXML.namespace == namespace)
            )
            xml: str | None = r.scalar_one_or_none()
            return xml

    async def put(self, owner: str, namespace: str, xml: str) -> None:
        stmt = upsert(
            self._engine,
            PrivateXML.__table__,
            ["owner", "namespace"],
            {"owner": owner, "namespace": namespace, "xml": xml},
            ["xml"],
        )
        async with self._sm.begin() as s:
            await s.execute(stmt)

    async def delete(self, owner: str, namespace: str) -> bool:
        async with self._sm.begin() as s:
            r = await s.execute(delete(PrivateXML).where(PrivateXML.owner == owner, PrivateXML.namespace == namespace))
            return bool(r.rowcount)

    async def count(self, owner: str) -> int:
        async with self._sm() as s:
            r = await s.execute(select(func.count()).select_from(PrivateXML).where(PrivateXML.owner == owner))
            return int(r.scalar_one())

    async def has(self, owner: str, namespace: str) -> bool:
        async with self._sm() as s:
            r = await s.execute(
                select(PrivateXML.id).where(PrivateXML.owner == owner, PrivateXML.namespace == namespace)
            )
            return r.first() is not None

    async def delete_owner(self, owner: str) -> int:
        """Remove everything stored for an account (on ``user/deleted``)."""
        async with self._sm.begin() as s:
            r = await s.execute(delete(PrivateXML).where(PrivateXML.owner == owner))
            return int(r.rowcount)
