"""Shared pytest fixtures: a running xmppim on loopback with two accounts, and real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import make_config, running_server
from xmppim.server import Server

pytest_plugins = ["tests.pg"] if (Path(__file__).parent / "pg.py").exists() else []


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    """Override per test module: ``@pytest.fixture def config_overrides(): return {...}``."""
    return {}


@pytest.fixture
async def server(tmp_path: Path, config_overrides: dict[str, Any]) -> AsyncIterator[Server]:
    cfg = make_config(tmp_path, **config_overrides)
    async with running_server(cfg) as srv:
        for user in ("alice", "bob", "carol"):
            await srv.accounts.create(user, "localhost", "pw")
        yield srv
