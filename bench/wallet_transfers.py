"""Micro-benchmark of the wallet ledger: committed transfers per second on SQLite and PostgreSQL.

Run: ``.venv/bin/python bench/wallet_transfers.py [--transfers N] [--concurrency C] [--backends sqlite,pg]``.

Each backend gets a fresh database (SQLite: a temp file through the core's engine factory, i.e. WAL and
``synchronous=FULL``; PostgreSQL: a fresh schema in the cluster of ``scripts/postgres.sh``, which runs with
``fsync=off`` for tests -- so PG numbers exclude disk flushes while SQLite's include them).  Users are
funded with mints, then N random user-to-user transfers run from C concurrent tasks; a sequential pass
measures per-transfer latency.  Every transfer is a full write transaction: global write lock, idempotency
lookup, daily-limit sum, two conditional updates, hash-chained insert, Ed25519 signature of the new head.
The run ends with ``verify()`` so a fast-but-wrong ledger cannot post a number.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine  # noqa: E402

from plugins.wallet.ledger import Ledger, WalletConfig, WalletError, load_or_create_key  # noqa: E402
from plugins.wallet.tables import metadata  # noqa: E402
from xmppim.storage.db import create_engine  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


async def bench(engine: AsyncEngine, name: str, n: int, concurrency: int, users: int, seq_n: int) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    key = load_or_create_key(tempfile.mkdtemp(prefix="wallet-bench-"))
    ledger = Ledger(engine, WalletConfig(daily_send_limit=0), signing_key=key)
    jids = [f"user{i}@bench.localhost" for i in range(users)]
    for j in jids:
        await ledger.mint(j, 1_000_000)
    rng = random.Random(1)
    plan: list[tuple[str, str, int]] = []
    for _ in range(n):
        src, dst = rng.sample(jids, 2)
        plan.append((src, dst, rng.randint(1, 100)))
    queue = iter(plan)
    refused = 0

    async def worker() -> None:
        nonlocal refused
        for src, dst, amount in queue:
            try:
                await ledger.transfer(src, dst, amount)
            except WalletError:
                refused += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    lat = []
    for src, dst, amount in plan[:seq_n]:
        t1 = time.perf_counter()
        await ledger.transfer(src, dst, amount)
        lat.append((time.perf_counter() - t1) * 1000)
    t2 = time.perf_counter()
    rep = await ledger.verify()
    verify_s = time.perf_counter() - t2
    lat.sort()
    print(
        f"{name:7s} {n} transfers, {concurrency} tasks: {n / elapsed:8.1f} transfers/s "
        f"({elapsed:.2f}s, {refused} refused) | sequential p50 {statistics.median(lat):.2f} ms "
        f"p99 {lat[int(len(lat) * 0.99) - 1]:.2f} ms | verify {rep.transfers} rows in {verify_s:.2f}s "
        f"{'OK' if rep.ok else 'FAILED'}"
    )
    if not rep.ok:
        raise SystemExit(f"verify failed: {rep.problems[:5]}")


def _url(script: Path) -> str:
    return subprocess.run([str(script), "url"], check=True, capture_output=True, text=True).stdout


async def main() -> None:
    p = argparse.ArgumentParser(description="wallet ledger transfers/s")
    p.add_argument("--transfers", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--users", type=int, default=100)
    p.add_argument("--sequential", type=int, default=200, help="transfers timed one by one for latency")
    p.add_argument("--backends", default="sqlite,pg")
    a = p.parse_args()
    for backend in a.backends.split(","):
        if backend == "sqlite":
            with tempfile.TemporaryDirectory(prefix="wallet-bench-") as d:
                eng = create_engine(f"sqlite+aiosqlite:///{d}/wallet.db")
                try:
                    await bench(eng, "sqlite", a.transfers, a.concurrency, a.users, a.sequential)
                finally:
                    await eng.dispose()
        elif backend == "pg":
            script = ROOT / "scripts" / "postgres.sh"
            await asyncio.to_thread(subprocess.run, [str(script), "start"], check=True)
            url = (await asyncio.to_thread(_url, script)).strip()
            schema = f"bench_{uuid.uuid4().hex[:8]}"
            admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
            async with admin.connect() as c:
                await c.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            eng = create_async_engine(
                url, pool_size=10, max_overflow=20, connect_args={"server_settings": {"search_path": schema}}
            )
            try:
                await bench(eng, "pg", a.transfers, a.concurrency, a.users, a.sequential)
            finally:
                await eng.dispose()
                async with admin.connect() as c:
                    await c.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
                await admin.dispose()
        else:
            raise SystemExit(f"unknown backend {backend}")


if __name__ == "__main__":
    asyncio.run(main())
