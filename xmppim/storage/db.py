"""Database engine set-up: SQLite (embedded default) and PostgreSQL through SQLAlchemy 2 async.

SQLite runs in WAL mode. ``[storage] sqlite_synchronous`` picks the durability: ``normal`` (default) makes
a returned commit survive a crash or SIGKILL of the server process (it is in the WAL, which the OS keeps),
``full`` also survives a power loss (an fsync per commit, ~100x slower on ordinary disks). The wallet
ledger always commits with ``full``: money is worth the fsync.

Reads run without BEGIN, statement by statement (they never wait for writers in WAL mode); writes —
everything opened with ``SessionFactory.begin()`` — begin IMMEDIATE, taking the write lock before they
read, because two deferred read-then-write transactions either lose an update or fail with SQLITE_BUSY
when both try to upgrade.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger("xmppim.storage")


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_engine(url: str, sqlite_synchronous: str = "normal") -> AsyncEngine:
    """Create the async engine for ``url``, making the SQLite directory and pragmas as needed."""
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 30})
        _sqlite_pragmas(engine, sqlite_synchronous)
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def _sqlite_pragmas(engine: AsyncEngine, synchronous: str) -> None:
    if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError(f"sqlite_synchronous must be off, normal, full or extra, not {synchronous!r}")

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # pysqlite's own transaction handling is turned off so that BEGIN is ours to emit.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous.upper()}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        opts = conn.get_execution_options()
        if opts.get("isolation_level") == "AUTOCOMMIT":
            return  # the caller manages BEGIN itself (e.g. the wallet ledger's explicit BEGIN IMMEDIATE)
        mode = opts.get("sqlite_begin", "DEFERRED")
        if mode == "DEFERRED":
            # Reads: no BEGIN at all. Each SELECT is its own consistent snapshot in WAL mode, and every
            # statement saved is one fewer hop to aiosqlite's thread (logins do several reads).
            return
        conn.exec_driver_sql(f"BEGIN {mode}")


class SessionFactory:
    """``factory()`` opens a read session (DEFERRED); ``factory.begin()`` a write transaction (IMMEDIATE)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._read = async_sessionmaker(engine, expire_on_commit=False)
        self._write = async_sessionmaker(engine.execution_options(sqlite_begin="IMMEDIATE"), expire_on_commit=False)

    def __call__(self) -> AsyncSession:
        return self._read()

    def begin(self) -> Any:
        return self._write.begin()


def writer(engine: AsyncEngine) -> AsyncEngine:
    """The engine for Core write transactions: ``async with writer(engine).begin() as conn`` (IMMEDIATE)."""
    return engine.execution_options(sqlite_begin="IMMEDIATE")


def sessionmaker(engine: AsyncEngine) -> SessionFactory:
    return SessionFactory(engine)


class SQLiteReader:
    """One-row reads on the event loop's own thread through the stdlib ``sqlite3``, for the hottest lookups.

    Why: through SQLAlchemy's async layer a one-row SELECT on SQLite is about ten hops to aiosqlite's worker
    thread (pool checkout, cursor, execute, fetch, cursor close, reset-on-return), each a self-pipe wake-up
    of the loop, a greenlet switch and GIL traffic with the worker threads. For the SCRAM keys at every login
    that was 1.9 ms of server CPU per login against 0.46 ms with this read (1,000 logins without TLS, 50
    concurrent, issue-12 generator; py-spy showed the hops). The same read through ``sqlite3`` on an indexed
    key takes ~20 µs. In WAL mode a reader never waits for writers, so the loop is not blocked on
    locks; the read uses a busy timeout of 0 anyway, and anything unexpected (SQLITE_BUSY during WAL
    recovery, a missing table, a call from another thread) makes :meth:`fetchone` raise
    :class:`FastPathUnavailable` so the caller takes its ordinary async path. Reads see every committed
    write (each SELECT is its own snapshot). The connection is read-only (``mode=ro``, ``query_only``).

    File databases only: ``:memory:`` is private to the connection that made it.
    """

    __slots__ = ("_path", "_conn", "__weakref__")

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn: sqlite3.Connection | None = None
        _ALL_READERS.add(self)

    def _connect(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is not None:
            return conn
        uri = Path(self._path).absolute().as_uri() + "?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=0.0, isolation_level=None, cached_statements=32)
        conn.execute("PRAGMA query_only=ON")
        self._conn = conn
        return conn

    def fetchone(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """The first row of ``sql`` (a plain SQLite statement with ``?`` parameters), or None."""
        try:
            row: tuple[Any, ...] | None = self._connect().execute(sql, params).fetchone()
        except sqlite3.Error as e:
            log.debug("sqlite fast path unavailable (%s): using the async path", e)
            self.close()
            raise FastPathUnavailable(str(e)) from e
        return row

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except sqlite3.Error:  # e.g. called from another thread: the connection dies with its owner
                pass


_ALL_READERS: weakref.WeakSet[SQLiteReader] = weakref.WeakSet()
_INHERITED: list[sqlite3.Connection] = []


def _after_fork_in_child() -> None:
    """A forked worker must not use (nor close) its parent's SQLite connections: each reader opens its own.
    Done at fork rather than by comparing os.getpid() at every read: a system call per login here."""
    for reader in list(_ALL_READERS):
        if reader._conn is not None:
            _INHERITED.append(reader._conn)  # kept, never closed in the child
            reader._conn = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


class FastPathUnavailable(Exception):
    """:class:`SQLiteReader` could not answer; use the ordinary async path."""


_READERS: weakref.WeakKeyDictionary[Any, SQLiteReader | None] = weakref.WeakKeyDictionary()


def sqlite_reader(engine: AsyncEngine) -> SQLiteReader | None:
    """The :class:`SQLiteReader` of ``engine``'s database file (one per engine), or None (PostgreSQL,
    ``:memory:``). Closed when the engine is garbage-collected."""
    sync = engine.sync_engine
    try:
        return _READERS[sync]
    except KeyError:
        pass
    reader: SQLiteReader | None = None
    u = sync.url
    if u.get_backend_name() == "sqlite" and u.database and u.database != ":memory:" and "mode=memory" not in str(u):
        reader = SQLiteReader(u.database)
        weakref.finalize(sync, reader.close)
        event.listen(sync, "engine_disposed", lambda _e, r=reader: r.close())
    _READERS[sync] = reader
    return reader
