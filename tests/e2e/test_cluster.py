"""Two worker processes' worth of server (``[server] workers = 2``), run side by side in this process on
their own ports, sharing one database and the cluster mesh — so each test can put each client on the worker
it wants. Users are placed away from their home worker (``home_worker``: alice → 1; bob, carol → 0), so
that roster and subscription handling must travel to the home worker and back.

The multi-process supervisor itself (``xmppim serve --workers 2``) is tested in ``test_cluster_processes.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import slixmpp

from tests.helpers import Inbox, RawClient, disconnect, make_config, seed_database, slix_client
from tests.pg import fresh_database
from xmppim.cluster.node import RemoteSession, home_worker
from xmppim.server import Server

USERS = ("alice", "bob", "carol")


@contextlib.asynccontextmanager
async def cluster_of_two(tmp_path: Path, **overrides: Any) -> AsyncIterator[tuple[Server, Server]]:
    servers: list[Server] = []
    base = make_config(tmp_path, server={"workers": 2}, **overrides)
    await asyncio.to_thread(seed_database, base)
    try:
        for i in range(2):
            cfg = make_config(tmp_path, server={"workers": 2}, **overrides) if i else base
            srv = Server(cfg, worker_index=i)
            # SQLite is seeded from a migrated template; PostgreSQL is migrated once, as the supervisor does.
            await srv.start(migrate=i == 0 and not cfg.storage_url.startswith("sqlite"))
            servers.append(srv)
        for user in USERS:
            await servers[0].accounts.create(user, "localhost", "pw")
        for srv in servers:
            assert srv.cluster is not None
            assert await srv.cluster.wait_connected(10)
        yield servers[0], servers[1]
    finally:
        for srv in reversed(servers):
            await srv.stop()


@pytest.fixture(params=["sqlite", pytest.param("pg", marks=pytest.mark.postgres)])
async def pair(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Server, Server]]:
    """Two workers on one database: an SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        async with cluster_of_two(tmp_path) as p:
            yield p
        return
    async with (
        fresh_database(request.getfixturevalue("pg_url")) as url,
        cluster_of_two(tmp_path, storage={"url": url}) as p,
    ):
        yield p


async def eventually(pred: Callable[[], Any], what: str, timeout: float = 5.0) -> None:
    """Wait until ``pred()`` holds: what one worker did reaches the other after a hop over the mesh."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        assert loop.time() < end, f"never: {what}"
        await asyncio.sleep(0.01)


async def seen_by(server: Server, full_jid: str, *, available: bool = True) -> None:
    """Wait until ``server`` knows ``full_jid`` (and its available presence), whichever worker holds it."""

    def seen() -> bool:
        s = server.sessions.get(full_jid)
        return s is not None and (s.presence is not None or not available)

    await eventually(seen, f"worker {server.worker_index} sees {full_jid}")


async def login(where: Server, other: Server, user: str, **kw: Any) -> slixmpp.ClientXMPP:
    c = await slix_client(where, f"{user}@localhost", "pw", **kw)
    await seen_by(other, str(c.boundjid), available=kw.get("presence", True))
    return c


def test_users_are_placed_away_from_home() -> None:
    """The placement these tests rely on (if the hash changed, they would test less than they claim)."""
    assert home_worker("alice@localhost", 2) == 1
    assert home_worker("bob@localhost", 2) == 0
    assert home_worker("carol@localhost", 2) == 0


async def test_messages_cross_workers_both_ways(pair: tuple[Server, Server], tmp_path: Path) -> None:
    w0, w1 = pair
    # Whoever can reach the mesh sockets can route as any session: the directory is the owner's alone.
    assert (tmp_path / "cluster").stat().st_mode & 0o777 == 0o700
    alice = await login(w0, w1, "alice")
    bob = await login(w1, w0, "bob")
    a_in, b_in = Inbox(alice), Inbox(bob)
    try:
        assert isinstance(w0.sessions.get(str(bob.boundjid)), RemoteSession)
        alice.send_message("bob@localhost", "to your bare JID", mtype="chat")
        got = await b_in.body("to your bare JID")
        assert got["from"] == alice.boundjid
        bob.send_message(str(alice.boundjid), "to your full JID", mtype="chat")
        await a_in.body("to your full JID")
        # An IQ to a full JID on the other worker, and its answer back (XEP-0199 ping, client to client).
        await alice.plugin["xep_0199"].ping(jid=bob.boundjid, timeout=5)
    finally:
        await disconnect(alice, bob)


async def test_subscription_handshake_runs_on_home_workers(pair: tuple[Server, Server]) -> None:
    """RFC 6121 §3.1 across workers: alice (on 0, home 1) subscribes to bob (on 1, home 0); slixmpp's
    defaults approve and subscribe back. Both rosters end at 'both', as each home worker stored them."""
    w0, w1 = pair
    alice = await login(w0, w1, "alice")
    bob = await login(w1, w0, "bob")
    try:
        await alice.get_roster()
        await bob.get_roster()
        bob_sees_alice = asyncio.Event()
        bob.add_event_handler(
            "presence_available", lambda p: p["from"].bare == "alice@localhost" and bob_sees_alice.set()
        )
        alice.send_presence_subscription(pto="bob@localhost")
        await eventually(
            lambda: (
                alice.client_roster["bob@localhost"]["subscription"] == "both"
                and bob.client_roster["alice@localhost"]["subscription"] == "both"
            ),
            "both rosters at subscription='both'",
            8,
        )
        # What the home workers stored is what every worker reads.
        for srv in (w0, w1):
            srv.services["roster"].rosters.clear()
            a = await srv.services["roster"].get("alice@localhost")
            b = await srv.services["roster"].get("bob@localhost")
            assert a.items["bob@localhost"].state.subscribed_from and a.items["bob@localhost"].state.subscribed_to
            assert b.items["alice@localhost"].state.subscribed_from and b.items["alice@localhost"].state.subscribed_to
        # Presence now flows across workers: alice's next broadcast reaches bob.
        alice.send_presence(pstatus="here")
        await asyncio.wait_for(bob_sees_alice.wait(), 5)
    finally:
        await disconnect(alice, bob)


async def test_roster_change_on_home_reaches_the_other_worker_cache(pair: tuple[Server, Server]) -> None:
    w0, w1 = pair
    alice = await login(w0, w1, "alice")
    try:
        # Worker 0 caches alice's roster (her presence broadcast loaded it there).
        assert w0.services["roster"].cached("alice@localhost") is not None
        await alice.get_roster()
        await alice.update_roster("carol@localhost", name="Carol")
        roster = w0.services["roster"]
        await eventually(
            lambda: (r := roster.cached("alice@localhost")) is None or "carol@localhost" in r.items,
            "worker 0 drops its stale copy of alice's roster",
        )
        fresh = await w0.services["roster"].get("alice@localhost")
        assert fresh.items["carol@localhost"].name == "Carol"
    finally:
        await disconnect(alice)


async def test_blocking_set_on_one_worker_applies_on_the_other(pair: tuple[Server, Server]) -> None:
    w0, w1 = pair
    alice = await login(w0, w1, "alice", plugins=("xep_0191",))
    bob = await login(w1, w0, "bob")
    a_in = Inbox(alice)
    try:
        await alice.plugin["xep_0191"].block("bob@localhost")
        # Stanzas from bob are handled on worker 1: its blocklist copy must refuse them.
        await eventually(
            lambda: w1.services["blocking"].is_blocked("alice@localhost", "bob@localhost"),
            "worker 1 learns alice's blocklist",
        )
        b_in = Inbox(bob)
        bob.send_message("alice@localhost", "let me in", mtype="chat")
        await b_in.error("alice@localhost")
        assert "let me in" not in a_in.bodies()
    finally:
        await disconnect(alice, bob)


async def test_resource_conflict_across_workers(pair: tuple[Server, Server]) -> None:
    w0, w1 = pair
    first = RawClient(*await asyncio.open_connection("127.0.0.1", w0.ports["c2s"]))
    await first.login("alice", "pw", "desk")
    await seen_by(w1, "alice@localhost/desk", available=False)
    second = RawClient(*await asyncio.open_connection("127.0.0.1", w1.ports["c2s"]))
    await second.login("alice", "pw", "desk")
    try:
        assert await first.stream_error() == "conflict"
        await eventually(
            lambda: isinstance(w0.sessions.get("alice@localhost/desk"), RemoteSession),
            "worker 0 routes to the new session on worker 1",
        )
        assert w1.sessions.get("alice@localhost/desk") is not None
    finally:
        await second.close()


async def test_offline_message_across_workers(pair: tuple[Server, Server]) -> None:
    w0, w1 = pair
    alice = await login(w0, w1, "alice")
    try:
        alice.send_message("bob@localhost", "while you were out", mtype="chat")
        await asyncio.sleep(0.3)
        bob = await slix_client(w1, "bob@localhost", "pw", presence=False)
        b_in = Inbox(bob)
        bob.send_presence()
        await b_in.body("while you were out")
        await disconnect(bob)
    finally:
        await disconnect(alice)


async def test_a_dead_worker_sessions_go_unavailable(pair: tuple[Server, Server]) -> None:
    """Worker 1 dies without a word: worker 0 (carol's home) tells carol's contacts she is gone."""
    w0, w1 = pair
    alice = await login(w0, w1, "alice")
    carol = await login(w1, w0, "carol")
    try:
        await alice.get_roster()
        await carol.get_roster()
        alice.send_presence_subscription(pto="carol@localhost")
        await eventually(
            lambda: alice.client_roster["carol@localhost"]["subscription"] in ("to", "both"),
            "alice is subscribed to carol",
            8,
        )
        gone = asyncio.Event()
        alice.add_event_handler("presence_unavailable", lambda p: p["from"].bare == "carol@localhost" and gone.set())
        # Simulate a crash of worker 1: its links drop, it sends nothing more.
        assert w1.cluster is not None
        w1.cluster.mesh._closing = True
        for t in list(w1.cluster.mesh.outbound.values()):
            t.abort()
        w1.cluster.mesh.outbound.clear()
        await asyncio.wait_for(gone.wait(), 5)
        assert not w0.sessions.is_online("carol@localhost")
    finally:
        await disconnect(alice, carol)


async def test_offline_quota_counts_follow_deliveries_on_other_workers(tmp_path: Path) -> None:
    """Worker 0 counted bob's full mailbox; bob empties it on worker 1: worker 0 must store again, not bounce."""
    async with cluster_of_two(tmp_path, limits={"offline_quota": 2}) as (w0, w1):
        alice = await login(w0, w1, "alice")
        a_in = Inbox(alice)
        try:
            for text in ("one", "two", "three"):
                alice.send_message("bob@localhost", text, mtype="chat")
            await a_in.error("bob@localhost")  # the third one: the mailbox holds two
            bob = await slix_client(w1, "bob@localhost", "pw", presence=False)
            b_in = Inbox(bob)
            bob.send_presence()
            await b_in.body("two")
            await disconnect(bob)
            await eventually(lambda: not w0.sessions.is_online("bob@localhost"), "worker 0 sees bob leave")
            await asyncio.sleep(0.2)
            errors_before = len([m for m in a_in.items if m["type"] == "error"])
            alice.send_message("bob@localhost", "four", mtype="chat")
            bob = await slix_client(w1, "bob@localhost", "pw", presence=False)
            b_in = Inbox(bob)
            bob.send_presence()
            await b_in.body("four")
            assert len([m for m in a_in.items if m["type"] == "error"]) == errors_before
            await disconnect(bob)
        finally:
            await disconnect(alice)


async def test_wallet_ledger_stays_whole_with_two_workers_writing(pair: tuple[Server, Server]) -> None:
    """Both workers move coins at once through their own ledger objects and database connections: every
    transfer lands once, balances add up, and the hash chain verifies (the ledger's DB write lock, not any
    in-process lock, is what serializes the two processes)."""
    w0, w1 = pair
    l0, l1 = w0.services["wallet"], w1.services["wallet"]
    await l0.mint("alice@localhost", 1000)
    await l1.mint("bob@localhost", 1000)
    await asyncio.gather(
        *(l0.transfer("alice@localhost", "bob@localhost", 7) for _ in range(40)),
        *(l1.transfer("bob@localhost", "alice@localhost", 5) for _ in range(40)),
    )
    assert await l0.balance("alice@localhost") == 1000 - 40 * 7 + 40 * 5
    assert await l1.balance("bob@localhost") == 1000 + 40 * 7 - 40 * 5
    report = await l1.verify()
    assert report.ok, report.problems
    assert report.transfers == 82


async def test_ads_plugin_refuses_to_run_on_several_workers(tmp_path: Path) -> None:
    """Its budgets and caps are per process: with workers it must say so at start, not mis-bill later."""
    from xmppim.plugins.loader import PluginError

    cfg = make_config(tmp_path, server={"workers": 2}, plugins={"enabled": ["wallet", "ads"]})
    srv = Server(cfg, worker_index=0)
    with pytest.raises(PluginError, match=r"workers > 1"):
        await srv.start()
    await srv.stop()


async def test_logout_time_reaches_the_other_worker(pair: tuple[Server, Server]) -> None:
    """Probe answers for an offline contact carry its last logout time (XEP-0203), from each worker's cache."""
    w0, w1 = pair
    bob = await login(w1, w0, "bob")
    assert w0.services["last"].cached_logout_stamp("bob@localhost") == ""
    await disconnect(bob)
    await eventually(lambda: w0.services["last"].cached_logout_stamp("bob@localhost"), "worker 0 learns bob's logout")
    assert w0.services["last"].cached_logout_stamp("bob@localhost") == w1.services["last"].cached_logout_stamp(
        "bob@localhost"
    )
