"""Alembic environment: the core trunk plus one branch per plugin, on SQLite or PostgreSQL (async)."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from xmppim.config import load_config
from xmppim.storage.db import create_engine
from xmppim.storage.tables import Base

config = context.config
xcfg = config.attributes.get("xmppim_config") or load_config()
url = config.get_main_option("sqlalchemy.url") or xcfg.storage_url


def target_metadata() -> list[Any]:
    from xmppim.plugins.loader import discover, load_class

    metas = [Base.metadata]
    for ep in discover().values():
        try:
            cls = load_class(ep)
        except Exception:
            continue
        if cls.metadata is not None and cls.metadata not in metas:
            metas.append(cls.metadata)
    return metas


def do_run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata(), render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    engine = create_engine(url)
    async with engine.connect() as conn:
        await conn.run_sync(do_run)
        await conn.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=url, target_metadata=target_metadata(), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_async())
