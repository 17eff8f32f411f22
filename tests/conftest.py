"""Shared pytest fixtures: a running xmppim on loopback with two accounts, and real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.helpers import make_config, running_server
from xmppim.server import Server

pytest_plugins = ["tests.pg"] if (Path(__file__).parent / "pg.py").exists() else []


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    """Override per test module: ``@pytest.fixture def config_overrides(): return {...}``."""
    return {}


@pytest.fixture
async def server(tmp_path: Path, config_overrides: dict[str, Any]) -> AsyncIterator[Server]:
    cfg = make_config(tmp_path, **config_overrides)
    async with running_server(cfg) as srv:
        for user in ("alice", "bob", "carol"):
            await srv.accounts.create(user, "localhost", "pw")
        yield srv


# ---------------------------------------------------------------- repositories, on every backend
@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.postgres)])
def repo_db(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """(url, connect_args) of an empty database: a SQLite file, and a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/repo.db", {}
    sch = request.getfixturevalue("pg_schema")
    return sch.url, sch.connect_args


@pytest.fixture
async def repo_engine(repo_db: tuple[str, dict[str, Any]]) -> AsyncIterator[AsyncEngine]:
    """An engine on ``repo_db`` with the core tables created, for repository tests on each backend."""
    from xmppim.storage.db import create_engine
    from xmppim.storage.tables import Base

    url, connect_args = repo_db
    eng = create_engine(url) if url.startswith("sqlite") else create_async_engine(url, connect_args=connect_args)
    async with eng.begin() as conn:
        await conn.run_sync(Base.metadata.create_all)
    yield eng
    await eng.dispose()
