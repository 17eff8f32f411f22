"""Click tokens, targeting, campaign validation, config validation, premium idempotency."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from plugins.ads.clicks import ClickSigner, TokenError, load_or_create_key
from plugins.ads.engine import CampaignSpec, Policy, Targeting, Viewer
from plugins.ads.plugin import AdsSettings
from plugins.ads.premium import Premium, idem_key
from tests.ads.conftest import make_world
from xmppim.config import ConfigError, build_dataclass


def test_click_tokens(tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    assert load_or_create_key(tmp_path) == key  # kept in data_dir
    assert (tmp_path / "ads_click.key").stat().st_mode & 0o077 == 0
    s = ClickSigner(key)
    t = s.make(7, 2000)
    click = s.check(t, 1000)
    assert click.campaign_id == 7 and click.expires == 2000
    with pytest.raises(TokenError) as e:
        s.check(t, 2000)
    assert e.value.status == 410
    cid, exp, nonce, sig = t.split(".")
    for forged in (f"8.{exp}.{nonce}.{sig}", f"{cid}.9999999999.{nonce}.{sig}", f"{cid}.{exp}.{nonce}x.{sig}",
                   ClickSigner(b"k" * 32).make(7, 2000), "garbage", t + ".x"):
        with pytest.raises(TokenError) as e:
            s.check(forged, 1000)
        assert e.value.status == 403


def test_targeting() -> None:
    v = Viewer("a@x.example", "x.example", "en-GB", frozenset({"music"}))
    assert Targeting().matches(v)
    assert Targeting(domains=("x.example",)).matches(v)
    assert not Targeting(domains=("y.example",)).matches(v)
    assert Targeting(locales=("en",)).matches(v) and Targeting(locales=("EN-gb",)).matches(v)
    assert not Targeting(locales=("de",)).matches(v) and not Targeting(locales=("e",)).matches(v)
    assert Targeting(topics=("music", "games")).matches(v)
    assert not Targeting(topics=("games",)).matches(v)
    assert not Targeting(domains=("x.example",), topics=("games",)).matches(v)


def test_campaign_validation() -> None:
    ok = CampaignSpec(text="t", link="https://a", budget=10, price_impression=2)
    assert ok.validate(280, 1000) is None
    bad = [
        CampaignSpec(text="", link="https://a", budget=10, price_impression=2),
        CampaignSpec(text="t" * 300, link="https://a", budget=10, price_impression=2),
        CampaignSpec(text="t", link="javascript:alert(1)", budget=10, price_impression=2),
        CampaignSpec(text="t", link="https://a", budget=10, price_impression=0),
        CampaignSpec(text="t", link="https://a", budget=1, price_impression=2),
        CampaignSpec(text="t", link="https://a", budget=5000, price_impression=2),
        CampaignSpec(text="t", link="https://a", budget=10, price_impression=2, cap_hour=0),
    ]
    for spec in bad:
        assert spec.validate(280, 1000)


def test_config_is_validated() -> None:
    cfg = build_dataclass(AdsSettings, {"every_n_messages": 5, "topics": {"music": ["guitar"]}}, "plugins.ads")
    assert cfg.every_n_messages == 5 and cfg.topics == {"music": ["guitar"]}
    with pytest.raises(ConfigError, match="unknown key"):
        build_dataclass(AdsSettings, {"every_n": 5}, "plugins.ads")
    with pytest.raises(ConfigError):
        build_dataclass(AdsSettings, {"every_n_messages": "5"}, "plugins.ads")
    with pytest.raises(ConfigError):
        build_dataclass(AdsSettings, {"batch_size": 0}, "plugins.ads")


async def test_premium_two_phase_and_idempotent(tmp_path: Path) -> None:
    w = await make_world(tmp_path / "p.db", Policy())
    try:
        await w.ledger.mint("u@x.example", 100)
        p = Premium(w.ledger, w.store, price_per_day=3, max_days=30, clock=w.clock)
        period = await p.buy("u@x.example", 10)
        assert period.ends_at - period.starts_at == timedelta(days=10)
        assert p.is_premium("u@x.example")
        assert await w.ledger.balance("u@x.example") == 70
        # A retry of the same period (same user + start) never charges twice.
        again = await p._activate("u@x.example", period.starts_at, period.ends_at, 30)
        assert again.replayed and await w.ledger.balance("u@x.example") == 70
        # Buying again extends from the current end (a new key, a new charge).
        nxt = await p.buy("u@x.example", 1)
        assert nxt.starts_at == period.ends_at and await w.ledger.balance("u@x.example") == 67
        # Not enough coins: nothing held, nothing recorded.
        with pytest.raises(Exception) as e:
            await p.buy("u@x.example", 30)
        assert getattr(e.value, "condition", "") == "insufficient-funds"
        assert await w.ledger.balance("u@x.example") == 67
        # Expiry: after the paid time the user sees ads again.
        w.clock.advance(11 * 86400 + 1)
        assert not p.is_premium("u@x.example")
        assert await w.ledger.system_balance("escrow") == 0
    finally:
        await w.db.dispose()


async def test_premium_activation_failure_voids_the_hold(tmp_path: Path) -> None:
    w = await make_world(tmp_path / "p.db", Policy())
    try:
        await w.ledger.mint("u@x.example", 100)
        p = Premium(w.ledger, w.store, price_per_day=5, max_days=30, clock=w.clock)

        async def broken(*_a: object, **_k: object) -> None:
            raise RuntimeError("database went away")

        p.store.set_premium_status = broken  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await p.buy("u@x.example", 2)
        # The post happened before the failure here, so the coins are spent only if the period exists:
        row = await w.store.premium_row("u@x.example", w.clock().replace(microsecond=0))
        assert row is not None
        hold = await w.ledger.get_hold(int(row.hold_id))
        assert hold.status == "posted" and str(row.status) == "pending"
        # Recovery after the "crash" finishes the activation with the same key: still one charge.
        del p.store.set_premium_status
        p2 = Premium(w.ledger, w.store, price_per_day=5, max_days=30, clock=w.clock)
        assert await p2.recover() == 1
        assert await w.ledger.balance("u@x.example") == 90
        assert await p2.refresh("u@x.example") is not None
    finally:
        await w.db.dispose()


async def test_premium_hold_voided_when_post_fails(tmp_path: Path) -> None:
    w = await make_world(tmp_path / "p.db", Policy())
    try:
        await w.ledger.mint("u@x.example", 100)
        p = Premium(w.ledger, w.store, price_per_day=5, max_days=30, clock=w.clock)
        real_post = w.ledger.post

        async def failing_post(*_a: object, **_k: object) -> None:
            raise RuntimeError("activation failed")

        w.ledger.post = failing_post  # type: ignore[method-assign]
        with pytest.raises(RuntimeError):
            await p.buy("u@x.example", 2)
        w.ledger.post = real_post  # type: ignore[method-assign]
        assert await w.ledger.balance("u@x.example") == 100
        row = await w.store.premium_row("u@x.example", w.clock().replace(microsecond=0))
        assert row is not None and str(row.status) == "voided"
        assert (await w.ledger.get_hold(int(row.hold_id))).status == "voided"
        assert not p.is_premium("u@x.example")
        assert idem_key("u@x.example", row.starts_at).startswith("ads-premium:u@x.example:")
    finally:
        await w.db.dispose()


async def test_schedule_start_and_end(tmp_path: Path) -> None:
    w = await make_world(tmp_path / "s.db", Policy())
    try:
        await w.ledger.mint("shop@x.example", 100)
        now = w.clock()
        spec = CampaignSpec(text="t", link="https://a", budget=50, price_impression=5,
                            starts_at=now + timedelta(hours=1), ends_at=now + timedelta(hours=3))
        c = await w.engine.create("shop@x.example", spec)
        assert await w.ledger.balance("shop@x.example") == 50  # held in escrow at creation
        v = Viewer("u@x.example", "x.example")
        assert w.engine.reserve(v) is None  # not started yet
        w.clock.advance(3600)
        r = w.engine.reserve(v)
        assert r is not None
        w.engine.delivered(r)
        w.clock.advance(2 * 3600)
        await w.engine.tick()
        assert c.status == "ended" and w.engine.reserve(v) is None
        hold = await w.ledger.get_hold(c.hold_id)
        assert hold.status == "posted" and hold.captured == 5
        assert await w.ledger.balance("shop@x.example") == 95
        # A restart loads the campaign with its billed counters.
        from plugins.ads.engine import AdEngine

        e2 = AdEngine(w.ledger, w.store, Policy(), clock=w.clock)
        await e2.load()
        assert e2.campaigns[c.id].impressions == 1 and e2.campaigns[c.id].status == "ended"
    finally:
        await w.db.dispose()
