"""XEP-0012 last activity: server uptime, a user's last logout, and who may ask (a presence leak otherwise)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest
from slixmpp.exceptions import IqError
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import RawClient, disconnect, iq, slix_client, until
from xmppim.modules.xep0012_last import LastActivityModule
from xmppim.server import Server
from xmppim.stanza import error_condition
from xmppim.storage.repositories.last import SQLLastActivityStore

L = "{jabber:iq:last}"


@pytest.fixture
async def srv(server: Server) -> Server:
    await server.plugins.load(LastActivityModule)  # a no-op once the entry point is installed
    return server


def last_module(srv: Server) -> Any:
    return srv.plugins.loaded["last"].instance


async def raw(srv: Server, user: str, resource: str = "raw") -> RawClient:
    c = await RawClient.connect(srv.ports["c2s"])
    await c.login(user, "pw", resource)
    c.send_raw("<presence/>")
    return c


async def subscribe(contact: RawClient, owner: RawClient) -> None:
    """``contact`` subscribes to ``owner``'s presence and ``owner`` approves (RFC 6121 §3.1)."""
    owner_bare = owner.jid.split("/")[0]
    contact.send_raw(f"<presence to='{owner_bare}' type='subscribe'/>")
    await until(owner, lambda st: st.get("type") == "subscribe")
    owner.send_raw(f"<presence to='{contact.jid.split('/')[0]}' type='subscribed'/>")
    await until(contact, lambda st: st.tag.endswith("presence") and st.get("from") == owner.jid)


async def logged_out(srv: Server, c: RawClient, bare: str, status: str | None = None) -> None:
    if status is not None:
        c.send_raw(f"<presence type='unavailable'><status>{status}</status></presence>")
    await c.close()
    for _ in range(200):
        if not srv.sessions.is_online(bare) and await last_module(srv).store.get(bare) is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{bare} did not log out")


def last_query(to: str) -> str:
    return f"<iq type='get' id='q' to='{to}'><query xmlns='jabber:iq:last'/></iq>"


async def test_slixmpp_reads_server_uptime_and_the_feature(srv: Server) -> None:
    c = await slix_client(srv, "alice@localhost/l", "pw", plugins=("xep_0012",))
    await asyncio.sleep(1.1)
    r = await c.plugin["xep_0012"].get_last_activity("localhost", timeout=5)
    assert 1 <= int(r["last_activity"]["seconds"]) < 60
    assert not r["last_activity"]["status"]
    info = await c.plugin["xep_0030"].get_info("localhost", timeout=5)
    assert "jabber:iq:last" in info["disco_info"]["features"]
    # Asking about oneself: connected, so 0.
    r = await c.plugin["xep_0012"].get_last_activity("alice@localhost", timeout=5)
    assert int(r["last_activity"]["seconds"]) == 0
    await disconnect(c)


async def test_last_logout_and_status_for_a_subscribed_contact(srv: Server) -> None:
    alice = await raw(srv, "alice")
    bob = await raw(srv, "bob")
    await subscribe(bob, alice)
    r = await iq(bob, last_query("alice@localhost"))
    assert r.get("type") == "result" and r.find(f"{L}query") is not None
    assert r.find(f"{L}query").get("seconds") == "0"  # type: ignore[union-attr]

    await logged_out(srv, alice, "alice@localhost", status="Heading Home")
    # Pretend it happened 15 minutes and 3 seconds ago (XEP-0012 §3.1's example).
    mod = last_module(srv)
    when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=903)
    await mod.store.set("alice@localhost", when, "Heading Home")
    mod.cache.clear()
    bs = await slix_client(srv, "bob@localhost/slix", "pw", plugins=("xep_0012",))
    r2 = await bs.plugin["xep_0012"].get_last_activity("alice@localhost", timeout=5)
    assert 903 <= int(r2["last_activity"]["seconds"]) <= 910
    assert r2["last_activity"]["status"] == "Heading Home"
    assert mod.cached_logout_stamp("alice@localhost") == when.strftime("%Y-%m-%dT%H:%M:%SZ")
    await disconnect(bs)
    await bob.close()


async def test_unsubscribed_requesters_are_forbidden_even_for_full_jids(srv: Server) -> None:
    """§3.1 and §4: no answer that would reveal presence, and the IQ never reaches the resource."""
    alice = await raw(srv, "alice")
    bob = await raw(srv, "bob")
    carol = await raw(srv, "carol")
    await subscribe(carol, alice)
    bs = await slix_client(srv, "bob@localhost/slix", "pw", plugins=("xep_0012",))
    with pytest.raises(IqError) as e:
        await bs.plugin["xep_0012"].get_last_activity("alice@localhost", timeout=5)
    assert e.value.condition == "forbidden"
    r = await iq(bob, last_query("alice@localhost/raw"))
    assert error_condition(r) == "forbidden"
    # Carol may: her query to the full JID reaches Alice's client, which answers itself.
    carol.send_raw("<iq type='get' id='c1' to='alice@localhost/raw'><query xmlns='jabber:iq:last'/></iq>")
    got = await until(alice, lambda st: st.tag == "{jabber:client}iq")
    assert got.get("id") == "c1" and got.get("from") == "carol@localhost/raw"  # bob's never arrived
    alice.send_raw(
        "<iq type='result' id='c1' to='carol@localhost/raw'><query xmlns='jabber:iq:last' seconds='42'/></iq>"
    )
    ans = await until(carol, lambda st: st.get("id") == "c1")
    assert ans.find(f"{L}query").get("seconds") == "42"  # type: ignore[union-attr]
    await disconnect(bs)
    for c in (alice, bob, carol):
        await c.close()


async def test_logout_is_recorded_only_when_the_last_resource_leaves(srv: Server) -> None:
    mod = last_module(srv)
    a1 = await raw(srv, "alice", "one")
    a2 = await raw(srv, "alice", "two")
    a1.send_raw("<presence type='unavailable'><status>gone one</status></presence>")
    await a1.close()
    await asyncio.sleep(0.2)
    assert "alice@localhost" not in mod.cache and await mod.store.get("alice@localhost") is None
    # An unavailable status followed by available presence is not the status one leaves with.
    a2.send_raw("<presence type='unavailable'><status>brb</status></presence>")
    a2.send_raw("<presence/>")
    await iq(a2, "<iq type='get' id='q' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    await logged_out(srv, a2, "alice@localhost")
    rec = await mod.store.get("alice@localhost")
    assert rec is not None and rec[1] == ""
    assert abs((dt.datetime.now(dt.UTC) - rec[0]).total_seconds()) < 5


async def test_account_without_a_recorded_logout(srv: Server) -> None:
    alice = await raw(srv, "alice")
    bob = await raw(srv, "bob")
    await subscribe(bob, alice)
    await logged_out(srv, alice, "alice@localhost")
    mod = last_module(srv)
    await mod.store.delete("alice@localhost")
    mod.cache.clear()
    r = await iq(bob, last_query("alice@localhost"))
    assert error_condition(r) == "item-not-found"
    await bob.close()


async def test_without_a_roster_service_anyone_may_ask(srv: Server) -> None:
    roster = srv.services.pop("roster", None)
    try:
        bob = await raw(srv, "bob")
        alice = await raw(srv, "alice")
        r = await iq(bob, last_query("alice@localhost"))
        assert r.find(f"{L}query").get("seconds") == "0"  # type: ignore[union-attr]
        r = await iq(bob, last_query("nosuchuser@localhost"))
        assert error_condition(r) == "service-unavailable"
        await alice.close()
        await bob.close()
    finally:
        if roster is not None:
            srv.services["roster"] = roster


# ---------------------------------------------------------------- repository, on every backend
# (fixtures repo_db / repo_engine: tests/conftest.py)


async def test_last_activity_store(repo_engine: AsyncEngine) -> None:
    s = SQLLastActivityStore(repo_engine)
    t0 = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
    assert await s.get("a@x") is None
    await s.set("a@x", t0, "one")
    await s.set("a@x", t0 + dt.timedelta(seconds=5), "two")  # upsert
    await s.set("b@x", t0 + dt.timedelta(seconds=1), "")
    assert await s.get("a@x") == (t0 + dt.timedelta(seconds=5), "two")
    assert [o for o, _w, _s in await s.recent(10)] == ["b@x", "a@x"]  # oldest first, newest last
    assert [o for o, _w, _s in await s.recent(1)] == ["a@x"]
    assert await s.delete("a@x") and await s.get("a@x") is None


async def test_probe_answers_for_an_offline_contact_carry_the_logout_time(srv: Server) -> None:
    """The ``last`` service's stamp is what the presence module puts in XEP-0203 <delay/> on probe answers."""
    alice = await raw(srv, "alice")
    bob = await raw(srv, "bob")
    await subscribe(bob, alice)  # bob -> alice: bob's login probes alice
    await logged_out(srv, alice, "alice@localhost")
    await bob.close()
    stamp = last_module(srv).cached_logout_stamp("alice@localhost")
    assert stamp.endswith("Z") and abs(dt.datetime.fromisoformat(stamp) - dt.datetime.now(dt.UTC)).total_seconds() < 10
    b2 = await RawClient.connect(srv.ports["c2s"])
    await b2.login("bob", "pw", "again")
    b2.send_raw("<presence/>")
    p = await until(b2, lambda st: st.tag.endswith("presence") and st.get("from", "").startswith("alice@"))
    assert p.get("type") == "unavailable"
    delay = p.find("{urn:xmpp:delay}delay")
    assert delay is not None and delay.get("stamp") == stamp
    await b2.close()
