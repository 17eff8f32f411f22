"""Ads unit-test fixtures: the real wallet ledger and the ads store on a fresh SQLite file, a fake clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncEngine

from plugins.ads.engine import AdEngine, Policy
from plugins.ads.store import AdsStore
from plugins.ads.tables import metadata as ads_metadata
from plugins.wallet.ledger import Ledger, WalletConfig
from plugins.wallet.tables import metadata as wallet_metadata
from xmppim.storage.db import create_engine

KEY = Ed25519PrivateKey.generate()


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


@dataclass
class World:
    db: AsyncEngine
    clock: Clock
    ledger: Ledger
    store: AdsStore
    engine: AdEngine


async def make_world(path: Path, policy: Policy) -> World:
    db = create_engine(f"sqlite+aiosqlite:///{path}")
    async with db.begin() as conn:
        await conn.run_sync(wallet_metadata.create_all)
        await conn.run_sync(ads_metadata.create_all)
    clock = Clock()
    ledger = Ledger(db, WalletConfig(), signing_key=KEY, clock=clock)
    await ledger.init()
    store = AdsStore(db)
    return World(db, clock, ledger, store, AdEngine(ledger, store, policy, clock=clock))


async def world_iter(path: Path, policy: Policy) -> AsyncIterator[World]:
    w = await make_world(path, policy)
    try:
        yield w
    finally:
        await w.engine.drain()
        await w.db.dispose()
