"""XEP-0191 blocking: slixmpp's xep_0191 manages the list; raw clients prove enforcement both ways."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import RawClient, disconnect, iq, make_config, running_server, slix_client, until
from xmppim.modules.xep0191_blocking import BlockingModule, matches
from xmppim.server import Server
from xmppim.stanza import error_condition
from xmppim.storage.db import sessionmaker
from xmppim.storage.repositories.blocklist import SQLBlocklistStore
from xmppim.storage.tables import OfflineMessage

B = "{urn:xmpp:blocking}"
BLOCKED = "{urn:xmpp:blocking:errors}blocked"
_ids = itertools.count()


@pytest.fixture
async def srv(server: Server) -> Server:
    await server.plugins.load(BlockingModule)  # a no-op once the entry point is installed
    return server


async def raw(srv: Server, user: str, resource: str = "raw", available: bool = True) -> RawClient:
    c = await RawClient.connect(srv.ports["c2s"])
    await c.login(user, "pw", resource)
    if available:
        c.send_raw("<presence/>")
    await sync(c)
    return c


async def sync(c: RawClient) -> list[Element]:
    """Everything that reached ``c`` before a round trip to the server (routing is in order)."""
    sid = f"sync{next(_ids)}"
    c.send_raw(f"<iq type='get' id='{sid}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    got: list[Element] = []
    while True:
        st = await c.recv()
        if st.get("id") == sid:
            return got
        got.append(st)


def kinds(stanzas: list[Element]) -> list[str]:
    return [f"{st.tag.split('}')[1]}:{st.get('type', '')}:{st.get('from', '')}" for st in stanzas]


async def block(c: RawClient, *jids: str) -> None:
    items = "".join(f"<item jid='{j}'/>" for j in jids)
    r = await iq(c, f"<iq type='set' id='q'><block xmlns='urn:xmpp:blocking'>{items}</block></iq>")
    assert r.get("type") == "result", r


# ------------------------------------------------------------------ protocol
async def test_slixmpp_blocks_and_unblocks_with_pushes_to_interested_resources(srv: Server) -> None:
    a1 = await slix_client(srv, "alice@localhost/one", "pw", plugins=("xep_0191",))
    pushes: asyncio.Queue[tuple[str, list[str]]] = asyncio.Queue()
    a1.add_event_handler("blocked", lambda iq: pushes.put_nowait(("block", [i["jid"] for i in iq["block"]])))
    a1.add_event_handler("unblocked", lambda iq: pushes.put_nowait(("unblock", [i["jid"] for i in iq["unblock"]])))
    assert await a1.plugin["xep_0191"].get_blocked_jids(timeout=5) == set()
    a2 = await raw(srv, "alice", "two")
    r = await iq(a2, "<iq type='get' id='q'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
    assert r.find(f"{B}blocklist") is not None and len(r.find(f"{B}blocklist") or []) == 0
    a3 = await raw(srv, "alice", "three")  # never asks for the blocklist: gets no pushes

    await a1.plugin["xep_0191"].block(["bob@localhost", "evil.localhost"], timeout=5)
    assert {str(j) for j in await a1.plugin["xep_0191"].get_blocked_jids(timeout=5)} == {
        "bob@localhost",
        "evil.localhost",
    }
    push = await until(a2, lambda st: st.find(f"{B}block") is not None)
    assert push.get("type") == "set" and push.get("to") == "alice@localhost/two"
    assert sorted(i.get("jid", "") for i in push.iter(f"{B}item")) == ["bob@localhost", "evil.localhost"]
    assert await asyncio.wait_for(pushes.get(), 5) == ("block", ["bob@localhost", "evil.localhost"])

    await a1.plugin["xep_0191"].unblock("evil.localhost", timeout=5)
    push = await until(a2, lambda st: st.find(f"{B}unblock") is not None)
    assert [i.get("jid") for i in push.iter(f"{B}item")] == ["evil.localhost"]
    assert await asyncio.wait_for(pushes.get(), 5) == ("unblock", ["evil.localhost"])

    # §3.5 unblock all: an empty <unblock/>, pushed as such.
    r = await iq(a2, "<iq type='set' id='q'><unblock xmlns='urn:xmpp:blocking'/></iq>")
    assert r.get("type") == "result"
    assert await asyncio.wait_for(pushes.get(), 5) == ("unblock", [])
    assert await a1.plugin["xep_0191"].get_blocked_jids(timeout=5) == set()
    assert not [st for st in await sync(a3) if st.tag == "{jabber:client}iq"]

    info = await a1.plugin["xep_0030"].get_info("localhost", timeout=5)
    assert "urn:xmpp:blocking" in info["disco_info"]["features"]
    await disconnect(a1)
    for c in (a2, a3):
        await c.close()


async def test_bad_commands(srv: Server) -> None:
    a = await raw(srv, "alice")
    r = await iq(a, "<iq type='set' id='q'><block xmlns='urn:xmpp:blocking'/></iq>")
    assert error_condition(r) == "bad-request"
    r = await iq(a, "<iq type='set' id='q'><block xmlns='urn:xmpp:blocking'><item jid='a@@b'/></block></iq>")
    assert error_condition(r) == "jid-malformed"
    r = await iq(
        a, "<iq type='set' id='q'><block xmlns='urn:xmpp:blocking'><item jid='alice@localhost/x'/></block></iq>"
    )
    assert error_condition(r) == "not-acceptable"
    b = await raw(srv, "bob")
    r = await iq(b, "<iq type='get' id='q' to='alice@localhost'><blocklist xmlns='urn:xmpp:blocking'/></iq>")
    assert error_condition(r) == "forbidden"
    r = await iq(
        b, "<iq type='set' id='q' to='alice@localhost'><block xmlns='urn:xmpp:blocking'><item jid='x@y'/></block></iq>"
    )
    assert error_condition(r) == "forbidden"
    assert await SQLBlocklistStore(srv.engine).get("alice@localhost") == []
    # JIDs are stored normalised.
    await block(a, "Carol@LocalHost")
    assert await SQLBlocklistStore(srv.engine).get("alice@localhost") == ["carol@localhost"]
    for c in (a, b):
        await c.close()


# --------------------------------------------------------------- enforcement
async def test_stanzas_from_a_blocked_jid_are_refused_as_if_the_user_were_offline(srv: Server) -> None:
    alice = await raw(srv, "alice")
    bob = await raw(srv, "bob")
    carol = await raw(srv, "carol")
    await block(alice, "bob@localhost")

    for to in ("alice@localhost", "alice@localhost/raw"):
        bob.send_raw(f"<message to='{to}' id='m1'><body>hi</body></message>")
        err = await until(bob, lambda st: st.get("id") == "m1")
        assert err.get("type") == "error" and error_condition(err) == "service-unavailable"
        assert err.get("from") == to and err.find(f".//{BLOCKED}") is None  # nothing says "blocked"
    err = await iq(bob, "<iq type='get' id='q' to='alice@localhost/raw'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert error_condition(err) == "service-unavailable"
    err = await iq(bob, "<iq type='get' id='q' to='alice@localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert error_condition(err) == "service-unavailable"
    # Presence, errors and IQ results vanish without an answer.
    bob.send_raw("<presence to='alice@localhost/raw'/>")
    bob.send_raw("<presence to='alice@localhost' type='subscribe'/>")
    bob.send_raw("<iq type='result' id='r1' to='alice@localhost/raw'/>")
    bob.send_raw("<message type='error' id='e1' to='alice@localhost/raw'/>")
    assert kinds(await sync(bob)) == []
    # Carol is not blocked.
    carol.send_raw("<message to='alice@localhost/raw' id='c1'><body>from carol</body></message>")
    await sync(carol)
    got = await sync(alice)
    assert [st.findtext("{jabber:client}body") for st in got if st.tag == "{jabber:client}message"] == ["from carol"]
    for c in (alice, bob, carol):
        await c.close()


async def test_stanzas_to_a_blocked_jid_bounce_with_the_blocked_condition(srv: Server) -> None:
    alice = await raw(srv, "alice")
    bob = await raw(srv, "bob")
    await block(alice, "bob@localhost")
    await sync(bob)

    alice.send_raw("<message to='bob@localhost' id='m1'><body>psst</body></message>")
    err = await until(alice, lambda st: st.get("id") == "m1")
    assert err.get("type") == "error" and error_condition(err) == "not-acceptable"
    assert err.find(f".//{BLOCKED}") is not None and err.get("from") == "bob@localhost"
    err = await iq(alice, "<iq type='get' id='q' to='bob@localhost/raw'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert error_condition(err) == "not-acceptable" and err.find(f".//{BLOCKED}") is not None
    alice.send_raw("<presence to='bob@localhost/raw'/>")
    alice.send_raw("<iq type='result' id='r1' to='bob@localhost/raw'/>")
    assert [k for k in kinds(await sync(alice)) if not k.startswith("presence")] == []
    assert kinds(await sync(bob)) == []
    # After unblocking, both directions work again.
    r = await iq(
        alice, "<iq type='set' id='q'><unblock xmlns='urn:xmpp:blocking'><item jid='bob@localhost'/></unblock></iq>"
    )
    assert r.get("type") == "result"
    alice.send_raw("<message to='bob@localhost/raw' id='m2'><body>again</body></message>")
    msg = await until(bob, lambda st: st.get("id") == "m2")
    assert msg.findtext("{jabber:client}body") == "again"
    bob.send_raw("<message to='alice@localhost/raw' id='m3'><body>back</body></message>")
    msg = await until(alice, lambda st: st.get("id") == "m3")
    assert msg.get("type") != "error"
    for c in (alice, bob):
        await c.close()


async def test_messages_to_an_offline_user_from_a_blocked_jid_are_not_stored(srv: Server) -> None:
    alice = await raw(srv, "alice")
    await block(alice, "bob@localhost")
    await alice.close()
    for _ in range(100):
        if not srv.sessions.is_online("alice@localhost"):
            break
        await asyncio.sleep(0.01)
    bob = await raw(srv, "bob")
    bob.send_raw("<message to='alice@localhost' id='m1'><body>hello?</body></message>")
    err = await until(bob, lambda st: st.get("id") == "m1")
    assert error_condition(err) == "service-unavailable"
    async with sessionmaker(srv.engine)() as s:
        n = (await s.execute(select(func.count()).select_from(OfflineMessage))).scalar_one()
    assert n == 0
    await bob.close()


async def test_full_jid_and_domain_items(srv: Server) -> None:
    alice = await raw(srv, "alice")
    phone = await raw(srv, "bob", "phone")
    laptop = await raw(srv, "bob", "laptop")
    await block(alice, "bob@localhost/phone")
    phone.send_raw("<message to='alice@localhost/raw' id='p'><body>1</body></message>")
    assert error_condition(await until(phone, lambda st: st.get("id") == "p")) == "service-unavailable"
    laptop.send_raw("<message to='alice@localhost/raw' id='l'><body>2</body></message>")
    assert (await until(alice, lambda st: st.get("id") == "l")).findtext("{jabber:client}body") == "2"
    # A 'from' that did not come from a client stream is normalised before matching.
    odd = Element("{jabber:client}message", {"from": "BOB@LocalHost/phone", "to": "alice@localhost/raw", "id": "o"})
    srv.router.route(srv.local_origin("test"), odd)
    laptop.send_raw("<message to='alice@localhost/raw' id='l1'><body>2b</body></message>")
    assert (await until(alice, lambda st: st.tag.endswith("message"))).get("id") == "l1"

    # A domain item covers every JID at that domain, but never the server itself (pings, disco...).
    await block(alice, "localhost")
    laptop.send_raw("<message to='alice@localhost/raw' id='l2'><body>3</body></message>")
    assert error_condition(await until(laptop, lambda st: st.get("id") == "l2")) == "service-unavailable"
    r = await iq(alice, "<iq type='get' id='q' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert r.get("type") == "result"
    for c in (alice, phone, laptop):
        await c.close()


def test_matching_rules() -> None:
    """§5 (as XEP-0016): full JID, then bare JID, then domain; a domain item covers all of its JIDs."""
    bl = frozenset({"a@x/r", "b@x", "y", "y/res"})
    assert matches(bl, "a@x/r") and not matches(bl, "a@x/other") and not matches(bl, "a@x")
    assert matches(bl, "b@x") and matches(bl, "b@x/any")
    assert matches(bl, "y") and matches(bl, "c@y") and matches(bl, "c@y/r") and matches(bl, "y/other")
    assert not matches(bl, "x") and not matches(bl, "c@x") and not matches(bl, "yy") and not matches(bl, "c@yy")
    assert not matches(frozenset({"x"}), "a@b/c@x")  # a resource that looks like a domain


# ------------------------------------------------------------------ presence
async def test_blocking_sends_unavailable_and_unblocking_sends_presence_again(srv: Server) -> None:
    """§3.3/§3.4: a contact subscribed to the user's presence sees them go offline and come back."""
    alice = await raw(srv, "alice")
    bob = await raw(srv, "bob")
    bob.send_raw("<presence to='alice@localhost' type='subscribe'/>")
    await until(alice, lambda st: st.get("type") == "subscribe")
    alice.send_raw("<presence to='bob@localhost' type='subscribed'/>")
    avail = await until(bob, lambda st: st.tag.endswith("presence") and st.get("from") == "alice@localhost/raw")
    assert avail.get("type") is None
    # And the other way round: alice sees bob's presence.
    alice.send_raw("<presence to='bob@localhost' type='subscribe'/>")
    await until(bob, lambda st: st.get("type") == "subscribe")
    bob.send_raw("<presence to='alice@localhost' type='subscribed'/>")
    await until(alice, lambda st: st.tag.endswith("presence") and st.get("from") == "bob@localhost/raw")

    await block(alice, "bob@localhost")
    gone = await until(bob, lambda st: st.tag.endswith("presence") and st.get("from") == "alice@localhost/raw")
    assert gone.get("type") == "unavailable"
    alice.send_raw("<presence><status>still here</status></presence>")  # not for bob any more
    bob.send_raw("<presence><status>bob busy</status></presence>")  # not for alice any more
    await sync(alice)
    await sync(bob)
    assert [k for k in kinds(await sync(bob)) if "alice" in k] == []
    assert [k for k in kinds(await sync(alice)) if "bob" in k] == []

    r = await iq(alice, "<iq type='set' id='q'><unblock xmlns='urn:xmpp:blocking'/></iq>")
    assert r.get("type") == "result"
    back = await until(bob, lambda st: st.tag.endswith("presence") and st.get("from") == "alice@localhost/raw")
    assert back.get("type") is None and back.findtext("{jabber:client}status") == "still here"
    # The server probed bob for alice: her client learns his presence again without waiting for a change.
    his = await until(alice, lambda st: st.tag.endswith("presence") and st.get("from") == "bob@localhost/raw")
    assert his.get("type") is None and his.findtext("{jabber:client}status") == "bob busy"
    for c in (alice, bob):
        await c.close()


async def test_directed_presence_is_withdrawn_on_block(srv: Server) -> None:
    alice = await raw(srv, "alice")
    carol = await raw(srv, "carol")
    alice.send_raw("<presence to='carol@localhost/raw'/>")
    got = await until(carol, lambda st: st.tag.endswith("presence") and st.get("from") == "alice@localhost/raw")
    assert got.get("type") is None
    await block(alice, "carol@localhost")
    gone = await until(carol, lambda st: st.tag.endswith("presence") and st.get("from") == "alice@localhost/raw")
    assert gone.get("type") == "unavailable"
    for c in (alice, carol):
        await c.close()


# ------------------------------------------------------------------ lifecycle
async def test_blocklists_survive_a_restart_and_apply_to_offline_users(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    async with running_server(cfg) as s1:
        for u in ("alice", "bob"):
            await s1.accounts.create(u, "localhost", "pw")
        await s1.plugins.load(BlockingModule)
        alice = await raw(s1, "alice")
        await block(alice, "bob@localhost")
        await alice.close()
    async with running_server(cfg) as s2:
        await s2.plugins.load(BlockingModule)
        blocking: Any = s2.plugins.loaded["blocking"].instance
        assert blocking.is_blocked("alice@localhost", "bob@localhost/x")
        assert blocking.either("bob@localhost/x", "alice@localhost/y") and blocking.either(
            "alice@localhost", "bob@localhost"
        )
        assert not blocking.either("carol@localhost", "alice@localhost") and not blocking.is_blocked(
            "bob@localhost", "alice@localhost"
        )
        bob = await raw(s2, "bob")
        bob.send_raw("<message to='alice@localhost' id='m'><body>?</body></message>")
        assert error_condition(await until(bob, lambda st: st.get("id") == "m")) == "service-unavailable"
        await bob.close()


async def test_deleting_the_account_drops_its_blocklist(srv: Server) -> None:
    alice = await raw(srv, "alice")
    await block(alice, "bob@localhost")
    alice.send_raw("<iq type='set' id='q'><query xmlns='jabber:iq:register'><remove/></query></iq>")
    assert await alice.closed()
    store = SQLBlocklistStore(srv.engine)
    for _ in range(100):
        if not await store.get("alice@localhost"):
            break
        await asyncio.sleep(0.01)
    assert await store.get("alice@localhost") == []
    assert not srv.plugins.loaded["blocking"].instance.is_blocked("alice@localhost", "bob@localhost")  # type: ignore[attr-defined]


@pytest.mark.parametrize("config_overrides", [{"plugins": {"blocking": {"max_items": 3}}}])
async def test_blocklist_length_is_bounded(srv: Server) -> None:
    a = await raw(srv, "alice")
    await block(a, "x1@remote.example", "x2@remote.example")
    r = await iq(
        a,
        "<iq type='set' id='q'><block xmlns='urn:xmpp:blocking'>"
        "<item jid='x3@remote.example'/><item jid='x4@remote.example'/></block></iq>",
    )
    assert error_condition(r) == "policy-violation"
    await block(a, "x2@remote.example", "x3@remote.example")  # one new: still within the limit
    assert sorted(await SQLBlocklistStore(srv.engine).get("alice@localhost")) == [
        "x1@remote.example",
        "x2@remote.example",
        "x3@remote.example",
    ]
    await a.close()


# ---------------------------------------------------------------- repository, on every backend
# (fixtures repo_db / repo_engine: tests/conftest.py)


async def test_blocklist_store(repo_engine: AsyncEngine) -> None:
    s = SQLBlocklistStore(repo_engine)
    assert await s.add("a@x", ["b@x", "c@x", "b@x"]) == ["b@x", "c@x"]
    assert await s.add("a@x", ["c@x", "d"]) == ["d"]  # only what is new
    await s.add("z@x", ["b@x"])
    assert await s.get("a@x") == ["b@x", "c@x", "d"]
    assert await s.all() == {"a@x": {"b@x", "c@x", "d"}, "z@x": {"b@x"}}
    assert sorted(await s.remove("a@x", ["c@x", "nope"])) == ["c@x"]
    assert sorted(await s.clear("a@x")) == ["b@x", "d"]
    assert await s.get("a@x") == [] and await s.all() == {"z@x": {"b@x"}}


async def test_probe_answers_from_a_blocker_never_reach_the_blocked_contact(srv: Server) -> None:
    """Regression: the server answers probes for local contacts itself; those presences must obey the
    blocklist like any stanza (bob is subscribed to alice, alice blocks bob, bob logs in again)."""
    from tests.e2e.test_rfc6121_im import make_friends

    await make_friends(srv, "alice", "bob")
    alice = await RawClient.connect(srv.ports["c2s"])
    await alice.login("alice", "pw", "a")
    alice.send_raw("<presence/>")
    await sync(alice)
    await block(alice, "bob@localhost")
    bob = await RawClient.connect(srv.ports["c2s"])
    await bob.login("bob", "pw", "b2")
    bob.send_raw("<presence/>")
    got = await sync(bob)
    assert not [s for s in got if (s.get("from") or "").startswith("alice@localhost") and s.get("type") is None]
    await alice.close()
    await bob.close()
