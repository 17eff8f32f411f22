"""The alembic revision creates exactly the tables of ``plugins.wallet.tables`` (autogenerate-clean)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from plugins.wallet.tables import metadata

from .conftest import Db

REV = Path(__file__).resolve().parents[2] / "plugins/wallet/migrations/versions/0001_wallet_initial.py"


def load_revision() -> ModuleType:
    spec = importlib.util.spec_from_file_location("wallet_rev_0001", REV)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_revision_metadata() -> None:
    mod = load_revision()
    assert mod.branch_labels == ("wallet",) and mod.down_revision is None


async def test_upgrade_matches_metadata_and_downgrade_removes(db: Db) -> None:
    mod = load_revision()
    engine = db.engine()

    def upgrade_and_compare(conn: Connection) -> list[Any]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        with Operations.context(ctx):
            mod.upgrade()
        return list(compare_metadata(ctx, metadata))

    def downgrade(conn: Connection) -> list[str]:
        ctx = MigrationContext.configure(conn)
        with Operations.context(ctx):
            mod.downgrade()
        return [t for t in inspect(conn).get_table_names() if t.startswith("wallet_")]

    def tables(conn: Connection) -> list[str]:
        return sorted(t for t in inspect(conn).get_table_names() if t.startswith("wallet_"))

    try:
        async with engine.begin() as conn:
            diffs = await conn.run_sync(upgrade_and_compare)
            assert diffs == [], diffs
            assert await conn.run_sync(tables) == sorted(metadata.tables)
        async with engine.begin() as conn:
            assert await conn.run_sync(downgrade) == []
    finally:
        await engine.dispose()
