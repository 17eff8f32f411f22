"""XEP-0054 vcard-temp: slixmpp's xep_0054 publishes and reads vCards; raw XML pins the error cases."""

from __future__ import annotations

import pytest
from slixmpp.exceptions import IqError

from tests.helpers import RawClient, disconnect, iq, slix_client
from xmppim.modules.xep0054_vcard import VCardModule
from xmppim.server import Server
from xmppim.stanza import error_condition
from xmppim.storage.repositories.private import SQLPrivateStore

V = "{vcard-temp}"


@pytest.fixture
async def srv(server: Server) -> Server:
    await server.plugins.load(VCardModule)  # a no-op once the entry point is installed
    return server


async def raw(srv: Server, user: str) -> RawClient:
    c = await RawClient.connect(srv.ports["c2s"])
    await c.login(user, "pw", "raw")
    return c


async def test_slixmpp_publishes_and_reads_back_own_and_others_vcards(srv: Server) -> None:
    alice = await slix_client(srv, "alice@localhost/v", "pw", plugins=("xep_0054",))
    bob = await slix_client(srv, "bob@localhost/v", "pw", plugins=("xep_0054",))
    vc = alice.plugin["xep_0054"].make_vcard()
    vc["FN"] = "Alice Liddell"
    vc["NICKNAME"] = "alice"
    vc["DESC"] = "Curiouser & curiouser <3"
    await alice.plugin["xep_0054"].publish_vcard(vc, timeout=5)

    own = await alice.plugin["xep_0054"].get_vcard("alice@localhost", timeout=5)
    assert own["vcard_temp"]["FN"] == "Alice Liddell"
    seen = await bob.plugin["xep_0054"].get_vcard("alice@localhost", timeout=5)
    assert seen["from"] == "alice@localhost"
    assert seen["vcard_temp"]["NICKNAME"] == ["alice"]
    assert seen["vcard_temp"]["DESC"] == "Curiouser & curiouser <3"

    info = await bob.plugin["xep_0030"].get_info("localhost", timeout=5)
    assert "vcard-temp" in info["disco_info"]["features"]
    await disconnect(alice, bob)


async def test_own_vcard_is_empty_when_none_was_stored_and_empty_set_deletes(srv: Server) -> None:
    c = await raw(srv, "carol")
    r = await iq(c, "<iq type='get' id='q'><vCard xmlns='vcard-temp'/></iq>")
    assert r.get("type") == "result"
    card = r.find(f"{V}vCard")
    assert card is not None and len(card) == 0

    r = await iq(c, "<iq type='set' id='q'><vCard xmlns='vcard-temp'><FN>Carol</FN></vCard></iq>")
    assert r.get("type") == "result"
    r = await iq(c, "<iq type='get' id='q' to='carol@localhost'><vCard xmlns='vcard-temp'/></iq>")
    assert r.findtext(f"{V}vCard/{V}FN") == "Carol"

    r = await iq(c, "<iq type='set' id='q'><vCard xmlns='vcard-temp'/></iq>")
    assert r.get("type") == "result"
    assert await SQLPrivateStore(srv.engine).get("carol@localhost", "vcard-temp") is None
    r = await iq(c, "<iq type='get' id='q'><vCard xmlns='vcard-temp'/></iq>")
    card = r.find(f"{V}vCard")
    assert card is not None and len(card) == 0
    await c.close()


async def test_no_vcard_and_no_account_give_the_same_error(srv: Server) -> None:
    """§3.3 (1.3.0): service-unavailable in both cases, so vCards cannot be used to harvest accounts."""
    bob = await slix_client(srv, "bob@localhost/v", "pw", plugins=("xep_0054",))
    for target in ("carol@localhost", "nosuchuser@localhost"):
        with pytest.raises(IqError) as e:
            await bob.plugin["xep_0054"].get_vcard(target, timeout=5)
        assert e.value.condition == "service-unavailable", target
    await disconnect(bob)


async def test_setting_someone_elses_vcard_is_forbidden(srv: Server) -> None:
    a = await raw(srv, "alice")
    r = await iq(a, "<iq type='set' id='q'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>")
    assert r.get("type") == "result"
    b = await raw(srv, "bob")
    r = await iq(b, "<iq type='set' id='q' to='alice@localhost'><vCard xmlns='vcard-temp'><FN>Pwned</FN></vCard></iq>")
    assert r.get("type") == "error" and error_condition(r) == "forbidden"
    r = await iq(b, "<iq type='set' id='q' to='localhost'><vCard xmlns='vcard-temp'><FN>Pwned</FN></vCard></iq>")
    assert error_condition(r) == "forbidden"
    r = await iq(b, "<iq type='get' id='q' to='alice@localhost'><vCard xmlns='vcard-temp'/></iq>")
    assert r.findtext(f"{V}vCard/{V}FN") == "Alice"
    await a.close()
    await b.close()


async def test_oversized_vcard_is_refused_and_the_old_one_kept(srv: Server) -> None:
    a = await raw(srv, "alice")
    r = await iq(a, "<iq type='set' id='q'><vCard xmlns='vcard-temp'><FN>Small</FN></vCard></iq>")
    assert r.get("type") == "result"
    photo = "A" * 70_000  # over the 64 KiB default, under the 256 KiB stanza limit
    r = await iq(
        a,
        "<iq type='set' id='q'><vCard xmlns='vcard-temp'><FN>Big</FN>"
        f"<PHOTO><TYPE>image/png</TYPE><BINVAL>{photo}</BINVAL></PHOTO></vCard></iq>",
    )
    assert r.get("type") == "error" and error_condition(r) == "not-acceptable"
    r = await iq(a, "<iq type='get' id='q'><vCard xmlns='vcard-temp'/></iq>")
    assert r.findtext(f"{V}vCard/{V}FN") == "Small"
    # Just under the limit is fine.
    ok = "A" * 60_000
    r = await iq(
        a, f"<iq type='set' id='q'><vCard xmlns='vcard-temp'><PHOTO><BINVAL>{ok}</BINVAL></PHOTO></vCard></iq>"
    )
    assert r.get("type") == "result"
    await a.close()


async def test_vcard_of_the_server_and_malformed_requests(srv: Server) -> None:
    a = await raw(srv, "alice")
    r = await iq(a, "<iq type='get' id='q' to='localhost'><vCard xmlns='vcard-temp'/></iq>")
    assert error_condition(r) == "service-unavailable"
    r = await iq(a, "<iq type='get' id='q'><notvcard xmlns='vcard-temp'/></iq>")
    assert error_condition(r) == "bad-request"
    await a.close()


async def test_removing_the_account_removes_its_vcard(srv: Server) -> None:
    a = await raw(srv, "alice")
    r = await iq(a, "<iq type='set' id='q'><vCard xmlns='vcard-temp'><FN>Alice</FN></vCard></iq>")
    assert r.get("type") == "result"
    store = SQLPrivateStore(srv.engine)
    assert await store.get("alice@localhost", "vcard-temp") is not None
    a.send_raw("<iq type='set' id='q'><query xmlns='jabber:iq:register'><remove/></query></iq>")
    assert await a.closed()
    for _ in range(50):
        if await store.get("alice@localhost", "vcard-temp") is None:
            break
        import asyncio

        await asyncio.sleep(0.02)
    assert await store.get("alice@localhost", "vcard-temp") is None
