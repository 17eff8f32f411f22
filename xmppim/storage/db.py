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

from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


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
