"""Group commit (xmppim/storage/group_commit.py) on SQLite and PostgreSQL: every caller returns only after
its write is committed, a failing write undoes only itself, and concurrent writers share commits."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from xmppim.storage.db import create_engine
from xmppim.storage.group_commit import group_commit
from xmppim.storage.tables import OfflineMessage

INSERT = insert(OfflineMessage)


def _row(owner: str, stanza: str | None) -> dict[str, object]:
    return {"owner": owner, "stanza": stanza, "created_at": datetime.now(UTC)}


async def _count(engine: AsyncEngine, owner: str) -> int:
    async with engine.connect() as conn:
        q = select(func.count()).select_from(OfflineMessage).where(OfflineMessage.owner == owner)
        return int((await conn.execute(q)).scalar_one())


async def test_writes_are_committed_when_submit_returns(repo_engine: AsyncEngine) -> None:
    gc = group_commit(repo_engine)
    ids = [await gc.submit(lambda c, i=i: c.execute(INSERT, _row("a@x", f"<m{i}/>")).inserted_primary_key[0])
           for i in range(5)]  # fmt: skip
    assert len(set(ids)) == 5
    # Seen from another connection at once: committed, not just written.
    assert await _count(repo_engine, "a@x") == 5


async def test_a_failing_write_undoes_only_itself(repo_engine: AsyncEngine) -> None:
    gc = group_commit(repo_engine)

    def bad(c: Connection) -> None:
        c.execute(INSERT, _row("b@x", "<ok-until-here/>"))
        c.execute(INSERT, _row("b@x", None))  # stanza is NOT NULL

    results = await asyncio.gather(
        *(gc.submit(lambda c: c.execute(INSERT, _row("b@x", "<fine/>"))) for _ in range(20)),
        gc.submit(bad),
        *(gc.submit(lambda c: c.execute(INSERT, _row("b@x", "<fine/>"))) for _ in range(20)),
        return_exceptions=True,
    )
    failures = [r for r in results if isinstance(r, BaseException)]
    assert len(failures) == 1 and isinstance(failures[0], IntegrityError)
    assert await _count(repo_engine, "b@x") == 40  # the bad work's first insert was rolled back too


async def test_a_failing_write_alone_leaves_nothing(repo_engine: AsyncEngine) -> None:
    gc = group_commit(repo_engine)

    def bad(c: Connection) -> None:
        c.execute(INSERT, _row("d@x", "<first/>"))
        c.execute(INSERT, _row("d@x", None))

    with pytest.raises(IntegrityError):
        await gc.submit(bad)
    assert await _count(repo_engine, "d@x") == 0
    await gc.submit(lambda c: c.execute(INSERT, _row("d@x", "<after/>")))  # the writer goes on
    assert await _count(repo_engine, "d@x") == 1


async def test_concurrent_writers_share_commits(repo_engine: AsyncEngine) -> None:
    """200 concurrent writes need far fewer than 200 commits (counted by a work that sees its batch)."""
    gc = group_commit(repo_engine)
    seen: list[object] = []  # keeps each transaction object alive, so their ids stay distinct

    def work(c: Connection) -> None:
        seen.append(c.get_transaction())
        c.execute(INSERT, _row("c@x", "<m/>"))

    await asyncio.gather(*(gc.submit(work) for _ in range(200)))
    assert await _count(repo_engine, "c@x") == 200
    assert len({id(t) for t in seen}) < 100


async def test_submit_after_close_is_refused(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path}/gc.db")
    gc = group_commit(engine)
    gc.close()
    with pytest.raises(RuntimeError, match="closed"):
        await gc.submit(lambda c: None)
    await engine.dispose()
