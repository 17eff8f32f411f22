"""XEP-0049 private XML storage: slixmpp keeps XEP-0048 bookmarks there; raw XML pins the error cases."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import RawClient, disconnect, iq, slix_client
from xmppim.modules.xep0049_private import PrivateModule
from xmppim.server import Server
from xmppim.stanza import error_condition
from xmppim.storage.repositories.private import SQLPrivateStore

P = "{jabber:iq:private}"


@pytest.fixture
async def srv(server: Server) -> Server:
    await server.plugins.load(PrivateModule)  # a no-op once the entry point is installed
    return server


async def raw(srv: Server, user: str) -> RawClient:
    c = await RawClient.connect(srv.ports["c2s"])
    await c.login(user, "pw", "raw")
    return c


async def test_slixmpp_bookmarks_round_trip_through_private_storage(srv: Server) -> None:
    c = await slix_client(srv, "alice@localhost/p", "pw", plugins=("xep_0048",))
    from slixmpp.plugins.xep_0048 import Bookmarks

    bm = Bookmarks()
    bm.add_conference("tea@rooms.localhost", "alice", name="Tea party", autojoin=True)
    bm.add_url("https://example.org/rabbit-hole", name="Hole")
    await c.plugin["xep_0048"].set_bookmarks(bm, method="xep_0049", timeout=5)

    got = await c.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=5)
    confs = got["private"]["bookmarks"]["conferences"]
    assert [(x["jid"], x["nick"], x["name"]) for x in confs] == [("tea@rooms.localhost", "alice", "Tea party")]
    assert got["private"]["bookmarks"]["urls"][0]["url"] == "https://example.org/rabbit-hole"

    # Another user sees nothing of it.
    other = await slix_client(srv, "bob@localhost/p", "pw", plugins=("xep_0048",))
    empty = await other.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=5)
    assert len(empty["private"]["bookmarks"]["conferences"]) == 0
    info = await other.plugin["xep_0030"].get_info("localhost", timeout=5)
    assert "jabber:iq:private" in info["disco_info"]["features"]
    await disconnect(c, other)


async def test_several_elements_of_one_namespace_are_kept_together_and_replaced_together(srv: Server) -> None:
    c = await raw(srv, "alice")
    r = await iq(
        c,
        "<iq type='set' id='q'><query xmlns='jabber:iq:private'>"
        "<note xmlns='x:notes' n='1'>one</note><note xmlns='x:notes' n='2'>two</note>"
        "<prefs xmlns='x:prefs'><theme>dark</theme></prefs></query></iq>",
    )
    assert r.get("type") == "result"
    r = await iq(c, "<iq type='get' id='q'><query xmlns='jabber:iq:private'><note xmlns='x:notes'/></query></iq>")
    notes = r.findall(f"{P}query/{{x:notes}}note")
    assert [(n.get("n"), n.text) for n in notes] == [("1", "one"), ("2", "two")]
    r = await iq(c, "<iq type='get' id='q'><query xmlns='jabber:iq:private'><prefs xmlns='x:prefs'/></query></iq>")
    assert r.findtext(f"{P}query/{{x:prefs}}prefs/{{x:prefs}}theme") == "dark"

    r = await iq(c, "<iq type='set' id='q'><query xmlns='jabber:iq:private'><note xmlns='x:notes' n='3'/></query></iq>")
    assert r.get("type") == "result"
    r = await iq(c, "<iq type='get' id='q'><query xmlns='jabber:iq:private'><note xmlns='x:notes'/></query></iq>")
    assert [n.get("n") for n in r.findall(f"{P}query/{{x:notes}}note")] == ["3"]
    await c.close()


async def test_nothing_stored_returns_the_empty_element_asked_for(srv: Server) -> None:
    c = await raw(srv, "alice")
    r = await iq(c, "<iq type='get' id='q'><query xmlns='jabber:iq:private'><x xmlns='x:none'/></query></iq>")
    assert r.get("type") == "result"
    q = r.find(f"{P}query")
    assert q is not None and [ch.tag for ch in q] == ["{x:none}x"] and len(q[0]) == 0
    await c.close()


@pytest.mark.parametrize(
    "child",
    [
        "<foo/>",  # inherits jabber:iq:private
        "<message xmlns='jabber:client'/>",
        "<q xmlns='jabber:iq:roster'/>",
        "<x xmlns='http://jabber.org/protocol/muc'/>",
        "<vCard xmlns='vcard-temp'><FN>Not via private</FN></vCard>",
    ],
)
async def test_reserved_namespaces_are_not_acceptable(srv: Server, child: str) -> None:
    c = await raw(srv, "alice")
    for t in ("set", "get"):
        r = await iq(c, f"<iq type='{t}' id='q'><query xmlns='jabber:iq:private'>{child}</query></iq>")
        assert r.get("type") == "error" and error_condition(r) == "not-acceptable", t
    assert await SQLPrivateStore(srv.engine).count("alice@localhost") == 0
    await c.close()


async def test_another_users_private_storage_is_forbidden(srv: Server) -> None:
    a = await raw(srv, "alice")
    r = await iq(a, "<iq type='set' id='q'><query xmlns='jabber:iq:private'><s xmlns='x:secret'>42</s></query></iq>")
    assert r.get("type") == "result"
    b = await raw(srv, "bob")
    for t in ("get", "set"):
        for to in ("alice@localhost", "localhost"):
            r = await iq(
                b,
                f"<iq type='{t}' id='q' to='{to}'><query xmlns='jabber:iq:private'>"
                "<s xmlns='x:secret'>0</s></query></iq>",
            )
            assert r.get("type") == "error" and error_condition(r) == "forbidden", (t, to)
    r = await iq(a, "<iq type='get' id='q'><query xmlns='jabber:iq:private'><s xmlns='x:secret'/></query></iq>")
    assert r.findtext(f"{P}query/{{x:secret}}s") == "42"
    # Addressed to one's own bare JID is the same as no 'to'.
    r = await iq(
        a,
        "<iq type='get' id='q' to='alice@localhost'><query xmlns='jabber:iq:private'><s xmlns='x:secret'/>"
        "</query></iq>",
    )
    assert r.findtext(f"{P}query/{{x:secret}}s") == "42"
    await a.close()
    await b.close()


async def test_malformed_queries(srv: Server) -> None:
    c = await raw(srv, "alice")
    r = await iq(c, "<iq type='get' id='q'><query xmlns='jabber:iq:private'/></iq>")
    assert error_condition(r) == "not-acceptable"  # §2: at least one child, else Not Acceptable
    r = await iq(c, "<iq type='set' id='q'><query xmlns='jabber:iq:private'/></iq>")
    assert error_condition(r) == "not-acceptable"
    r = await iq(
        c, "<iq type='get' id='q'><query xmlns='jabber:iq:private'><a xmlns='x:a'/><b xmlns='x:b'/></query></iq>"
    )
    assert error_condition(r) == "bad-request"  # one namespace per get
    await c.close()


async def test_size_and_namespace_count_limits(srv: Server) -> None:
    c = await raw(srv, "alice")
    big = "z" * 70_000
    r = await iq(c, f"<iq type='set' id='q'><query xmlns='jabber:iq:private'><b xmlns='x:big'>{big}</b></query></iq>")
    assert error_condition(r) == "not-acceptable"
    many = "".join(f"<e xmlns='x:ns{i}'/>" for i in range(65))
    r = await iq(c, f"<iq type='set' id='q'><query xmlns='jabber:iq:private'>{many}</query></iq>")
    assert error_condition(r) == "resource-constraint"
    assert await SQLPrivateStore(srv.engine).count("alice@localhost") == 0
    ok = "".join(f"<e xmlns='x:ns{i}'/>" for i in range(64))
    r = await iq(c, f"<iq type='set' id='q'><query xmlns='jabber:iq:private'>{ok}</query></iq>")
    assert r.get("type") == "result"
    # Replacing an existing namespace is still allowed at the limit; a new one is not.
    r = await iq(c, "<iq type='set' id='q'><query xmlns='jabber:iq:private'><e xmlns='x:ns3'>v</e></query></iq>")
    assert r.get("type") == "result"
    r = await iq(c, "<iq type='set' id='q'><query xmlns='jabber:iq:private'><e xmlns='x:new'/></query></iq>")
    assert error_condition(r) == "resource-constraint"
    await c.close()


# ---------------------------------------------------------------- repository, on every backend
# (fixtures repo_db / repo_engine: tests/conftest.py)


async def test_private_store_upserts_and_deletes(repo_engine: AsyncEngine) -> None:
    s = SQLPrivateStore(repo_engine)
    assert await s.get("a@x", "ns") is None
    await s.put("a@x", "ns", "<one/>")
    await s.put("a@x", "ns", "<two/>")  # an upsert: no IntegrityError, one row
    await s.put("a@x", "vcard-temp", "<v/>")
    await s.put("b@x", "ns", "<b/>")
    assert await s.get("a@x", "ns") == "<two/>"
    assert await s.count("a@x") == 2 and await s.has("a@x", "vcard-temp")
    assert await s.delete("a@x", "vcard-temp") and not await s.delete("a@x", "vcard-temp")
    assert await s.delete_owner("a@x") == 1
    assert await s.count("a@x") == 0 and await s.get("b@x", "ns") == "<b/>"
