"""Crash and restart of a real ``xmppim serve`` process: nothing accepted is lost."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import RawClient, free_port

XMPPIM = [sys.executable, "-m", "xmppim"]


class ServerProcess:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.cfg = tmp / "xmppim.toml"
        self.cfg.write_text(
            f"""
[server]
domains = ["localhost"]
data_dir = "{tmp / "var"}"
[c2s]
port = {self.port}
direct_tls_port = {free_port()}
[component]
port = {free_port()}
[http]
port = {free_port()}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*XMPPIM, "--config", str(self.cfg), *args], capture_output=True, text=True, timeout=60)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*XMPPIM, "--config", str(self.cfg), "--log-level", "warning", "serve"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert "serving" in line, line

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(20)


@pytest.fixture
def proc(tmp_path: Path) -> Iterator[ServerProcess]:
    p = ServerProcess(tmp_path)
    assert p.cli("user", "add", "alice@localhost", "--password", "pw").returncode == 0
    assert p.cli("user", "add", "bob@localhost", "--password", "pw").returncode == 0
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill()


async def test_offline_message_survives_sigkill(proc: ServerProcess) -> None:
    proc.start()
    alice = await RawClient.connect(proc.port)
    await alice.login("alice", "pw", "a")
    for i in range(20):
        alice.send_raw(f"<message to='bob@localhost' type='chat' id='m{i}'><body>note {i}</body></message>")
    alice.send_raw("<iq type='get' id='sync' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    assert (await alice.recv()).get("id") == "sync"  # every message before it was accepted (and committed)
    proc.kill()
    await alice.close()
    proc.start()
    bob = await RawClient.connect(proc.port)
    await bob.login("bob", "pw", "b")
    bob.send_raw("<presence/>")
    bodies = []
    while len(bodies) < 20:
        el = await bob.recv()
        if el.tag == "{jabber:client}message":
            bodies.append(el.findtext("{jabber:client}body"))
    assert bodies == [f"note {i}" for i in range(20)]
    await bob.close()
    assert proc.terminate() == 0


async def test_accounts_survive_restart_and_sigterm_closes_streams(proc: ServerProcess) -> None:
    proc.start()
    c = await RawClient.connect(proc.port)
    await c.login("alice", "pw")
    proc.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert await c.stream_error() == "system-shutdown"
    assert proc.proc.wait(20) == 0  # type: ignore[union-attr]
    await c.close()
    proc.start()
    c = await RawClient.connect(proc.port)
    assert await c.login("bob", "pw", "again") == "bob@localhost/again"
    await c.close()
    out = proc.cli("user", "list").stdout.split()
    assert out == ["alice@localhost", "bob@localhost"]


async def test_wallet_survives_sigkill_in_a_transfer_storm(proc: ServerProcess) -> None:
    """Issue 5: SIGKILL during many transfers; afterwards `xmppim wallet verify` passes and every transfer a
    client saw confirmed is in the ledger."""
    ns = "urn:xmppim:wallet:0"
    for u in ("alice", "bob"):
        assert proc.cli("wallet", "mint", f"{u}@localhost", "100000").returncode == 0
    proc.start()
    confirmed: set[str] = set()
    clients = {}
    for u in ("alice", "bob"):
        c = await RawClient.connect(proc.port)
        await c.login(u, "pw", "storm")
        clients[u] = c

    async def storm(u: str, to: str) -> None:
        c = clients[u]
        for i in range(10_000):
            c.send_raw(
                f"<iq type='set' id='{i}' to='wallet.localhost'><transfer xmlns='{ns}' to='{to}@localhost' "
                f"amount='1' id='{u}-{i}'/></iq>"
            )
            try:
                r = await c.recv(timeout=5)
            except Exception:
                return  # the server is gone
            t = r.find(f"{{{ns}}}transfer")
            if r.get("type") == "result" and t is not None:
                confirmed.add(t.get("seq", ""))

    tasks = [asyncio.ensure_future(storm("alice", "bob")), asyncio.ensure_future(storm("bob", "alice"))]
    while len(confirmed) < 30:  # noqa: ASYNC110 - polling a counter the storm tasks update
        await asyncio.sleep(0.05)
    proc.kill()
    await asyncio.gather(*tasks)
    for c in clients.values():
        await c.close()
    verify = proc.cli("wallet", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    export = proc.cli("wallet", "export")
    seqs = {line.split(",")[0] for line in export.stdout.splitlines()[1:]}
    assert confirmed <= seqs
    balances = [int(proc.cli("wallet", "balance", f"{u}@localhost").stdout) for u in ("alice", "bob")]
    assert sum(balances) == 200_000  # nothing created or lost
