"""``xmppim serve --workers 2``: a supervisor and two real worker processes sharing the c2s port.

Twenty clients log in over STARTTLS; the kernel spreads them over both workers (SO_REUSEPORT), so with
ten pairs some partners sit on different workers (the chance that all twenty land on one is 2^-19). Every
message must arrive; a worker killed with SIGKILL is restarted and serves new logins; SIGTERM stops all.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.helpers import RawClient, seed_database, until
from xmppim.config import load_config
from xmppim.storage.db import create_engine
from xmppim.storage.repositories.accounts import SQLAccountStore

ROOT = Path(__file__).resolve().parents[2]
PAIRS = 10


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(x) for x in text.split()]


@contextlib.asynccontextmanager
async def supervisor(tmp_path: Path, loop: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    conf = tmp_path / "xmppim.toml"
    conf.write_text(
        f"""
[server]
domains = ["localhost"]
data_dir = "{tmp_path}"
workers = 2
[c2s]
port = 0
direct_tls_port = 0
[component]
port = 0
[http]
port = 0
"""
    )
    cfg = load_config(str(conf))
    await asyncio.to_thread(seed_database, cfg)
    engine = create_engine(cfg.storage_url)
    accounts = SQLAccountStore(engine)
    for i in range(2 * PAIRS):
        await accounts.create(f"u{i}", "localhost", "pw")
    await engine.dispose()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "xmppim",
        "--config",
        str(conf),
        "--log-level",
        "warning",
        "serve",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "XMPPIM_LOOP": loop},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        m = re.search(r"c2s (\d+)", line)
        assert m and "with 2 workers" in line, line
        yield proc, int(m.group(1))
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                for child in children(proc.pid):
                    os.kill(child, signal.SIGKILL)
                proc.kill()
                await proc.wait()


async def login_all(port: int, n: int, prefix: str = "u") -> list[RawClient]:
    async def one(i: int) -> RawClient:
        c = await RawClient.connect(port)
        await c.login(f"{prefix}{i}", "pw", "r")
        c.send_raw("<presence/>")
        return c

    return list(await asyncio.gather(*(one(i) for i in range(n))))


async def exchange(clients: list[RawClient]) -> None:
    """Each client messages its partner's bare JID; every message must arrive."""
    # Let every worker learn every session (the announcement travels over the cluster mesh).
    await asyncio.sleep(0.5)
    for i, c in enumerate(clients):
        partner = i ^ 1
        c.send_raw(f"<message type='chat' to='u{partner}@localhost' id='m{i}'><body>hi from {i}</body></message>")
    for i, c in enumerate(clients):
        got = await asyncio.wait_for(
            until(c, lambda st: st.tag == "{jabber:client}message" and st.findtext("{jabber:client}body") is not None),
            10,
        )
        assert got.findtext("{jabber:client}body") == f"hi from {i ^ 1}"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_two_worker_processes_route_between_them(tmp_path: Path, loop: str) -> None:
    async with supervisor(tmp_path, loop) as (proc, port):
        workers = children(proc.pid)
        assert len(workers) == 2
        clients = await login_all(port, 2 * PAIRS)
        try:
            await exchange(clients)
        finally:
            for c in clients:
                await c.close()

        # A worker that dies is replaced, and the server goes on serving.
        os.kill(workers[0], signal.SIGKILL)
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while True:
            now = children(proc.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            assert loop.time() < end, f"worker not restarted: {now}"
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # the new worker's ready line comes after its mesh links are up
        clients = await login_all(port, 2 * PAIRS)
        try:
            await exchange(clients)
            # SIGTERM: every stream is closed with system-shutdown, and everything exits.
            proc.send_signal(signal.SIGTERM)
            for c in clients:
                assert await c.stream_error(10) == "system-shutdown"
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            for c in clients:
                await c.close()
