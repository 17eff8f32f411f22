"""Group commit: many small write transactions, one database commit.

Why: a message stored for an offline user is committed before its sender's next stanza is read (so nothing
accepted is lost), and every such write was its own transaction through SQLAlchemy's async layer — on
SQLite that is BEGIN, INSERT and COMMIT each hopping to aiosqlite's thread and back, ~2.5 ms of wall time
per message in the offline benchmark (issue 12), ten times Prosody's. Archiving every message (next turn's
MAM) is the same shape of work.

:meth:`GroupCommit.submit` queues ``work(conn)`` — a function of a *synchronous* SQLAlchemy ``Connection``
— and returns once it is committed. One writer takes everything queued since its last commit, runs each work
in its own SAVEPOINT (a failing one undoes only itself and raises to its own caller), commits once and then
resolves every caller. "Returned" still means "committed", with the durability ``[storage]
sqlite_synchronous`` gives; under load many writes share one commit, and alone a write costs one hand-over
instead of several.

* SQLite: the writer is a thread with its own synchronous pysqlite connection to the same file (same pragmas
  as the server's engine; ``BEGIN IMMEDIATE``, so it waits for the write lock with ``busy_timeout`` there,
  never on the event loop).
* Anything else (PostgreSQL): an asyncio task running the batch in one transaction of the async engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

log = logging.getLogger("xmppim.storage")

T = TypeVar("T")
Work = Callable[[Connection], Any]
MAX_BATCH = 256


class GroupCommit:
    """Interface; :func:`group_commit` returns the right implementation for an engine."""

    async def submit(self, work: Callable[[Connection], T]) -> T:
        raise NotImplementedError

    def close(self) -> None:
        """Stop the writer after what is queued (called when the engine is disposed)."""


def _settle(fut: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if fut.done():
        return  # the caller was cancelled; the write itself happened (or failed) all the same
    if ok:
        fut.set_result(value)
    else:
        fut.set_exception(value)


def _run_batch(conn: Connection, batch: list[tuple[Work, Any]]) -> list[tuple[Any, bool, Any]]:
    """Run every work of ``batch`` in one transaction, each in a SAVEPOINT; (future, ok, value) per work."""
    out: list[tuple[Any, bool, Any]] = []
    if len(batch) == 1:
        # Alone, a work needs no SAVEPOINT: its transaction is its own (two statements fewer per write).
        ((work, fut),) = batch
        try:
            with conn.begin():
                return [(fut, True, work(conn))]
        except Exception as e:
            return [(fut, False, e)]
    try:
        with conn.begin():
            for work, fut in batch:
                try:
                    with conn.begin_nested():
                        out.append((fut, True, work(conn)))
                except Exception as e:
                    out.append((fut, False, e))
    except Exception as e:
        log.exception("group commit of %d writes failed", len(batch))
        return [(fut, False, e) for _w, fut in batch]
    return out


class SQLiteGroupCommit(GroupCommit):
    def __init__(self, path: str, synchronous: str) -> None:
        self._engine = sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
        sync = synchronous.upper()

        @event.listens_for(self._engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # BEGIN is ours (below), as in storage/db.py
            for pragma in ("journal_mode=WAL", f"synchronous={sync}", "foreign_keys=ON", "busy_timeout=30000"):
                dbapi_conn.execute(f"PRAGMA {pragma}")

        @event.listens_for(self._engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        self._q: queue.SimpleQueue[tuple[Work, asyncio.Future[Any], asyncio.AbstractEventLoop] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name="xmppim-group-commit", daemon=True)
        self._thread.start()
        self._closed = False

    async def submit(self, work: Callable[[Connection], T]) -> T:
        if self._closed:
            raise RuntimeError("the database writer is closed")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._q.put((work, fut, loop))
        return await fut

    def _run(self) -> None:
        conn: Connection | None = None
        try:
            while True:
                item = self._q.get()
                if item is None:
                    return
                items = [item]
                stop = False
                while len(items) < MAX_BATCH:
                    try:
                        nxt = self._q.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stop = True
                        break
                    items.append(nxt)
                if conn is None:
                    conn = self._engine.connect()
                results = _run_batch(conn, [(w, (f, lp)) for w, f, lp in items])
                for (fut, lp), ok, value in results:
                    with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits any more
                        lp.call_soon_threadsafe(_settle, fut, ok, value)
                if stop:
                    return
        finally:
            if conn is not None:
                conn.close()
            self._engine.dispose()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._q.put(None)


class AsyncGroupCommit(GroupCommit):
    """PostgreSQL (or any async engine): one task, one transaction per batch."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._q: asyncio.Queue[tuple[Work, asyncio.Future[Any]]] | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, work: Callable[[Connection], T]) -> T:
        if self._q is None:
            self._q = asyncio.Queue()
            self._task = asyncio.ensure_future(self._run(self._q))
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._q.put_nowait((work, fut))
        return await fut

    async def _run(self, q: asyncio.Queue[tuple[Work, asyncio.Future[Any]]]) -> None:
        while True:
            batch = [await q.get()]
            while len(batch) < MAX_BATCH and not q.empty():
                batch.append(q.get_nowait())
            try:
                async with self._engine.connect() as conn:
                    results = await conn.run_sync(_run_batch, batch)
            except Exception as e:
                results = [(fut, False, e) for _w, fut in batch]
            for fut, ok, value in results:
                _settle(fut, ok, value)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


_WRITERS: weakref.WeakKeyDictionary[Any, GroupCommit] = weakref.WeakKeyDictionary()


def group_commit(engine: AsyncEngine, sqlite_synchronous: str = "normal") -> GroupCommit:
    """The group-commit writer of ``engine`` (one per engine, closed when the engine is disposed)."""
    sync = engine.sync_engine
    gc = _WRITERS.get(sync)
    if gc is not None:
        return gc
    u = sync.url
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:":
        gc = SQLiteGroupCommit(u.database, sqlite_synchronous)
    else:
        gc = AsyncGroupCommit(engine)
    _WRITERS[sync] = gc
    event.listen(sync, "engine_disposed", lambda _e, w=gc: w.close())
    return gc
