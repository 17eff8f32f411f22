"""The ads plugin across server restarts (same data_dir and database, a new ``Server`` object each time):
frequency caps keep their windows, and impressions delivered but not yet posted to the wallet before an
unclean stop are billed after the restart — exactly once, even after further restarts."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select

from plugins.ads.engine import HOUR, CampaignSpec
from plugins.ads.tables import impressions
from tests.helpers import RawClient, make_config, running_server
from xmppim.config import Config
from xmppim.server import Server

ADS = "ads.localhost"
CLIENT = "{jabber:client}"


def config(tmp_path: Path, **ads: Any) -> Config:
    settings: dict[str, Any] = {
        "every_n_messages": 1,
        "at_login": False,
        "user_cap_per_hour": 10,
        "user_cap_per_day": 50,
        "batch_size": 100,  # nothing is posted by batch size ...
        "flush_interval_s": 3600.0,  # ... nor by the timer during a test
    }
    settings.update(ads)
    return make_config(
        tmp_path,
        server={"domains": ["localhost"], "admins": ["admin@localhost"]},
        plugins={"enabled": ["wallet", "ads"], "ads": settings},
    )


def plugin(server: Server) -> Any:
    return server.plugins.loaded["ads"].instance


def ledger(server: Server) -> Any:
    return server.services["wallet"]


async def online(server: Server, user: str) -> RawClient:
    c = await RawClient.connect(server.ports["c2s"])
    await c.login(user, "pw", "r")
    c.send_raw("<presence/>")
    el = await c.recv()
    assert el.tag == f"{CLIENT}presence"
    return c


async def ads_after_messages(server: Server, c: RawClient, n: int) -> int:
    """Send ``n`` plain messages (each one a trigger) and count the ads that arrive."""
    for i in range(n):
        c.send_raw(f"<message to='nobody@localhost' type='chat' id='m{i}'><body>hi {i}</body></message>")
    got = 0
    while True:
        try:
            el = await c.recv(timeout=0.4)
        except TimeoutError:
            break
        if el.get("from") == ADS and el.get("type") == "headline":
            got += 1
    await plugin(server).engine.drain()
    return got


async def rows(server: Server) -> list[Any]:
    async with plugin(server).store.engine.connect() as conn:
        return list((await conn.execute(select(impressions).order_by(impressions.c.id))).all())


async def test_campaign_cap_holds_across_restart(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    async with running_server(cfg) as srv:
        for user in ("alice", "bob", "carol"):
            await srv.accounts.create(user, "localhost", "pw")
        await ledger(srv).mint("carol@localhost", 1000)
        c = await plugin(srv).engine.create(
            "carol@localhost",
            CampaignSpec(text="Shop", link="https://example.org", budget=100, price_impression=1, cap_hour=2),
        )
        alice = await online(srv, "alice")
        assert await ads_after_messages(srv, alice, 4) == 2  # the campaign's hourly cap
        await alice.close()
    async with running_server(cfg) as srv:
        eng = plugin(srv).engine
        now = eng.now().timestamp()
        assert eng.caps.count(("alice@localhost", c.id), now, HOUR) == 2
        assert eng.caps.count("alice@localhost", now, HOUR) == 2
        alice = await online(srv, "alice")
        assert await ads_after_messages(srv, alice, 4) == 0  # still capped after the restart
        bob = await online(srv, "bob")
        assert await ads_after_messages(srv, bob, 1) == 1  # the campaign itself still runs
        await alice.close()
        await bob.close()
        await eng.tick()
        assert eng.campaigns[c.id].impressions == 3


async def test_unposted_impressions_billed_once_after_unclean_stop(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    price = 3
    async with running_server(cfg) as srv:
        for user in ("alice", "bob", "carol"):
            await srv.accounts.create(user, "localhost", "pw")
        await ledger(srv).mint("carol@localhost", 1000)
        c = await plugin(srv).engine.create(
            "carol@localhost",
            CampaignSpec(text="Shop", link="https://example.org", budget=60, price_impression=price, cap_hour=5),
        )
        alice = await online(srv, "alice")
        bob = await online(srv, "bob")
        shown = await ads_after_messages(srv, alice, 3) + await ads_after_messages(srv, bob, 2)
        assert shown == 5
        assert (await ledger(srv).get_hold(c.hold_id)).captured == 0  # nothing posted yet
        stored = await rows(srv)
        assert len(stored) == 5 and not any(r.posted for r in stored)
        await alice.close()
        await bob.close()

        async def crash() -> None:  # an unclean stop: the plugin gets no chance to post the batch
            return None

        plugin(srv).stop = crash
    async with running_server(cfg) as srv:
        hold = await ledger(srv).get_hold(c.hold_id)
        assert hold.captured == shown * price
        camp = plugin(srv).engine.campaigns[c.id]
        assert (camp.impressions, camp.spent, camp.pending_amount) == (shown, shown * price, 0)
        assert all(r.posted and r.batch == 1 for r in await rows(srv))
        assert await ledger(srv).balance("carol@localhost") == 1000 - 60
        assert camp.stats()["remaining"] == 60 - shown * price
    async with running_server(cfg) as srv:  # a further restart bills nothing again
        assert (await ledger(srv).get_hold(c.hold_id)).captured == shown * price
        camp = plugin(srv).engine.campaigns[c.id]
        assert (camp.impressions, camp.spent, camp.batches) == (shown, shown * price, 1)
        await plugin(srv).engine.set_status(camp, "stopped")
        assert await ledger(srv).balance("carol@localhost") == 1000 - shown * price
        assert await ledger(srv).system_balance("revenue") == shown * price
        assert await ledger(srv).system_balance("escrow") == 0
        assert (await ledger(srv).verify()).ok


async def test_click_charged_before_restart_is_billed_once_and_not_charged_again(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    async with running_server(cfg) as srv:
        await srv.accounts.create("carol", "localhost", "pw")
        await ledger(srv).mint("carol@localhost", 1000)
        c = await plugin(srv).engine.create(
            "carol@localhost",
            CampaignSpec(text="Shop", link="https://example.org", budget=60, price_impression=1, price_click=5),
        )
        token = plugin(srv).signer.make(c.id, int(time.time()) + 3600)
        url = f"http://127.0.0.1:{srv.ports['http']}/plugins/ads/c/{token}"
        async with aiohttp.ClientSession() as http, http.get(url, allow_redirects=False) as r:
            assert r.status == 302
        await plugin(srv).engine.drain()
        assert (await ledger(srv).get_hold(c.hold_id)).captured == 0

        async def crash() -> None:
            return None

        plugin(srv).stop = crash
    async with running_server(cfg) as srv:
        assert (await ledger(srv).get_hold(c.hold_id)).captured == 5
        url = f"http://127.0.0.1:{srv.ports['http']}/plugins/ads/c/{token}"
        async with aiohttp.ClientSession() as http, http.get(url, allow_redirects=False) as r:
            assert r.status == 302 and r.headers["Location"] == "https://example.org"
        eng = plugin(srv).engine
        await eng.drain()
        await eng.tick()
        camp = eng.campaigns[c.id]
        assert (camp.clicks, camp.pending_clicks, camp.pending_amount) == (1, 0, 0)
        assert (await ledger(srv).get_hold(c.hold_id)).captured == 5
