"""50 concurrent tasks x random transfers (with overdrafts and reused idempotency keys) through several
Ledger instances, each with its own engine (like several server/CLI processes), on a SQLite file and on
PostgreSQL.  Afterwards the confirmed transfers, replayed one by one in seq order, must be valid at every
step and give exactly the final balances; nothing negative, everything sums to zero, verify() passes."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from plugins.wallet.ledger import Ledger, Transfer, WalletConfig, WalletError, load_or_create_key

from .conftest import Db, create_tables

USERS = [f"u{i}@example.org" for i in range(10)]
TASKS = 50
OPS = 12
INSTANCES = 4
START = 100


async def test_concurrent_transfers_match_sequential_replay(db: Db, tmp_path: Path) -> None:
    key = load_or_create_key(tmp_path)
    cfg = WalletConfig(max_transfer=START, daily_send_limit=0)
    engines = [db.engine() for _ in range(INSTANCES)]
    await create_tables(engines[0])
    ledgers = [Ledger(e, cfg, signing_key=key) for e in engines]
    try:
        for u in USERS:
            await ledgers[0].mint(u, START)
        confirmed: list[tuple[tuple[str, str, int], Transfer]] = []
        replayed: list[tuple[tuple[str, str, int, str | None], Transfer]] = []
        errors: dict[str, int] = {}
        rng = random.Random(5)
        plans: list[list[tuple[list[str], int, str | None]]] = []
        for _ in range(TASKS):
            plan: list[tuple[list[str], int, str | None]] = []
            for _ in range(OPS):
                if plan and plan[-1][2] is not None and rng.random() < 0.3:
                    plan.append(plan[-1])  # a client retrying the same request (same key)
                else:
                    plan.append((rng.sample(USERS, 2), rng.randint(1, 60), rng.choice([None, "k0", "k1", "k2"])))
            plans.append(plan)

        async def worker(n: int) -> None:
            ledger = ledgers[n % INSTANCES]
            for (src, dst), amount, idem in plans[n]:
                try:
                    t = await ledger.transfer(src, dst, amount, idem_key=idem)
                except WalletError as exc:
                    errors[exc.condition] = errors.get(exc.condition, 0) + 1
                    continue
                if t.replayed:
                    replayed.append(((src, dst, amount, idem), t))
                else:
                    confirmed.append(((src, dst, amount), t))

        await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(TASKS))), timeout=120)

        assert set(errors) <= {"insufficient-funds", "duplicate"}, errors
        assert len(confirmed) + len(replayed) + sum(errors.values()) == TASKS * OPS

        # Sequential replay of what was confirmed, in ledger order.
        seqs = sorted(t.seq for _, t in confirmed)
        assert seqs == list(range(len(USERS) + 1, len(USERS) + 1 + len(confirmed))), "gaps or doubles"
        bal = dict.fromkeys(USERS, START)
        by_seq = {t.seq: t for _, t in confirmed}
        for (src, dst, amount), t in sorted(confirmed, key=lambda c: c[1].seq):
            assert (t.debit, t.credit, t.amount) == (f"user:{src}", f"user:{dst}", amount)
            bal[src] -= amount
            bal[dst] += amount
            assert bal[src] >= 0, f"replay goes negative at seq {t.seq}"
        for (src, dst, amount, idem), t in replayed:
            first = by_seq[t.seq]
            assert (first.debit, first.credit, first.amount, first.idem_key) == (
                f"user:{src}", f"user:{dst}", amount, idem
            )
        for u in USERS:
            assert await ledgers[1].balance(u) == bal[u], u
        # The run really exercised overdrafts, key reuse with other requests, and retries.
        assert errors.get("insufficient-funds", 0) > 0 and errors.get("duplicate", 0) > 0, errors
        assert replayed, "some exact repeats of keyed requests should have been replayed"
        assert sum(bal.values()) == START * len(USERS)
        assert await ledgers[2].system_balance("issuance") == -START * len(USERS)
        rep = await ledgers[3].verify()
        assert rep.ok, rep.problems
        assert rep.transfers == len(USERS) + len(confirmed)
    finally:
        for e in engines:
            await e.dispose()


async def test_concurrent_holds_and_settlements(db: Db, tmp_path: Path) -> None:
    """Holds posted in batches, voided and expired from many tasks at once keep escrow == open holds."""
    key = load_or_create_key(tmp_path)
    engines = [db.engine() for _ in range(2)]
    await create_tables(engines[0])
    ledgers = [Ledger(e, WalletConfig(), signing_key=key) for e in engines]
    try:
        for u in USERS:
            await ledgers[0].mint(u, 1500)

        async def worker(n: int) -> None:
            ledger = ledgers[n % 2]
            rng = random.Random(n)
            h = await ledger.hold(USERS[n % len(USERS)], 300, initiator="ads", idem_key=f"c{n}")
            for b in range(3):
                try:
                    await ledger.post(h.id, rng.randint(1, 120), final=False, idem_key=f"c{n}/b{b}")
                except WalletError as exc:
                    assert exc.condition == "bad-amount"
            if n % 3 == 0:
                await ledger.void(h.id)
            elif n % 3 == 1:
                await ledger.post(h.id, 1)

        await asyncio.wait_for(asyncio.gather(*(worker(n) for n in range(TASKS))), timeout=120)
        assert await ledgers[1].expire_holds() == 0
        open_rest = [(await ledgers[0].get_hold(i)).remaining for i in range(1, TASKS + 1)]
        assert await ledgers[0].system_balance("escrow") == sum(open_rest) > 0
        rep = await ledgers[1].verify()
        assert rep.ok, rep.problems
    finally:
        for e in engines:
            await e.dispose()


async def test_first_use_from_several_processes_at_once(db: Db, tmp_path: Path) -> None:
    """Several instances racing to create the chain head and system accounts on an empty DB."""
    key = load_or_create_key(tmp_path)
    engines = [db.engine() for _ in range(INSTANCES)]
    await create_tables(engines[0])
    ledgers = [Ledger(e, WalletConfig(), signing_key=key) for e in engines]
    try:
        results = await asyncio.gather(*(lg.mint(USERS[i], 10 + i) for i, lg in enumerate(ledgers)))
        assert sorted(t.seq for t in results) == list(range(1, INSTANCES + 1))
        rep = await ledgers[0].verify()
        assert rep.ok, rep.problems
        assert rep.accounts == 2 * 4 + INSTANCES  # 4 system accounts per currency, one per user
    finally:
        for e in engines:
            await e.dispose()
