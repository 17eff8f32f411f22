"""The ads plugin from real clients: delivery triggers and caps, untouched user messages, E2EE messages
ignored, premium, budget exhaustion against the wallet ledger, signed clicks over HTTP, ad-hoc commands."""

from __future__ import annotations

import asyncio
import copy
from typing import Any
from xml.etree.ElementTree import Element

import aiohttp
import pytest
from slixmpp.exceptions import IqError

from plugins.ads.engine import CampaignSpec, Targeting
from tests.helpers import RawClient, disconnect, slix_client
from xmppim.server import Server
from xmppim.xml.parser import StanzaReceived, StreamParser
from xmppim.xml.serialize import serialize

ADS = "ads.localhost"
OOB = "{jabber:x:oob}"
HINTS = "{urn:xmpp:hints}"
ADMIN_TOKEN = "s3cret-token"
CLIENT = "{jabber:client}"


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {
        "server": {"domains": ["localhost"], "admins": ["admin@localhost"]},
        "plugins": {
            "enabled": ["wallet", "ads"],
            "ads": {
                "every_n_messages": 3,
                "at_login": False,
                "user_cap_per_hour": 2,
                "admin_token": ADMIN_TOKEN,
                "batch_size": 2,
                "premium_price_per_day": 5,
                "topics": {"music": ["guitar", "concert"], "games": ["chess"]},
            },
        },
    }


def plugin(server: Server) -> Any:
    return server.plugins.loaded["ads"].instance


def ledger(server: Server) -> Any:
    return server.services["wallet"]


async def campaign(server: Server, budget: int = 100, price: int = 2, **kw: Any) -> Any:
    await ledger(server).mint("carol@localhost", 1000, memo="advertiser funds")
    spec = CampaignSpec(text="Visit Example", link="https://example.org/shop", budget=budget,
                        price_impression=price, **kw)
    return await plugin(server).engine.create("carol@localhost", spec)


async def online(server: Server, user: str, resource: str = "r") -> RawClient:
    c = await RawClient.connect(server.ports["c2s"])
    await c.login(user, "pw", resource)
    c.send_raw("<presence/>")
    el = await c.recv()
    assert el.tag == f"{CLIENT}presence"
    return c


async def drain(c: RawClient, seconds: float = 0.3) -> list[Element]:
    """Everything that arrives within ``seconds`` of silence."""
    out: list[Element] = []
    while True:
        try:
            out.append(await c.recv(timeout=seconds))
        except TimeoutError:
            return out


def ads_in(stanzas: list[Element]) -> list[Element]:
    return [s for s in stanzas if s.get("from") == ADS and s.get("type") == "headline"]


def parse(xml: str) -> Element:
    p = StreamParser()
    p.feed(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")
    evs = p.feed(xml.encode())
    el = [e for e in evs if isinstance(e, StanzaReceived)][0].element
    return el


def without_from(el: Element) -> bytes:
    el = copy.deepcopy(el)
    el.attrib.pop("from", None)
    return serialize(el)


async def test_ad_after_every_nth_message_within_cap_and_messages_untouched(server: Server) -> None:
    c = await campaign(server)
    alice = await online(server, "alice", "a")
    bob = await online(server, "bob", "b")
    await drain(alice)
    await drain(bob)
    received_ads: list[Element] = []
    for i in range(1, 13):
        xml = (
            f"<message to='bob@localhost/b' type='chat' id='m{i}' xml:lang='en'>"
            f"<body>hello number {i} &amp; more</body><thread>t1</thread>"
            "<active xmlns='http://jabber.org/protocol/chatstates'/>"
            "<x xmlns='urn:example:custom' a='1'><y>z</y></x></message>"
        )
        alice.send_raw(xml)
        got = await bob.recv()
        # The recipient's copy is the sent stanza, byte for byte, apart from the server-stamped 'from'.
        assert got.get("from") == "alice@localhost/a"
        assert without_from(got) == serialize(parse(xml))
        if i in (3, 6):
            received_ads.append(await alice.recv(timeout=5))  # the ad after the 3rd and the 6th message
            assert ads_in(received_ads[-1:]), serialize(received_ads[-1])
        received_ads += ads_in(await drain(alice, 0.05))
        assert len(received_ads) == i // 3 if i < 9 else 2
    received_ads += ads_in(await drain(alice, 0.5))
    # 12 messages = 4 triggers, but the operator cap is 2 per hour.
    assert len(received_ads) == 2
    assert plugin(server).counts["alice@localhost"] == 12
    ad = received_ads[0]
    assert ad.get("to") == "alice@localhost/a"
    url = ad.findtext(f"{OOB}x/{OOB}url") or ""
    assert "/plugins/ads/c/" in url
    assert "Visit Example" in (ad.findtext(f"{CLIENT}body") or "") and url in (ad.findtext(f"{CLIENT}body") or "")
    assert ad.find(f"{HINTS}no-store") is not None and ad.find(f"{HINTS}no-copy") is not None
    assert bob_has_no_ads(await drain(bob))
    await plugin(server).engine.tick()
    assert c.impressions == 2 and c.spent == 4
    hold = await ledger(server).get_hold(c.hold_id)
    assert hold.captured == 4
    await alice.close()
    await bob.close()


def bob_has_no_ads(stanzas: list[Element]) -> bool:
    return not ads_in(stanzas)


async def test_encrypted_and_private_messages_trigger_nothing(server: Server) -> None:
    await campaign(server)
    p = plugin(server)
    alice = await online(server, "alice", "a")
    bob = await online(server, "bob", "b")
    omemo = (
        "<message to='bob@localhost/b' type='chat' id='e{n}'>"
        "<encrypted xmlns='eu.siacs.conversations.axolotl'><header sid='1'><key rid='2'>AAAA</key>"
        "<iv>BBBB</iv></header><payload>CCCC</payload></encrypted>"
        "<body>I sent you an OMEMO encrypted message but your client doesn't seem to support that.</body>"
        "<store xmlns='urn:xmpp:hints'/></message>"
    )
    others = [
        "<message to='bob@localhost/b' type='chat' id='o{n}'><openpgp xmlns='urn:xmpp:openpgp:0'>DDDD</openpgp>"
        "<body>This message is encrypted (OpenPGP).</body></message>",
        "<message to='bob@localhost/b' type='chat' id='p{n}'><body>?OTRv3 abc</body></message>",
        "<message to='bob@localhost/b' type='chat' id='s{n}'><composing xmlns='http://jabber.org/protocol/chatstates'/>"
        "</message>",
    ]
    for n in range(7):
        for tmpl in [omemo, *others]:
            xml = tmpl.format(n=n)
            alice.send_raw(xml)
            got = await bob.recv()
            assert without_from(got) == serialize(parse(xml))
    assert p.counts.get("alice@localhost", 0) == 0
    assert ads_in(await drain(alice)) == []
    # The same conversation in plain text does trigger (so the silence above means something).
    for n in range(3):
        alice.send_raw(f"<message to='bob@localhost/b' type='chat' id='q{n}'><body>plain {n}</body></message>")
        await bob.recv()
    assert p.counts["alice@localhost"] == 3
    assert len(ads_in(await drain(alice))) == 1
    await alice.close()
    await bob.close()


async def test_premium_user_gets_no_ads_and_pays(server: Server) -> None:
    await campaign(server)
    await ledger(server).mint("alice@localhost", 500)
    alice = await online(server, "alice", "a")
    bob = await online(server, "bob", "b")
    await drain(alice)
    alice.send_raw(f"<message to='{ADS}' type='chat' id='prem1'><body>premium 30d</body></message>")
    answer = await alice.recv()
    assert answer.get("from") == ADS and "Ad-free until" in (answer.findtext(f"{CLIENT}body") or "")
    assert await ledger(server).balance("alice@localhost") == 500 - 30 * 5
    assert await ledger(server).system_balance("revenue") == 150
    for i in range(9):
        alice.send_raw(f"<message to='bob@localhost/b' type='chat' id='x{i}'><body>hi {i}</body></message>")
        await bob.recv()
    assert ads_in(await drain(alice)) == []
    assert plugin(server).counts["alice@localhost"] == 9  # counted, but premium blocks delivery
    # bot@ads.localhost answers too; buying again extends the period (a new start, a new charge)
    alice.send_raw("<message to='bot@ads.localhost' type='chat' id='prem2'><body>premium 1d</body></message>")
    answer = await alice.recv()
    assert answer.get("from") == "bot@ads.localhost"
    assert await ledger(server).balance("alice@localhost") == 500 - 31 * 5
    await alice.close()
    await bob.close()


async def test_campaign_stops_exactly_when_budget_runs_out(server: Server) -> None:
    # budget 7, price 2: three impressions (6 coins), then nothing more; 1 coin goes back.
    c = await campaign(server, budget=7, price=2, cap_hour=100, cap_day=100)
    p = plugin(server)
    p.cfg.every_n_messages = 1
    p.engine.policy.user_cap_hour = 100
    users = [await online(server, u, "x") for u in ("alice", "bob")]
    target = await online(server, "carol", "t")
    ads = 0
    for round_ in range(4):
        for u in users:
            u.send_raw(f"<message to='carol@localhost/t' type='chat' id='b{round_}'><body>yo</body></message>")
            await target.recv()
            ads += len(ads_in(await drain(u, 0.1)))
    for u in users:
        ads += len(ads_in(await drain(u, 0.3)))
    assert ads == 3
    await p.engine.drain()
    assert c.status == "exhausted"
    hold = await ledger(server).get_hold(c.hold_id)
    assert hold.status == "posted"
    assert hold.captured == c.impressions * c.price_impression == 6
    assert await ledger(server).balance("carol@localhost") == 1000 - 6
    assert await ledger(server).system_balance("escrow") == 0
    for u in [*users, target]:
        await u.close()


async def test_headline_to_user_without_session_is_not_counted(server: Server) -> None:
    c = await campaign(server)
    p = plugin(server)
    alice = await online(server, "alice", "a")
    session = server.sessions.get(alice.jid)
    assert session is not None
    await alice.close()
    for _ in range(50):
        if server.sessions.get(alice.jid) is None:
            break
        await asyncio.sleep(0.02)
    # The session is gone: the router drops the headline, no impression, reservation freed.
    assert await p.show_ad(session) is False
    assert c.reserved == 0 and c.pending_impressions == 0 and p.delivered_ads == 0


async def test_clicks_forged_expired_and_valid(server: Server) -> None:
    c = await campaign(server, price=1, price_click=5)
    p = plugin(server)
    base = f"http://127.0.0.1:{server.ports['http']}/plugins/ads/c/"
    good = p.signer.make(c.id, 4_000_000_000)
    expired = p.signer.make(c.id, 1000)
    forged = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    async with aiohttp.ClientSession() as http:
        for token, status in ((forged, 403), ("1.2.3", 403), (expired, 410)):
            async with http.get(base + token, allow_redirects=False) as r:
                assert r.status == status
        assert c.pending_clicks == 0 and c.pending_amount == 0
        async with http.get(base + good, allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "https://example.org/shop"
        async with http.get(base + good, allow_redirects=False) as r:  # the same token again: free
            assert r.status == 302
        assert c.stats()["clicks"] == 1 and c.stats()["spend"] == 5
        url = f"http://127.0.0.1:{server.ports['http']}/plugins/ads/campaigns/{c.id}/stats"
        async with http.get(url) as r:
            assert r.status == 401
        async with http.get(url, headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 403
        async with http.get(url, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as r:
            assert r.status == 200
            stats = await r.json()
            assert stats["clicks"] == 1 and stats["spend"] == 5 and stats["impressions"] == 0
    await p.engine.set_status(c, "stopped")
    hold = await ledger(server).get_hold(c.hold_id)
    assert hold.captured == 5 and hold.status == "posted"


async def test_adhoc_create_campaign_and_insufficient_funds(server: Server) -> None:
    await ledger(server).mint("bob@localhost", 50)
    bob = await slix_client(server, "bob@localhost/a", "pw", plugins=("xep_0050", "xep_0004"))
    adhoc = bob.plugin["xep_0050"]
    items = await adhoc.get_commands(ADS, timeout=5)
    nodes = {i[1] for i in items["disco_items"]["items"]}
    assert {"create-campaign", "campaign-stats", "pause-campaign", "go-ad-free", "settings"} <= nodes
    assert "admin-kill-switch" not in nodes

    async def create(budget: str) -> Any:
        r = await adhoc.send_command(ADS, "create-campaign", timeout=5)
        sid = r["command"]["sessionid"]
        form = bob.plugin["xep_0004"].make_form(ftype="submit")
        for var, val in (("text", "Bob's bikes"), ("link", "https://bikes.example"), ("budget", budget),
                         ("price_impression", "2"), ("price_click", "3")):
            form.add_field(var=var, value=val)
        iq = bob.make_iq_set(ito=ADS)
        iq["command"]["node"] = "create-campaign"
        iq["command"]["sessionid"] = sid
        iq["command"]["action"] = "complete"
        iq["command"].append(form)
        return await iq.send(timeout=5)

    r = await create("500")
    assert r["command"]["status"] == "completed"
    notes = r["command"]["notes"]
    assert notes and notes[0][0] == "error" and "insufficient-funds" in notes[0][1]
    assert await ledger(server).balance("bob@localhost") == 50
    r = await create("40")
    notes = r["command"]["notes"]
    assert notes[0][0] == "info" and "created" in notes[0][1]
    assert await ledger(server).balance("bob@localhost") == 10
    mine = [c for c in plugin(server).engine.campaigns.values() if c.advertiser == "bob@localhost"]
    assert len(mine) == 1 and mine[0].budget == 40 and mine[0].price_click == 3
    # Stats: one campaign → shown at once; carol (no campaigns) sees none of bob's.
    r = await adhoc.send_command(ADS, "campaign-stats", timeout=5)
    fields = r["command"]["form"].get_values()
    assert fields["budget"] == "40" and fields["impressions"] == "0"
    carol = await slix_client(server, "carol@localhost/c", "pw", plugins=("xep_0050", "xep_0004"))
    r = await carol.plugin["xep_0050"].send_command(ADS, "campaign-stats", timeout=5)
    assert "no campaigns" in r["command"]["notes"][0][1]
    await disconnect(bob, carol)


async def test_kill_switch_and_opt_out(server: Server) -> None:
    await campaign(server)
    p = plugin(server)
    alice = await online(server, "alice", "a")
    bob = await online(server, "bob", "b")
    await drain(alice)

    async def burst(n: int) -> int:
        for i in range(n):
            alice.send_raw(f"<message to='bob@localhost/b' type='chat'><body>m {i}</body></message>")
            await bob.recv()
        return len(ads_in(await drain(alice, 0.5)))

    p.kill = True
    assert await burst(3) == 0
    p.kill = False
    p.cfg.opt_out_domains = ["localhost"]
    assert await burst(3) == 0
    p.cfg.opt_out_domains = []
    alice.send_raw(f"<message to='{ADS}' type='chat' id='o1'><body>ads off</body></message>")
    assert "off" in ((await alice.recv()).findtext(f"{CLIENT}body") or "")
    assert await burst(3) == 0
    alice.send_raw(f"<message to='{ADS}' type='chat' id='o2'><body>ads on</body></message>")
    assert "on" in ((await alice.recv()).findtext(f"{CLIENT}body") or "")
    assert await burst(3) == 1
    await alice.close()
    await bob.close()


async def test_ad_at_login_locale_targeting_and_blocking(server: Server) -> None:
    c = await campaign(server, targeting=Targeting(locales=("de",)))
    p = plugin(server)
    p.cfg.at_login = True
    alice = await online(server, "alice", "a")  # stream xml:lang defaults to 'en': not targeted
    assert ads_in(await drain(alice)) == []
    await alice.close()
    de = await RawClient.connect(server.ports["c2s"])
    await de.login("alice", "pw", "de")
    server.sessions.get(de.jid).lang = "de-AT"  # type: ignore[union-attr]  # as if xml:lang='de-AT'
    de.send_raw("<presence/>")
    got = ads_in(await drain(de, 0.5))
    assert len(got) == 1 and got[0].get("to") == de.jid
    assert c.stats()["impressions"] == 1
    # Blocking ads.localhost (XEP-0191) stops ads: no reservation, no charge.
    de.send_raw(f"<iq type='set' id='blk'><block xmlns='urn:xmpp:blocking'><item jid='{ADS}'/></block></iq>")
    await drain(de, 0.3)
    session = server.sessions.get(de.jid)
    assert await p.show_ad(session) is False
    assert c.stats()["impressions"] == 1 and c.reserved == 0
    await de.close()


async def test_footer_mode_adds_an_element_and_never_edits_the_body(server: Server) -> None:
    c = await campaign(server)
    p = plugin(server)
    p.cfg.footer = True
    p.cfg.every_n_messages = 0
    alice = await online(server, "alice", "a")
    bob = await online(server, "bob", "b")
    await drain(bob)
    xml = "<message to='bob@localhost' type='chat' id='f1'><body>see you at 8</body></message>"
    alice.send_raw(xml)
    got = await bob.recv()
    assert got.findtext(f"{CLIENT}body") == "see you at 8"
    ad = got.find("{urn:xmppim:ads:0}ad")
    assert ad is not None and ad.get("campaign") == str(c.id)
    got.remove(ad)
    assert without_from(got) == serialize(parse(xml))
    assert c.stats()["impressions"] == 1
    # Encrypted messages get no footer.
    enc = ("<message to='bob@localhost' type='chat' id='f2'><encrypted xmlns='urn:xmpp:omemo:2'>"
           "<payload>AA</payload></encrypted><body>fallback</body></message>")
    alice.send_raw(enc)
    got = await bob.recv()
    assert without_from(got) == serialize(parse(enc))
    assert c.stats()["impressions"] == 1
    await alice.close()
    await bob.close()


async def test_adhoc_go_ad_free_settings_pause_and_kill_switch(server: Server) -> None:
    c = await campaign(server)
    await ledger(server).mint("alice@localhost", 100)
    await server.accounts.create("admin", "localhost", "pw")
    alice = await slix_client(server, "alice@localhost/a", "pw", plugins=("xep_0050", "xep_0004"))
    adhoc = alice.plugin["xep_0050"]

    async def run(client: Any, node: str, values: dict[str, Any]) -> Any:
        r = await client.plugin["xep_0050"].send_command(ADS, node, timeout=5)
        form = client.plugin["xep_0004"].make_form(ftype="submit")
        for var, val in values.items():
            form.add_field(var=var, value=val)
        iq = client.make_iq_set(ito=ADS)
        iq["command"]["node"] = node
        iq["command"]["sessionid"] = r["command"]["sessionid"]
        iq["command"]["action"] = "complete"
        iq["command"].append(form)
        return await iq.send(timeout=5)

    r = await run(alice, "go-ad-free", {"days": "7"})
    assert "Ad-free until" in r["command"]["notes"][0][1]
    assert await ledger(server).balance("alice@localhost") == 100 - 7 * 5
    r = await adhoc.send_command(ADS, "settings", timeout=5)
    assert "Ad-free until" in str(r["command"]["form"]["instructions"])
    r = await run(alice, "settings", {"opt_out": True, "topics": []})
    assert plugin(server).users["alice@localhost"].opt_out is True
    # Only the advertiser (carol) may pause her campaign; alice sees none.
    r = await adhoc.send_command(ADS, "pause-campaign", timeout=5)
    assert "no running campaigns" in r["command"]["notes"][0][1]
    carol = await slix_client(server, "carol@localhost/c", "pw", plugins=("xep_0050", "xep_0004"))
    r = await run(carol, "pause-campaign", {"campaign": str(c.id), "action": "pause"})
    assert c.status == "paused"
    r = await run(carol, "pause-campaign", {"campaign": str(c.id), "action": "stop"})
    assert c.status == "stopped"
    assert (await ledger(server).get_hold(c.hold_id)).status == "voided"
    assert await ledger(server).balance("carol@localhost") == 1000
    # Kill switch: admins only.
    with pytest.raises(IqError) as err:
        await adhoc.send_command(ADS, "admin-kill-switch", timeout=5)
    assert err.value.condition == "forbidden"
    assert plugin(server).kill is False
    admin = await slix_client(server, "admin@localhost/x", "pw", plugins=("xep_0050", "xep_0004"))
    await run(admin, "admin-kill-switch", {"kill_switch": True})
    assert plugin(server).kill is True and not plugin(server).delivering()
    await disconnect(alice, carol, admin)


async def test_topic_targeting_counts_only_opted_in_users_and_stores_no_text(server: Server) -> None:
    c = await campaign(server, targeting=Targeting(topics=("music",)))
    p = plugin(server)
    p.cfg.every_n_messages = 2
    alice = await online(server, "alice", "a")
    bob = await online(server, "bob", "b")
    alice.send_raw(f"<message to='{ADS}' type='chat' id='t1'><body>topics music</body></message>")
    assert "music" in ((await alice.recv()).findtext(f"{CLIENT}body") or "")
    secret = "zebraguitar"  # a word no table may ever contain
    for i in range(2):
        alice.send_raw(f"<message to='bob@localhost/b' type='chat'><body>{secret} guitar concert {i}</body></message>")
        await bob.recv()
        bob.send_raw(f"<message to='alice@localhost/a' type='chat'><body>{secret} guitar chess {i}</body></message>")
    got_alice = ads_in(await drain(alice))
    got_bob = ads_in(await drain(bob))
    assert p.users["alice@localhost"].counts == {"music": 4}
    assert p.users["bob@localhost"].counts == {}  # bob never opted in: nothing counted
    assert p.counts["bob@localhost"] == 2
    assert len(got_alice) == 1 and got_bob == []  # the music campaign only reaches opted-in alice
    assert c.stats()["impressions"] == 1
    await p.engine.tick()
    await alice.close()
    await bob.close()
    data = b"".join(f.read_bytes() for f in server.config.data_path.glob("xmppim.db*"))
    assert secret.encode() not in data
