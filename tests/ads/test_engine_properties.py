"""Property tests of the ads engine against the real wallet ledger (SQLite) with a fake clock.

For random traffic (reservations settled out of order, failed deliveries, clicks, time passing, batches
posted at random moments) and random policies: ads shown never exceed any cap in any sliding window;
what the wallet captured equals impressions × price plus billed clicks × click price; and for every
campaign escrow + spend + refunded = budget (and the escrow account ends at zero).
"""

from __future__ import annotations

import asyncio
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugins.ads.engine import DAY, HOUR, CampaignSpec, Policy, Reservation, Targeting, Viewer
from tests.ads.conftest import make_world

USERS = ["u0@a.example", "u1@a.example", "u2@b.example"]
ADVERTISER = "shop@a.example"
FUNDS = 10_000

campaign_st = st.fixed_dictionaries(
    {
        "budget": st.integers(1, 60),
        "price_impression": st.integers(1, 6),
        "price_click": st.integers(0, 4),
        "cap_hour": st.integers(1, 4),
        "cap_day": st.integers(1, 8),
        "domain": st.sampled_from(["", "a.example"]),
    }
)
step_st = st.tuples(
    st.sampled_from(["show", "show", "show", "show", "settle", "click", "tick", "wait"]),
    st.integers(0, len(USERS) - 1),
    st.sampled_from([0, 1, 30, 600, 1800, 3599, 3600, 7200, 40000, 86400]),
    st.booleans(),  # settle: delivered (True) or failed (False)
    st.integers(0, 100),  # which in-flight reservation to settle
)


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, lo = 0, 0
    for hi, t in enumerate(times):
        while times[lo] <= t - window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def scenario(path: Path, policy: Policy, specs: list[dict[str, Any]], steps: list[Any]) -> None:
    w = await make_world(path, policy)
    try:
        await w.ledger.mint(ADVERTISER, FUNDS)
        campaigns = []
        for s in specs:
            valid_budget = max(s["budget"], s["price_impression"])
            spec = CampaignSpec(
                text="ad", link="https://x.example", budget=valid_budget,
                price_impression=s["price_impression"], price_click=s["price_click"],
                cap_hour=s["cap_hour"], cap_day=s["cap_day"],
                targeting=Targeting(domains=(s["domain"],) if s["domain"] else ()),
            )
            campaigns.append(await w.engine.create(ADVERTISER, spec))
        inflight: list[Reservation] = []
        shown_user: dict[str, list[float]] = defaultdict(list)
        shown_pair: dict[tuple[str, int], list[float]] = defaultdict(list)
        delivered: dict[int, int] = defaultdict(int)
        charged_clicks: dict[int, int] = defaultdict(int)
        for action, ui, dt, ok, pick in steps:
            user = USERS[ui]
            if action == "wait":
                w.clock.advance(dt)
            elif action == "show":
                r = w.engine.reserve(Viewer(user, user.split("@")[1]))
                if r is None:
                    continue
                assert r.campaign.available() >= 0
                inflight.append(r)
                if pick % 4 == 0:
                    continue  # leave it in flight; settled later, out of order
            if action in ("show", "settle") and inflight:
                r = inflight.pop(-1 if action == "show" else pick % len(inflight))
                if ok or (action == "show" and pick % 4 == 1):
                    w.engine.delivered(r)
                    ts = w.clock().timestamp()
                    # the cap counted the reservation at its time; record that time (what the user saw)
                    shown_user[r.user].append(r.at)
                    shown_pair[(r.user, r.campaign.id)].append(r.at)
                    delivered[r.campaign.id] += 1
                    assert ts >= r.at
                else:
                    w.engine.failed(r)
            elif action == "click" and campaigns:
                c, charged = w.engine.click(campaigns[pick % len(campaigns)].id)
                if charged:
                    assert c is not None
                    charged_clicks[c.id] += 1
            elif action == "tick":
                await w.engine.tick()
            for c in campaigns:
                assert c.available() >= 0, "never more reserved/spent than the budget"
        for r in inflight:
            w.engine.failed(r)
        await w.engine.drain()
        for c in campaigns:
            if c.status in ("active", "paused"):
                await w.engine.set_status(c, "stopped")
        await w.engine.drain()

        # Caps: per user over all campaigns, per user and campaign, in every sliding window.
        for times in shown_user.values():
            assert max_in_window(times, HOUR) <= policy.user_cap_hour
            assert max_in_window(times, DAY) <= policy.user_cap_day
        for (_u, cid), times in shown_pair.items():
            c = next(x for x in campaigns if x.id == cid)
            assert max_in_window(times, HOUR) <= c.cap_hour
            assert max_in_window(times, DAY) <= c.cap_day
        # Money: the ledger agrees with the impressions and clicks, and nothing is lost.
        refunded_total = 0
        for c in campaigns:
            hold = await w.ledger.get_hold(c.hold_id)
            assert c.impressions == delivered[c.id]
            assert c.pending_amount == 0 and c.reserved == 0
            expected = c.impressions * c.price_impression + charged_clicks[c.id] * c.price_click
            assert hold.captured == c.spent == expected
            assert hold.amount == c.budget
            assert hold.status in ("posted", "voided")
            refunded = hold.amount - hold.captured  # escrow left = 0 once closed
            refunded_total += refunded
            if c.status == "exhausted":
                assert c.budget - c.spent < c.price_impression
        spent_total = sum(c.spent for c in campaigns)
        budgets = sum(c.budget for c in campaigns)
        assert await w.ledger.system_balance("escrow") == 0
        assert await w.ledger.system_balance("revenue") == spent_total
        assert await w.ledger.balance(ADVERTISER) == FUNDS - budgets + refunded_total
        assert spent_total + refunded_total == budgets
        assert (await w.ledger.verify()).ok
    finally:
        await w.engine.drain()
        await w.db.dispose()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    user_cap_hour=st.integers(1, 5),
    user_cap_day=st.integers(1, 12),
    batch_size=st.integers(1, 4),
    specs=st.lists(campaign_st, min_size=1, max_size=3),
    steps=st.lists(step_st, min_size=20, max_size=80),
)
def test_caps_and_money_hold_for_random_traffic(
    user_cap_hour: int, user_cap_day: int, batch_size: int, specs: list[dict[str, Any]], steps: list[Any]
) -> None:
    policy = Policy(user_cap_hour=user_cap_hour, user_cap_day=user_cap_day, batch_size=batch_size)
    with tempfile.TemporaryDirectory() as d:
        asyncio.run(scenario(Path(d) / "ads.db", policy, specs, steps))
