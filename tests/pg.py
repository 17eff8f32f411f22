"""PostgreSQL fixtures for any test module (loaded as a pytest plugin by ``tests/conftest.py``).

* ``pg_url`` (session): starts the private cluster with ``scripts/postgres.sh start`` (installs the Debian
  package if needed) and yields the SQLAlchemy URL.  Skips, printing why, only when PostgreSQL cannot be
  installed on this machine; any other failure to start is a test error, not a skip.
* ``pg_schema`` (function): a fresh, empty schema of its own (``CREATE SCHEMA``; dropped with CASCADE
  afterwards), so modules and concurrent test runs never see each other's tables.  Use
  ``pg_schema.engine()`` for as many engines as you need; they all have ``search_path`` set to it.
* ``pg_engine`` (function): one such engine.
"""

from __future__ import annotations

import contextlib
import glob
import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "postgres.sh"


@dataclass
class PgSchema:
    url: str
    schema: str
    _engines: list[AsyncEngine] = field(default_factory=list)

    @property
    def connect_args(self) -> dict[str, Any]:
        return {"server_settings": {"search_path": self.schema}}

    def engine(self, **kw: Any) -> AsyncEngine:
        """An engine whose connections use this schema (disposed by the fixture)."""
        eng = create_async_engine(self.url, connect_args=self.connect_args, **kw)
        self._engines.append(eng)
        return eng


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    try:
        subprocess.run([str(SCRIPT), "start"], check=True, capture_output=True, text=True, timeout=600)
    except subprocess.CalledProcessError as exc:
        if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
            reason = f"PostgreSQL cannot be installed here: {exc.stderr.strip()[-500:]}"
            print(reason)
            pytest.skip(reason)
        raise RuntimeError(f"scripts/postgres.sh start failed: {exc.stderr}") from exc
    url = subprocess.run([str(SCRIPT), "url"], check=True, capture_output=True, text=True).stdout.strip()
    yield url


@pytest.fixture
async def pg_schema(pg_url: str) -> AsyncIterator[PgSchema]:
    name = f"t_{os.getpid()}_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(pg_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
            await conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        sch = PgSchema(url=pg_url, schema=name)
        try:
            yield sch
        finally:
            for eng in sch._engines:
                await eng.dispose()
            async with admin.connect() as conn:
                await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await admin.dispose()


@pytest.fixture
async def pg_engine(pg_schema: PgSchema) -> AsyncIterator[AsyncEngine]:
    yield pg_schema.engine()


@contextlib.asynccontextmanager
async def fresh_database(pg_url: str) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database of its own (its URL); dropped afterwards."""
    name = f"xmppim_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(pg_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as c:
        await c.exec_driver_sql(f'CREATE DATABASE "{name}"')
    base = pg_url.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        async with admin.connect() as c:
            await c.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()


@pytest.fixture
async def pg_database(pg_url: str) -> AsyncIterator[str]:
    """A fresh, empty PostgreSQL database of its own; dropped afterwards."""
    async with fresh_database(pg_url) as url:
        yield url
