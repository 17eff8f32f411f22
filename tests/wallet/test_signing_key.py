"""The chain-signing key when several processes start at once (the server's workers, the CLI)."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cryptography.hazmat.primitives import serialization

from plugins.wallet.ledger import KEY_FILE, load_or_create_key


def _public_key_of(data_dir: str) -> bytes:
    key = load_or_create_key(data_dir)
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_processes_racing_to_create_the_key_all_get_the_same_one(tmp_path: Path) -> None:
    """Before, the loser of the O_EXCL race could read the winner's half-written PEM and fail to start."""
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=6, mp_context=ctx) as pool:
        for round_ in range(20):
            d = tmp_path / f"r{round_}"
            keys = list(pool.map(_public_key_of, [str(d)] * 12))
            assert len(set(keys)) == 1
            assert (d / KEY_FILE).stat().st_mode & 0o777 == 0o600
            assert [p.name for p in d.iterdir()] == [KEY_FILE]  # no temporary file left behind


def test_an_existing_key_is_kept(tmp_path: Path) -> None:
    first = _public_key_of(str(tmp_path))
    assert _public_key_of(str(tmp_path)) == first
