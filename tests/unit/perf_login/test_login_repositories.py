"""The login's storage paths on each backend: SCRAM keys (SQLite fast path and the async path) and the
batched logout-time writes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from xmppim.auth.credentials import derive_keys
from xmppim.storage.db import SQLiteReader, sqlite_reader
from xmppim.storage.repositories.accounts import SQLAccountStore
from xmppim.storage.repositories.last import SQLLastActivityStore
from xmppim.storage.tables import Base


async def test_scram_keys_on_every_backend(repo_engine: AsyncEngine) -> None:
    store = SQLAccountStore(repo_engine)
    await store.create("alice", "localhost", "pw")
    keys = await store.get_keys("alice", "localhost")
    assert keys is not None
    again = derive_keys("pw", keys.salt, keys.iterations)
    assert keys == again  # same bytes, same types, whichever path read them
    assert await store.get_keys("alice", "elsewhere") is None
    assert await store.get_keys("bob", "localhost") is None
    await store.set_password("alice", "localhost", "new")
    fresh = await store.get_keys("alice", "localhost")
    assert fresh is not None and fresh != keys  # a changed password is seen at once: nothing is cached
    await store.delete("alice", "localhost")
    assert await store.get_keys("alice", "localhost") is None

    reader = sqlite_reader(repo_engine)
    if repo_engine.dialect.name == "sqlite":
        assert reader is not None and reader._conn is not None  # the reads above went through it
    else:
        assert reader is None  # PostgreSQL: the async path only


async def test_the_async_path_answers_when_the_fast_path_cannot(repo_engine: AsyncEngine) -> None:
    store = SQLAccountStore(repo_engine)
    await store.create("carol", "localhost", "pw")
    expected = await store.get_keys("carol", "localhost")
    store._fast = SQLiteReader("/nonexistent/dir/xmppim.db")  # mode=ro: cannot open, so unavailable
    assert await store.get_keys("carol", "localhost") == expected


async def test_logout_times_in_one_batch(repo_engine: AsyncEngine) -> None:
    store = SQLLastActivityStore(repo_engine)
    t0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    await store.set("a@x", t0, "old")
    t1 = t0 + dt.timedelta(hours=1)
    t2 = t0 + dt.timedelta(hours=2)
    # An update of an existing row, two new rows, and the same owner twice (the last one wins).
    await store.set_many([("a@x", t1, "new"), ("b@x", t1, ""), ("c@x", t1, "first"), ("c@x", t2, "second")])
    assert await store.get("a@x") == (t1, "new")
    assert await store.get("b@x") == (t1, "")
    assert await store.get("c@x") == (t2, "second")
    await store.set_many([])  # nothing to write is not an error
    recent = [o for o, _w, _s in await store.recent(10)]
    assert sorted(recent) == ["a@x", "b@x", "c@x"] and recent[-1] == "c@x"  # one row each, newest last


async def test_a_forked_worker_opens_its_own_sqlite_connection(tmp_path: Path) -> None:
    from xmppim.storage import db

    eng = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/w.db")
    try:
        async with eng.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)
        store = SQLAccountStore(eng)
        await store.create("dave", "localhost", "pw")
        reader = sqlite_reader(eng)
        assert reader is not None and await store.get_keys("dave", "localhost") is not None
        parent_conn = reader._conn
        assert parent_conn is not None
        db._after_fork_in_child()  # what os.register_at_fork runs in a child process
        assert reader._conn is None
        assert parent_conn.execute("SELECT 1").fetchone() == (1,)  # left open: it is the parent's
        assert await store.get_keys("dave", "localhost") is not None
        assert reader._conn is not None and reader._conn is not parent_conn
    finally:
        await eng.dispose()
