"""Ledger behaviour on SQLite and PostgreSQL: every rule of issue 5 that a single caller can observe."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable

import pytest

from plugins.wallet.ledger import (
    BadAmount,
    Duplicate,
    Frozen,
    Hold,
    HoldClosed,
    InsufficientFunds,
    InvalidRequest,
    Ledger,
    LimitExceeded,
    Transfer,
    UnknownHold,
    UnknownRecipient,
)

from .conftest import Clock

A, B, C = "alice@example.org", "bob@example.org", "carol@example.org"


async def assert_sound(ledger: Ledger) -> None:
    rep = await ledger.verify()
    assert rep.ok, rep.problems


async def test_mint_and_transfer_are_zero_sum(ledger: Ledger) -> None:
    t = await ledger.mint(A, 100, memo="gift")
    assert (t.debit, t.credit, t.amount, t.kind, t.seq) == ("system:issuance", f"user:{A}", 100, "mint", 1)
    t2 = await ledger.transfer(A, B, 30, memo="lunch")
    assert t2.seq == 2 and t2.initiator == A
    assert await ledger.balance(A) == 70
    assert await ledger.balance(B) == 30
    assert await ledger.system_balance("issuance") == -100
    await assert_sound(ledger)


async def test_jids_are_normalised_to_bare(ledger: Ledger) -> None:
    await ledger.mint("Alice@Example.ORG/phone", 10)
    assert await ledger.balance(A) == 10


async def test_overdraft_refused_and_moves_nothing(ledger: Ledger) -> None:
    await ledger.mint(A, 10)
    with pytest.raises(InsufficientFunds) as ei:
        await ledger.transfer(A, B, 11)
    assert ei.value.condition == "insufficient-funds"
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(C, B, 1)  # no account at all
    assert (await ledger.balance(A), await ledger.balance(B)) == (10, 0)
    await assert_sound(ledger)


@pytest.mark.parametrize("amount", [0, -5, 1_000_001])
async def test_bad_amounts(ledger: Ledger, amount: int) -> None:
    await ledger.mint(A, 100)
    with pytest.raises(BadAmount) as ei:
        await ledger.transfer(A, B, amount)
    assert ei.value.condition == "bad-amount"
    with pytest.raises(BadAmount):
        await ledger.mint(A, amount)


async def test_float_amount_refused(ledger: Ledger) -> None:
    with pytest.raises(BadAmount):
        await ledger.mint(A, 1.5)  # type: ignore[arg-type]


async def test_max_transfer_is_configuration(make_ledger: Callable[..., Ledger]) -> None:
    ledger = make_ledger(max_transfer=50)
    await ledger.mint(A, 50)
    with pytest.raises(BadAmount):
        await ledger.mint(A, 51)


async def test_unknown_and_deleted_recipients(ledger: Ledger, users: set[str]) -> None:
    await ledger.mint(A, 100)
    with pytest.raises(UnknownRecipient) as ei:
        await ledger.transfer(A, "nobody@example.org", 1)
    assert ei.value.condition == "unknown-recipient"
    with pytest.raises(UnknownRecipient):
        await ledger.transfer(A, "not a jid@@", 1)
    with pytest.raises(UnknownRecipient):
        await ledger.mint("ghost@example.org", 5)
    users.discard(B)
    with pytest.raises(UnknownRecipient):
        await ledger.transfer(A, B, 1)
    assert await ledger.balance(A) == 100


async def test_deleted_user_is_frozen_not_destroyed(ledger: Ledger) -> None:
    await ledger.mint(A, 100)
    await ledger.transfer(A, B, 40)
    assert await ledger.freeze_user(B) == 1
    assert await ledger.is_frozen(B)
    assert await ledger.balance(B) == 40  # still there
    with pytest.raises(Frozen) as ei:
        await ledger.transfer(B, A, 1)
    assert ei.value.condition == "frozen"
    with pytest.raises(Frozen):
        await ledger.transfer(A, B, 1)  # user still exists in the core, account frozen
    with pytest.raises(Frozen):
        await ledger.mint(B, 1)
    assert (await ledger.balance(A), await ledger.balance(B)) == (60, 40)
    assert await ledger.freeze_user(B, frozen=False) == 1
    await ledger.transfer(B, A, 1)
    await assert_sound(ledger)


async def test_idempotency_same_request_returns_original(ledger: Ledger) -> None:
    await ledger.mint(A, 100)
    t1 = await ledger.transfer(A, B, 10, idem_key="k1", memo="m")
    t2 = await ledger.transfer(A, B, 10, idem_key="k1", memo="m")
    assert t2.replayed and not t1.replayed
    assert (t2.seq, t2.hash, t2.amount) == (t1.seq, t1.hash, t1.amount)
    assert await ledger.balance(B) == 10
    # Different request with the same key: refused, nothing moves.
    for kwargs in ({"amount": 11}, {"recipient": C}, {"memo": "other"}):
        args = {"sender": A, "recipient": B, "amount": 10, "memo": "m", "idem_key": "k1"} | kwargs
        with pytest.raises(Duplicate) as ei:
            await ledger.transfer(**args)  # type: ignore[arg-type]
        assert ei.value.condition == "duplicate"
    assert (await ledger.balance(A), await ledger.balance(B), await ledger.balance(C)) == (90, 10, 0)
    # Keys are per initiator: bob may use "k1" too.
    t3 = await ledger.transfer(B, A, 5, idem_key="k1")
    assert not t3.replayed
    await assert_sound(ledger)


async def test_failed_request_does_not_consume_key(ledger: Ledger) -> None:
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(A, B, 10, idem_key="k")
    await ledger.mint(A, 10)
    t = await ledger.transfer(A, B, 10, idem_key="k")
    assert not t.replayed and await ledger.balance(B) == 10


async def test_daily_send_limit(make_ledger: Callable[..., Ledger], clock: Clock) -> None:
    ledger = make_ledger(daily_send_limit=100)
    await ledger.mint(A, 500)
    await ledger.transfer(A, B, 60)
    await ledger.transfer(A, C, 40)
    with pytest.raises(LimitExceeded) as ei:
        await ledger.transfer(A, B, 1)
    assert ei.value.condition == "limit-exceeded"
    # Purchases are not "sends"; the limit is per sender.
    await ledger.charge(A, 10)
    await ledger.transfer(B, C, 50)
    clock.advance(24 * 3600)
    await ledger.transfer(A, B, 100)
    assert await ledger.balance(A) == 500 - 60 - 40 - 10 - 100


async def test_bonus_coins_are_kept_apart_and_not_transferable(ledger: Ledger) -> None:
    await ledger.mint(A, 100)
    await ledger.mint(A, 30, currency="COIN_BONUS")
    assert await ledger.balance(A) == 100
    assert await ledger.balance(A, "COIN_BONUS") == 30
    with pytest.raises(InvalidRequest):
        await ledger.transfer(A, B, 1, currency="COIN_BONUS")
    await ledger.charge(A, 30, currency="COIN_BONUS", memo="sticker")
    with pytest.raises(InsufficientFunds):
        await ledger.charge(A, 1, currency="COIN_BONUS")
    with pytest.raises(InvalidRequest):
        await ledger.mint(A, 1, currency="USD")
    assert await ledger.system_balance("revenue", "COIN_BONUS") == 30
    await assert_sound(ledger)


async def test_self_transfer_refused(ledger: Ledger) -> None:
    await ledger.mint(A, 10)
    with pytest.raises(InvalidRequest):
        await ledger.transfer(A, A, 1)


async def test_hold_post_void_lifecycle(ledger: Ledger) -> None:
    await ledger.mint(A, 100)
    h = await ledger.hold(A, 60, memo="premium")
    assert (h.status, h.amount, h.remaining, h.payer) == ("pending", 60, 60, A)
    assert await ledger.balance(A) == 40
    assert await ledger.system_balance("escrow") == 60
    with pytest.raises(InsufficientFunds):
        await ledger.transfer(A, B, 41)  # held coins are not spendable
    t = await ledger.post(h.id)
    assert (t.kind, t.amount, t.credit) == ("post", 60, "system:revenue")
    assert (await ledger.get_hold(h.id)).status == "posted"
    with pytest.raises(HoldClosed) as ei:
        await ledger.void(h.id)  # void after post must not refund
    assert ei.value.condition == "hold-closed"
    with pytest.raises(HoldClosed):
        await ledger.post(h.id)
    h2 = await ledger.hold(A, 40)
    v = await ledger.void(h2.id)
    assert v.status == "voided" and await ledger.balance(A) == 40
    assert (await ledger.void(h2.id)).status == "voided"  # idempotent
    with pytest.raises(HoldClosed):
        await ledger.post(h2.id)
    with pytest.raises(UnknownHold):
        await ledger.post(999)
    assert await ledger.system_balance("escrow") == 0
    assert await ledger.system_balance("revenue") == 60
    await assert_sound(ledger)


async def test_partial_posts_then_remainder_released(ledger: Ledger) -> None:
    """Ads: escrow at campaign start, impressions posted in batches, remainder voided."""
    await ledger.mint(A, 1000)
    h = await ledger.hold(A, 500, initiator="ads", idem_key="campaign-1", timeout_s=86400)
    assert h.initiator == "ads"
    await ledger.post(h.id, 120, final=False, idem_key="campaign-1/batch-1")
    again = await ledger.post(h.id, 120, final=False, idem_key="campaign-1/batch-1")
    assert again.replayed
    await ledger.post(h.id, 80, final=False, idem_key="campaign-1/batch-2")
    with pytest.raises(BadAmount):
        await ledger.post(h.id, 301, final=False)
    assert (await ledger.get_hold(h.id)).remaining == 300
    v = await ledger.void(h.id)
    assert (v.status, v.captured) == ("voided", 200)
    assert await ledger.balance(A) == 800
    assert await ledger.system_balance("revenue") == 200
    # A final partial post releases the rest at once.
    h2 = await ledger.hold(A, 100)
    await ledger.post(h2.id, 30)
    assert (await ledger.get_hold(h2.id)).status == "posted"
    assert await ledger.balance(A) == 770
    await assert_sound(ledger)


async def test_hold_idempotency(ledger: Ledger) -> None:
    await ledger.mint(A, 100)
    h1 = await ledger.hold(A, 10, idem_key="premium:2026-01")
    h2 = await ledger.hold(A, 10, idem_key="premium:2026-01")
    assert h2.replayed and h2.id == h1.id
    with pytest.raises(Duplicate):
        await ledger.hold(A, 11, idem_key="premium:2026-01")
    assert await ledger.balance(A) == 90


async def test_holds_expire(ledger: Ledger, clock: Clock) -> None:
    await ledger.mint(A, 100)
    h = await ledger.hold(A, 30, timeout_s=60)
    keep = await ledger.hold(A, 20, timeout_s=600)
    clock.advance(61)
    with pytest.raises(HoldClosed):
        await ledger.post(h.id)  # past its deadline even before the sweep ran
    assert await ledger.expire_holds() == 1
    assert (await ledger.get_hold(h.id)).status == "expired"
    assert (await ledger.get_hold(keep.id)).status == "pending"
    assert await ledger.balance(A) == 80
    assert await ledger.expire_holds() == 0
    await assert_sound(ledger)


async def test_void_refunds_frozen_payer(ledger: Ledger) -> None:
    await ledger.mint(A, 50)
    h = await ledger.hold(A, 50)
    await ledger.freeze_user(A)
    await ledger.void(h.id)
    assert await ledger.balance(A) == 50
    await assert_sound(ledger)


async def test_history_paging(ledger: Ledger) -> None:
    await ledger.mint(A, 100)
    for i in range(5):
        await ledger.transfer(A, B, i + 1, memo=f"#{i}")
    await ledger.mint(C, 5)  # not alice's
    page1 = await ledger.history(A, limit=4)
    page2 = await ledger.history(A, after_id=page1[-1].seq, limit=4)
    assert [e.amount for e in page1 + page2] == [100, -1, -2, -3, -4, -5]
    assert page1[1].counterparty == f"user:{B}" and page1[1].memo == "#0"
    assert [e.amount for e in await ledger.history(B)] == [1, 2, 3, 4, 5]
    assert await ledger.history("nobody@example.org") == []


async def test_export_csv(ledger: Ledger) -> None:
    await ledger.mint(A, 100, memo='quote " and, comma')
    await ledger.transfer(A, B, 1)
    buf = io.StringIO()
    assert await ledger.export_csv(buf) == 2
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("seq,created_at,kind,currency,debit,credit,amount")
    assert lines[1].startswith("1,") and '"quote "" and, comma"' in lines[1]
    assert f"user:{A},user:{B},1," in lines[2]


async def test_group_commit_isolates_refused_requests(ledger: Ledger) -> None:
    """Requests queued together run in one transaction, each in its own savepoint: a refused one (even
    after it wrote a hold row) leaves no trace, later ones see earlier ones (a repeated key is a replay)."""
    await ledger.mint(A, 100)
    results = await asyncio.gather(
        ledger.hold(A, 500),
        ledger.hold(A, 10),
        ledger.transfer(A, B, 1000),
        ledger.transfer(A, B, 5, idem_key="x"),
        ledger.transfer(A, B, 5, idem_key="x"),
        ledger.transfer(A, B, 6, idem_key="x"),
        return_exceptions=True,
    )
    assert isinstance(results[0], InsufficientFunds)
    assert isinstance(results[1], Hold) and results[1].status == "pending"
    assert isinstance(results[2], InsufficientFunds)
    first, again = results[3], results[4]
    assert isinstance(first, Transfer) and isinstance(again, Transfer)
    assert not first.replayed and again.replayed and again.seq == first.seq
    assert isinstance(results[5], Duplicate)
    # One transaction: the same timestamp on every transfer of the batch.
    assert len({e.created_at for e in (await ledger.history(A))[1:]}) == 1
    assert (await ledger.balance(A), await ledger.balance(B)) == (85, 5)
    assert (await ledger.get_hold(results[1].id)).amount == 10
    await assert_sound(ledger)
