"""Crash points of a batch post (mark → post → complete) and the restart path of the ads engine, against
the real wallet ledger on SQLite: every delivered impression is billed exactly once while its hold is open,
never twice, and the caps' windows come back from the stored impressions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from plugins.ads.engine import DAY, HOUR, AdEngine, Campaign, CampaignSpec, Policy, Viewer
from plugins.ads.store import AdsStore
from plugins.ads.tables import impressions
from tests.ads.conftest import World, make_world

USERS = ["u0@a.example", "u1@a.example", "u2@a.example"]
ADVERTISER = "shop@a.example"
PRICE = 2
POLICY = Policy(batch_size=100, user_cap_hour=10, user_cap_day=50)


class Crash(Exception):
    """Stands for the process dying at this point."""


async def setup(tmp_path: Path) -> tuple[World, Campaign]:
    w = await make_world(tmp_path / "ads.db", POLICY)
    await w.ledger.mint(ADVERTISER, 1000)
    c = await w.engine.create(
        ADVERTISER, CampaignSpec(text="ad", link="https://x.example", budget=50, price_impression=PRICE)
    )
    for u in USERS:
        r = w.engine.reserve(Viewer(u, "a.example"))
        assert r is not None
        w.engine.delivered(r)
    await w.engine.drain()
    return w, c


async def restart(w: World) -> AdEngine:
    """A new engine on the same database, as the plugin builds it on start."""
    eng = AdEngine(w.ledger, AdsStore(w.db), POLICY, clock=w.clock)
    await eng.load()
    await eng.recover()
    return eng


async def stored(w: World) -> list[Any]:
    async with w.db.connect() as conn:
        return list((await conn.execute(select(impressions).order_by(impressions.c.id))).all())


async def captured(w: World, c: Campaign) -> int:
    assert c.hold_id is not None
    return int((await w.ledger.get_hold(c.hold_id)).captured)


async def test_crash_after_post_before_complete_is_replayed_not_billed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w, c = await setup(tmp_path)
    try:

        async def die(*args: Any, **kw: Any) -> None:
            raise Crash

        monkeypatch.setattr(w.store, "complete_batch", die)
        with pytest.raises(Crash):
            await w.engine.flush(c)
        assert await captured(w, c) == 3 * PRICE  # the wallet committed the post
        assert all(r.batch == 1 and not r.posted for r in await stored(w))
        eng = await restart(w)
        c2 = eng.campaigns[c.id]
        assert await captured(w, c) == 3 * PRICE  # replayed (same key, same request), not posted again
        assert (c2.impressions, c2.spent, c2.batches, c2.pending_amount) == (3, 3 * PRICE, 1, 0)
        assert all(r.posted for r in await stored(w))
        # Later impressions go into the next batch with a fresh key.
        w.clock.advance(10)
        r = eng.reserve(Viewer(USERS[0], "a.example"))
        assert r is not None
        eng.delivered(r)
        await eng.flush(c2)
        assert await captured(w, c) == 4 * PRICE and c2.batches == 2
        assert (await w.ledger.verify()).ok
    finally:
        await w.db.dispose()


async def test_crash_after_mark_before_post_is_billed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    w, c = await setup(tmp_path)
    try:

        async def die(*args: Any, **kw: Any) -> None:
            raise Crash

        monkeypatch.setattr(w.ledger, "post", die)
        with pytest.raises(Crash):
            await w.engine.flush(c)
        monkeypatch.undo()
        assert await captured(w, c) == 0
        eng = await restart(w)
        assert await captured(w, c) == 3 * PRICE
        eng2 = await restart(w)  # and once more: nothing left to bill
        assert await captured(w, c) == 3 * PRICE
        assert eng2.campaigns[c.id].impressions == 3 and eng.campaigns[c.id].batches == 1
    finally:
        await w.db.dispose()


async def test_unposted_events_of_a_closed_hold_are_settled_without_charge(tmp_path: Path) -> None:
    w, c = await setup(tmp_path)
    try:
        assert c.hold_id is not None
        await w.ledger.void(c.hold_id)  # e.g. the hold expired while the server was down
        eng = await restart(w)
        assert await captured(w, c) == 0
        assert all(r.posted for r in await stored(w))
        assert eng.campaigns[c.id].pending_amount == 0 and eng.campaigns[c.id].spent == 0
        assert await w.ledger.balance(ADVERTISER) == 1000
    finally:
        await w.db.dispose()


async def test_ended_campaign_gets_final_post_and_release_on_restart(tmp_path: Path) -> None:
    w, c = await setup(tmp_path)
    try:
        await w.store.update_campaign(c.id, status="stopped")  # stopped, crashed before its final post
        eng = await restart(w)
        assert c.hold_id is not None
        hold = await w.ledger.get_hold(c.hold_id)
        assert hold.status == "posted" and hold.captured == 3 * PRICE
        assert await w.ledger.balance(ADVERTISER) == 1000 - 3 * PRICE
        assert eng.campaigns[c.id].status == "stopped"
    finally:
        await w.db.dispose()


async def test_cap_windows_rebuilt_from_stored_impressions(tmp_path: Path) -> None:
    w, c = await setup(tmp_path)
    try:
        await w.engine.flush(c)
        w.clock.advance(2 * HOUR)
        eng = await restart(w)
        now = eng.now().timestamp()
        assert eng.caps.count((USERS[0], c.id), now, HOUR) == 0
        assert eng.caps.count((USERS[0], c.id), now, DAY) == 1
        assert eng.caps.count(USERS[1], now, DAY) == 1
        w.clock.advance(DAY)
        eng = await restart(w)
        assert eng.caps.count(USERS[0], eng.now().timestamp(), DAY) == 0
    finally:
        await w.db.dispose()


async def test_clicks_are_stored_and_billed_after_restart(tmp_path: Path) -> None:
    w = await make_world(tmp_path / "ads.db", POLICY)
    try:
        await w.ledger.mint(ADVERTISER, 1000)
        c = await w.engine.create(
            ADVERTISER,
            CampaignSpec(text="ad", link="https://x.example", budget=50, price_impression=PRICE, price_click=5),
        )
        r = w.engine.reserve(Viewer(USERS[0], "a.example"))
        assert r is not None
        w.engine.delivered(r)
        w.engine.click(c.id)
        await w.engine.drain()
        assert sorted(str(x.kind) for x in await stored(w)) == ["click", "imp"]
        eng = await restart(w)
        c2 = eng.campaigns[c.id]
        assert await captured(w, c) == PRICE + 5
        assert (c2.impressions, c2.clicks, c2.spent) == (1, 1, PRICE + 5)
    finally:
        await w.db.dispose()
