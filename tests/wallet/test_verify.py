"""Audit trail: tampering with the DB behind the ledger's back is found by ``verify`` (and the CLI)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncEngine

from plugins.wallet.cli import add_wallet_commands, run
from plugins.wallet.ledger import Ledger, row_hash
from plugins.wallet.tables import accounts, chain, transfers

A, B = "alice@example.org", "bob@example.org"


def parse(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_wallet_commands(p.add_subparsers(dest="command", required=True))
    return p.parse_args(["wallet", *argv])


async def populate(ledger: Ledger) -> None:
    await ledger.mint(A, 100)
    await ledger.transfer(A, B, 10)
    await ledger.transfer(A, B, 20)
    h = await ledger.hold(A, 30)
    await ledger.post(h.id, 5)
    await ledger.transfer(B, A, 1)


async def cli_verify(engine: AsyncEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = await run(parse("verify"), engine, tmp_path / "data")
    return rc, capsys.readouterr().out


async def test_clean_ledger_verifies(
    ledger: Ledger, engine: AsyncEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await populate(ledger)
    rc, out = await cli_verify(engine, tmp_path, capsys)
    assert rc == 0 and out.startswith("OK 7 transfers"), out


async def test_altered_amount_reported_at_its_row(
    ledger: Ledger, engine: AsyncEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await populate(ledger)
    async with engine.begin() as conn:
        # Make bob's 10 a 15 and fix up both cached balances so that only the chain can tell.
        await conn.execute(update(transfers).where(transfers.c.seq == 2).values(amount=15))
        await conn.execute(
            update(accounts).where(accounts.c.owner == A).values(balance=accounts.c.balance - 5)
        )
        await conn.execute(
            update(accounts).where(accounts.c.owner == B).values(balance=accounts.c.balance + 5)
        )
    rep = await ledger.verify()
    assert not rep.ok and rep.first_bad_seq == 2
    assert any("row 2" in p and "hash" in p for p in rep.problems), rep.problems
    rc, out = await cli_verify(engine, tmp_path, capsys)
    assert rc == 1 and "FAIL first bad row: 2" in out, out


async def test_rehashed_chain_fails_on_signature(ledger: Ledger, engine: AsyncEngine) -> None:
    """An attacker who recomputes every hash after editing a row still cannot sign the new head."""
    await populate(ledger)
    async with engine.begin() as conn:
        rows = (await conn.execute(transfers.select().order_by(transfers.c.seq))).all()
        labels = {
            int(r.id): f"{r.kind}:{r.owner}" for r in (await conn.execute(accounts.select())).all()
        }
        prev = "0" * 64
        for r in rows:
            memo = "rewritten" if r.seq == 3 else r.memo
            h = row_hash(
                seq=r.seq, prev_hash=prev, created_at=r.created_at, currency=r.currency,
                debit=labels[r.debit_account_id], credit=labels[r.credit_account_id], amount=r.amount,
                kind=r.kind, memo=memo, initiator=r.initiator, idem_key=r.idem_key,
                request_hash=r.request_hash, hold_id=r.hold_id,
            )
            await conn.execute(
                update(transfers).where(transfers.c.seq == r.seq).values(memo=memo, prev_hash=prev, hash=h)
            )
            prev = h
        await conn.execute(update(chain).where(chain.c.id == 1).values(head_hash=prev))
    rep = await ledger.verify()
    assert not rep.ok
    assert any("signature" in p for p in rep.problems), rep.problems


async def test_deleted_last_row_detected(ledger: Ledger, engine: AsyncEngine) -> None:
    await populate(ledger)
    async with engine.begin() as conn:
        await conn.execute(delete(transfers).where(transfers.c.seq == 7))
    rep = await ledger.verify()
    assert not rep.ok and rep.first_bad_seq == 7, rep


async def test_deleted_middle_row_detected(ledger: Ledger, engine: AsyncEngine) -> None:
    await populate(ledger)
    async with engine.begin() as conn:
        await conn.execute(delete(transfers).where(transfers.c.seq == 3))
    rep = await ledger.verify()
    assert not rep.ok and rep.first_bad_seq == 3, rep


async def test_balance_changed_without_transfer_detected(ledger: Ledger, engine: AsyncEngine) -> None:
    await populate(ledger)
    async with engine.begin() as conn:
        await conn.execute(update(accounts).where(accounts.c.owner == B).values(balance=1000))
    rep = await ledger.verify()
    assert not rep.ok
    assert any("stored balance" in p for p in rep.problems)
    assert any("sum" in p for p in rep.problems)


async def test_hold_bookkeeping_tamper_detected(ledger: Ledger, engine: AsyncEngine) -> None:
    await ledger.mint(A, 100)
    await ledger.hold(A, 40)
    from plugins.wallet.tables import holds

    async with engine.begin() as conn:
        await conn.execute(update(holds).values(status="voided"))
    rep = await ledger.verify()
    assert not rep.ok and any("hold 1" in p or "escrow" in p for p in rep.problems), rep.problems


async def test_other_key_fails_signature(ledger: Ledger, engine: AsyncEngine, tmp_path: Path) -> None:
    await populate(ledger)
    other = Ledger(engine, ledger.config, data_dir=tmp_path / "other-key")
    rep = await other.verify()
    assert not rep.ok and any("signature" in p for p in rep.problems)


async def test_key_file_created_private(ledger: Ledger, tmp_path: Path) -> None:
    key = tmp_path / "data" / "wallet_ed25519.pem"
    assert key.exists() and (key.stat().st_mode & 0o077) == 0


async def test_cli_commands(
    ledger: Ledger, engine: AsyncEngine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tmp_path / "data"
    assert await run(parse("mint", A, "70", "--memo", "welcome"), engine, d) == 0
    assert capsys.readouterr().out.strip() == f"minted 70 COIN to {A} (transfer 1)"
    assert await run(parse("balance", A), engine, d) == 0
    assert capsys.readouterr().out == "70\n"
    assert await run(parse("mint", A, "0"), engine, d) == 1
    assert "bad-amount" in capsys.readouterr().err
    assert await run(parse("history", A), engine, d) == 0
    line = capsys.readouterr().out.strip().split("\t")
    assert (line[0], line[2], line[3], line[4], line[5], line[6]) == (
        "1", "mint", "+70", "COIN", "system:issuance", "welcome"
    )
    out = tmp_path / "export.csv"
    assert await run(parse("export", "--output", str(out)), engine, d) == 0
    assert out.read_text().splitlines()[1].startswith("1,")
    assert await run(parse("export"), engine, d) == 0
    assert capsys.readouterr().out.startswith("seq,created_at")
