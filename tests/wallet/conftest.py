"""Wallet test fixtures: a ledger on SQLite (file) and, for ``db`` parametrised tests, on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from plugins.wallet.ledger import Ledger, WalletConfig
from plugins.wallet.tables import metadata
from xmppim.storage.db import create_engine

USERS = {"alice@example.org", "bob@example.org", "carol@example.org", "dave@example.org"}


class Clock:
    """A controllable clock for daily limits and hold deadlines."""

    def __init__(self) -> None:
        self.t = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


async def create_tables(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


@dataclass
class Db:
    """Where a test's database lives; ``engine()`` may be called several times (several "processes")."""

    url: str
    connect_args: dict[str, Any]

    @property
    def sqlite(self) -> bool:
        return self.url.startswith("sqlite")

    def engine(self) -> AsyncEngine:
        """SQLite goes through the core's engine factory (WAL, synchronous=FULL, BEGIN IMMEDIATE hook), so
        the ledger is tested the way the server runs it."""
        if self.sqlite:
            return create_engine(self.url)
        return create_async_engine(self.url, connect_args=self.connect_args)


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    if request.param == "sqlite":
        return Db(f"sqlite+aiosqlite:///{tmp_path}/wallet.db", {})
    sch = request.getfixturevalue("pg_schema")
    return Db(sch.url, sch.connect_args)


@pytest.fixture
async def engine(db: Db) -> AsyncIterator[AsyncEngine]:
    eng = db.engine()
    await create_tables(eng)
    yield eng
    await eng.dispose()


@pytest.fixture
def users() -> set[str]:
    return set(USERS)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_ledger(
    engine: AsyncEngine, tmp_path: Path, users: set[str], clock: Clock
) -> Callable[..., Ledger]:
    async def exists(jid: str) -> bool:
        return jid in users

    def make(**cfg: object) -> Ledger:
        return Ledger(
            engine, WalletConfig(**cfg), user_exists=exists, data_dir=tmp_path / "data", clock=clock  # type: ignore[arg-type]
        )

    return make


@pytest.fixture
def ledger(make_ledger: Callable[..., Ledger]) -> Ledger:
    return make_ledger()
