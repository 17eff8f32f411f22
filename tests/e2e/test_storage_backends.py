"""The same server behaviour on PostgreSQL as on SQLite, and migrations that match the models on both."""

from __future__ import annotations

from pathlib import Path

import pytest

from alembic import command
from tests.helpers import RawClient, make_config, running_server
from xmppim.config import Config
from xmppim.storage.migrate import alembic_config, upgrade


async def exercise(cfg: Config) -> None:
    """Accounts, roster, offline storage; then a restart with a new server object keeps all of it."""
    async with running_server(cfg) as srv:
        await srv.accounts.create("alice", "localhost", "pw")
        await srv.accounts.create("bob", "localhost", "pw")
        a = await RawClient.connect(srv.ports["c2s"])
        await a.login("alice", "pw", "a")
        a.send_raw("<iq type='set' id='r'><query xmlns='jabber:iq:roster'><item jid='bob@localhost'/></query></iq>")
        while (await a.recv()).get("id") != "r":
            pass
        a.send_raw("<message to='bob@localhost' type='chat' id='m'><body>stored</body></message>")
        a.send_raw("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        while (await a.recv()).get("id") != "sync":
            pass
        await a.close()
    async with running_server(cfg) as srv:
        b = await RawClient.connect(srv.ports["c2s"])
        await b.login("bob", "pw", "b")
        b.send_raw("<presence/>")
        bodies = []
        while not bodies:
            el = await b.recv()
            if el.tag == "{jabber:client}message":
                bodies.append(el.findtext("{jabber:client}body"))
        assert bodies == ["stored"]
        a = await RawClient.connect(srv.ports["c2s"])
        await a.login("alice", "pw", "a2")
        a.send_raw("<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>")
        r = await a.recv()
        assert [i.get("jid") for i in r.iter("{jabber:iq:roster}item")] == ["bob@localhost"]
        await a.close()
        await b.close()


async def test_server_on_sqlite(tmp_path: Path) -> None:
    await exercise(make_config(tmp_path))


@pytest.mark.postgres
async def test_server_on_postgresql(tmp_path: Path, pg_database: str) -> None:
    await exercise(make_config(tmp_path, storage={"url": pg_database}))


def _check(cfg: Config) -> None:
    upgrade(cfg)
    command.check(alembic_config(cfg))  # raises if the models and the migrations differ


async def test_migrations_match_models_on_sqlite(tmp_path: Path) -> None:
    import asyncio

    await asyncio.to_thread(_check, make_config(tmp_path))


@pytest.mark.postgres
async def test_migrations_match_models_on_postgresql(tmp_path: Path, pg_database: str) -> None:
    import asyncio

    await asyncio.to_thread(_check, make_config(tmp_path, storage={"url": pg_database}))
