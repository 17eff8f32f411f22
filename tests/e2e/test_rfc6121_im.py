"""RFC 6121 over real sockets with real slixmpp clients: rosters, subscriptions, presence, messages, offline."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import slixmpp

from tests.helpers import RawClient, disconnect, iq, slix_client
from xmppim.server import Server

ROSTER = "{jabber:iq:roster}"


async def wait_for(pred: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


async def roster_of(c: slixmpp.ClientXMPP) -> dict[str, dict[str, Any]]:
    await c.get_roster()
    return {str(j): {"subscription": c.client_roster[j]["subscription"]} for j in c.client_roster}


async def test_subscription_handshake_ends_in_both_with_pushes(server: Server) -> None:
    alice = await slix_client(server, "alice@localhost/a", "pw")
    bob = await slix_client(server, "bob@localhost/b", "pw")
    await alice.get_roster()
    await bob.get_roster()
    bob.auto_authorize = True  # answers subscribe with subscribed (and subscribes back: auto_subscribe)
    bob.auto_subscribe = True
    alice.auto_authorize = True
    alice.auto_subscribe = False
    alice.send_presence_subscription("bob@localhost")
    await wait_for(lambda: alice.client_roster["bob@localhost"]["subscription"] == "both")
    await wait_for(lambda: bob.client_roster["alice@localhost"]["subscription"] == "both")
    # The server's own state (what a fresh roster get returns) agrees.
    fresh = await slix_client(server, "alice@localhost/fresh", "pw")
    r = await roster_of(fresh)
    assert r["bob@localhost"]["subscription"] == "both"
    # Presence seen both ways
    await wait_for(lambda: "b" in alice.client_roster["bob@localhost"].resources)
    await wait_for(lambda: "a" in bob.client_roster["alice@localhost"].resources)
    await disconnect(alice, bob, fresh)


async def make_friends(server: Server, a: str, b: str) -> None:
    """Put a and b in each other's rosters with subscription both, through the protocol."""
    ca = await slix_client(server, f"{a}@localhost/setup", "pw")
    cb = await slix_client(server, f"{b}@localhost/setup", "pw")
    for c in (ca, cb):
        c.auto_authorize = True
        c.auto_subscribe = True
        await c.get_roster()
    ca.send_presence_subscription(f"{b}@localhost")
    await wait_for(lambda: ca.client_roster[f"{b}@localhost"]["subscription"] == "both")
    await wait_for(lambda: cb.client_roster[f"{a}@localhost"]["subscription"] == "both")
    await disconnect(ca, cb)


async def test_presence_unavailable_on_disconnect_and_on_killed_socket(server: Server) -> None:
    await make_friends(server, "alice", "bob")
    bob = await slix_client(server, "bob@localhost/b", "pw")
    await bob.get_roster()
    seen: list[tuple[str, str]] = []
    bob.add_event_handler("presence_available", lambda p: seen.append(("available", str(p["from"]))))
    bob.add_event_handler("presence_unavailable", lambda p: seen.append(("unavailable", str(p["from"]))))
    raw = await RawClient.connect(server.ports["c2s"])
    await raw.login("alice", "pw", "raw")
    raw.send_raw("<presence/>")
    await wait_for(lambda: ("available", "alice@localhost/raw") in seen)
    # kill the socket without a closing tag
    raw.writer.transport.abort()
    await wait_for(lambda: ("unavailable", "alice@localhost/raw") in seen)
    alice = await slix_client(server, "alice@localhost/clean", "pw")
    await wait_for(lambda: ("available", "alice@localhost/clean") in seen)
    await disconnect(alice)
    await wait_for(lambda: ("unavailable", "alice@localhost/clean") in seen)
    await disconnect(bob)


async def test_initial_presence_gets_contacts_presence_via_probe(server: Server) -> None:
    await make_friends(server, "alice", "bob")
    bob = await slix_client(server, "bob@localhost/b", "pw")
    raw = await RawClient.connect(server.ports["c2s"])
    await raw.login("alice", "pw", "raw")
    raw.send_raw("<presence/>")
    froms = set()
    for _ in range(3):
        p = await raw.recv()
        if p.tag == "{jabber:client}presence":
            froms.add(p.get("from"))
        if "bob@localhost/b" in froms:
            break
    assert "bob@localhost/b" in froms
    await raw.close()
    await disconnect(bob)


async def test_directed_presence_is_cleaned_up_when_the_sender_goes_offline(server: Server) -> None:
    carol = await RawClient.connect(server.ports["c2s"])
    await carol.login("carol", "pw", "c")
    carol.send_raw("<presence/>")
    assert (await carol.recv()).get("from") == "carol@localhost/c"  # own presence reflected
    alice = await RawClient.connect(server.ports["c2s"])
    await alice.login("alice", "pw", "a")
    alice.send_raw("<presence to='carol@localhost/c'/>")
    p = await carol.recv()
    assert p.get("from") == "alice@localhost/a" and p.get("type") is None
    alice.send_raw("</stream:stream>")
    p = await carol.recv()
    assert p.get("from") == "alice@localhost/a" and p.get("type") == "unavailable"
    await alice.close()
    await carol.close()


async def test_message_to_bare_jid_goes_to_highest_priority_resources(server: Server) -> None:
    alice = await RawClient.connect(server.ports["c2s"])
    await alice.login("alice", "pw", "a")
    low = await RawClient.connect(server.ports["c2s"])
    await low.login("bob", "pw", "low")
    high1 = await RawClient.connect(server.ports["c2s"])
    await high1.login("bob", "pw", "high1")
    high2 = await RawClient.connect(server.ports["c2s"])
    await high2.login("bob", "pw", "high2")
    for c, prio in ((low, 1), (high1, 5), (high2, 5)):
        c.send_raw(f"<presence><priority>{prio}</priority></presence>")
    await asyncio.sleep(0.3)
    for c in (low, high1, high2):
        c.events.clear()
        # drain presence broadcasts of the other resources
        while True:
            try:
                await c.recv(timeout=0.2)
            except TimeoutError:
                break
    alice.send_raw("<message to='bob@localhost' type='chat' id='m1'><body>hi</body></message>")
    got1 = await high1.recv()
    got2 = await high2.recv()
    assert got1.findtext("{jabber:client}body") == "hi" and got2.findtext("{jabber:client}body") == "hi"
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):
        await low.recv(timeout=0.5)
    # to a full JID: only that resource
    alice.send_raw("<message to='bob@localhost/low' type='chat'><body>just you</body></message>")
    assert (await low.recv()).findtext("{jabber:client}body") == "just you"
    for c in (alice, low, high1, high2):
        await c.close()


async def test_message_to_unknown_user_is_service_unavailable(server: Server) -> None:
    alice = await RawClient.connect(server.ports["c2s"])
    await alice.login("alice", "pw", "a")
    alice.send_raw("<message to='nobody@localhost' type='chat' id='x1'><body>hi</body></message>")
    err = await alice.recv()
    assert err.get("type") == "error" and err.get("id") == "x1"
    assert err.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
    await alice.close()


async def test_offline_message_delivered_at_next_login_with_delay(server: Server) -> None:
    alice = await RawClient.connect(server.ports["c2s"])
    await alice.login("alice", "pw", "a")
    alice.send_raw("<message to='bob@localhost' type='chat' id='o1'><body>while you were away</body></message>")
    alice.send_raw("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await alice.recv()).get("id") == "sync"  # processed in order: the message is stored by now
    bob = await slix_client(server, "bob@localhost/b", "pw", presence=False, plugins=("xep_0203",))
    got: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    bob.add_event_handler("message", lambda m: got.done() or got.set_result(m))
    bob.send_presence()
    m = await asyncio.wait_for(got, 5)
    assert m["body"] == "while you were away"
    assert str(m["from"]) == "alice@localhost/a"
    assert m["delay"]["stamp"] is not None
    await disconnect(bob)
    # delivered once: a second login gets nothing
    bob2 = await RawClient.connect(server.ports["c2s"])
    await bob2.login("bob", "pw", "again")
    bob2.send_raw("<presence/>")
    p = await bob2.recv()
    assert p.tag == "{jabber:client}presence"
    with pytest.raises((TimeoutError, asyncio.TimeoutError)):
        await bob2.recv(timeout=0.5)
    await alice.close()
    await bob2.close()


async def test_offline_quota_bounces_with_an_error(server: Server) -> None:
    server.plugins.loaded["offline"].instance.quota = 2  # type: ignore[attr-defined]
    alice = await RawClient.connect(server.ports["c2s"])
    await alice.login("alice", "pw", "a")
    for i in range(3):
        alice.send_raw(f"<message to='bob@localhost' type='chat' id='q{i}'><body>{i}</body></message>")
    err = await alice.recv()
    assert err.get("id") == "q2" and err.get("type") == "error"
    assert err.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}service-unavailable") is not None
    await alice.close()


async def test_roster_versioning_returns_empty_result_when_up_to_date(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw", "a")
    c.send_raw(
        "<iq type='set' id='s1'><query xmlns='jabber:iq:roster'><item jid='carol@localhost' name='Carol'>"
        "<group>Friends</group></item></query></iq>"
    )
    r = await c.recv()
    assert r.get("id") == "s1" and r.get("type") == "result"
    c.send_raw("<iq type='get' id='g1'><query xmlns='jabber:iq:roster' ver=''/></iq>")
    r = await c.recv()
    q = r.find(f"{ROSTER}query")
    assert q is not None
    ver = q.get("ver")
    item = q.find(f"{ROSTER}item")
    assert item is not None and item.get("jid") == "carol@localhost" and item.get("name") == "Carol"
    assert item.findtext(f"{ROSTER}group") == "Friends"
    c.send_raw(f"<iq type='get' id='g2'><query xmlns='jabber:iq:roster' ver='{ver}'/></iq>")
    r = await c.recv()
    assert r.get("id") == "g2" and r.get("type") == "result" and len(r) == 0
    # a change produces a push with a new version
    c.send_raw(
        "<iq type='set' id='s2'><query xmlns='jabber:iq:roster'><item jid='carol@localhost' name='C'/></query></iq>"
    )
    msgs = [await c.recv(), await c.recv()]
    push = next(m for m in msgs if m.get("type") == "set")
    pq = push.find(f"{ROSTER}query")
    assert pq is not None and pq.get("ver") != ver
    assert push.get("from") is None
    await c.close()


@pytest.mark.parametrize(
    "item, condition",
    [
        ("<item jid='carol@localhost'><group>A</group><group>A</group></item>", "bad-request"),
        ("<item jid='carol@localhost'/><item jid='bob@localhost'/>", "bad-request"),
        ("<item jid='carol@localhost'><group></group></item>", "not-acceptable"),
        ("<item jid='@@bad'/>", "jid-malformed"),
    ],
)
async def test_roster_set_validation_errors(server: Server, item: str, condition: str) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw", "a")
    c.send_raw(f"<iq type='set' id='bad'><query xmlns='jabber:iq:roster'>{item}</query></iq>")
    r = await c.recv()
    assert r.get("type") == "error"
    assert r.find(f".//{{urn:ietf:params:xml:ns:xmpp-stanzas}}{condition}") is not None
    await c.close()


async def test_roster_set_ignores_subscription_values_but_remove(server: Server) -> None:
    """RFC 6121 §2.1.2.5: a client cannot grant itself a subscription; the value is ignored, not refused."""
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw", "a")
    await iq(c, "<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>", "g")
    c.send_raw(
        "<iq type='set' id='s'><query xmlns='jabber:iq:roster'>"
        "<item jid='carol@localhost' subscription='both' name='C'/></query></iq>"
    )
    msgs = [await c.recv(), await c.recv()]
    result = next(m for m in msgs if m.get("id") == "s")
    assert result.get("type") == "result"
    push = next(m for m in msgs if m.get("type") == "set")
    item = push.find(f"{ROSTER}query/{ROSTER}item")
    assert item is not None and item.get("subscription") == "none" and item.get("name") == "C"
    await c.close()


async def test_roster_of_another_user_is_forbidden(server: Server) -> None:
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw", "a")
    c.send_raw("<iq type='get' id='x' to='bob@localhost'><query xmlns='jabber:iq:roster'/></iq>")
    r = await c.recv()
    assert r.find(".//{urn:ietf:params:xml:ns:xmpp-stanzas}forbidden") is not None
    await c.close()


async def test_pending_subscription_request_redelivered_at_next_login(server: Server) -> None:
    alice = await RawClient.connect(server.ports["c2s"])
    await alice.login("alice", "pw", "a")
    alice.send_raw("<presence to='carol@localhost' type='subscribe'/>")
    alice.send_raw("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    while (await alice.recv()).get("id") != "sync":
        pass
    carol = await RawClient.connect(server.ports["c2s"])
    await carol.login("carol", "pw", "c")
    carol.send_raw("<presence/>")
    seen = []
    for _ in range(3):
        p = await carol.recv()
        seen.append((p.get("type"), p.get("from")))
        if p.get("type") == "subscribe":
            break
    assert ("subscribe", "alice@localhost") in seen
    await alice.close()
    await carol.close()


async def test_removing_a_contact_unsubscribes_both_ways(server: Server) -> None:
    await make_friends(server, "alice", "bob")
    alice = await slix_client(server, "alice@localhost/a", "pw")
    bob = await slix_client(server, "bob@localhost/b", "pw")
    await alice.get_roster()
    await bob.get_roster()
    alice.del_roster_item("bob@localhost")
    await wait_for(
        lambda: (
            "bob@localhost" not in alice.client_roster
            or alice.client_roster["bob@localhost"]["subscription"] == "remove"
            or not alice.client_roster.has_jid("bob@localhost")
        )
    )
    await wait_for(lambda: bob.client_roster["alice@localhost"]["subscription"] == "none")
    await disconnect(alice, bob)
