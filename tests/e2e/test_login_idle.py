"""Logins and idle clients on a live server: what the login/memory work (issue 12) must not change.

* An idle client's stream parser hibernates (xmppim/xml/parser.py) and the stream goes on unchanged.
* The SCRAM keys come through the SQLite fast path, and a changed password is seen at once.
* Logout times are written behind in batches and are all on disk once the server has stopped.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import RawClient, iq, make_config, running_server, until
from xmppim.server import Server
from xmppim.storage.db import sqlite_reader
from xmppim.stream import c2s


def connection_of(srv: Server, jid: str) -> Any:
    return next(c for c in srv.c2s_connections if getattr(c, "full_jid", "") == jid)


async def test_idle_parsers_hibernate_and_streams_go_on(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(c2s, "IDLE_SWEEP_SECONDS", 0.05)
    c2s._SWEPT.pop(server, None)  # a sweep started with the default interval would keep it
    alice = await RawClient.connect(server.ports["c2s"])
    bob = await RawClient.connect(server.ports["c2s"])
    a_jid = await alice.login("alice", "pw", "a")
    b_jid = await bob.login("bob", "pw", "b")
    conn = connection_of(server, a_jid)
    assert not conn.__dict__  # every attribute a connection sets is a slot
    for _ in range(100):
        if conn.parser._parser is None and connection_of(server, b_jid).parser._parser is None:
            break
        await asyncio.sleep(0.02)
    assert conn.parser._parser is None, "the idle stream's parser did not hibernate"
    # Stanzas, namespaces on children and whitespace keepalives work as before.
    alice.send_raw(" \n")
    alice.send_raw(f"<message to='{b_jid}' id='m1'><body>hi &amp; bye</body><x xmlns='urn:test'/></message>")
    got = await until(bob, lambda st: st.get("id") == "m1")
    assert got.findtext("{jabber:client}body") == "hi & bye"
    assert got.find("{urn:test}x") is not None
    assert got.get("from") == a_jid
    r = await iq(alice, "<iq type='get' id='p1' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>", "p1")
    assert r.get("type") == "result"
    # A broken stanza after waking is still a stream error.
    for _ in range(100):
        if conn.parser._parser is None:
            break
        await asyncio.sleep(0.02)
    alice.send_raw("<message><body></message>")
    assert await alice.stream_error() == "not-well-formed"
    await alice.close()
    await bob.close()


async def test_scram_keys_come_from_the_sqlite_fast_path_and_see_new_passwords(server: Server) -> None:
    reader = sqlite_reader(server.engine)
    assert reader is not None
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw", "one")
    assert reader._conn is not None  # the login read through it
    await c.close()
    await server.accounts.set_password("alice", "localhost", "new")
    c = await RawClient.connect(server.ports["c2s"])
    await c.open()
    await c.starttls()
    await c.open()
    failed = await c.auth_scram("alice", "pw")
    assert failed.tag.endswith("failure")
    await c.close()
    c = await RawClient.connect(server.ports["c2s"])
    assert await c.login("alice", "new", "two")
    await c.close()


async def test_logout_times_are_written_in_batches_and_flushed_at_stop(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_server(cfg) as srv:
        for u in ("u1", "u2", "u3"):
            await srv.accounts.create(u, "localhost", "pw")
        last = srv.plugins.loaded["last"].instance
        last.write_delay = 30.0  # longer than this test: only the stop can write the batch
        clients = []
        for u in ("u1", "u2", "u3"):
            c = await RawClient.connect(srv.ports["c2s"])
            await c.login(u, "pw")
            clients.append(c)
        for c in clients:
            await c.close()
        for _ in range(100):
            if len(last.pending) == 3:
                break
            await asyncio.sleep(0.01)
        assert set(last.pending) == {"u1@localhost", "u2@localhost", "u3@localhost"}
        assert await last.store.get("u1@localhost") is None  # not written yet: behind, in a batch
        assert (await last.last_logout("u1@localhost")) is not None  # yet answered from memory
        url = str(srv.engine.url)
    # The server stopped long before write_delay: the batch was flushed on the way out.
    db = url.split("///", 1)[1]
    with sqlite3.connect(db) as conn:
        owners = {r[0] for r in conn.execute("SELECT owner FROM last_activity")}
    assert owners == {"u1@localhost", "u2@localhost", "u3@localhost"}
