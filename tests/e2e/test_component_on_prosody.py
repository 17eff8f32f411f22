"""The echo plugin as an external XEP-0114 component of a real Prosody (Debian 0.12.3).

``xmppim component run echo --server 127.0.0.1:PORT --secret S --domain echo.localhost`` runs as a
subprocess attached to a private Prosody on loopback (own directory, ports and PID); a slixmpp user of
that Prosody chats with the component at ``echo.localhost`` and ``bot@echo.localhost`` and runs its
"Greet me" ad-hoc command, so the same plugin code is proved against a server that is not ours.

Prosody comes from Debian (``scripts/install-debs.sh prosody``); the test installs it when missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

from tests.e2e.test_examples import Inbox, condition, ensure_echo_plugin
from tests.helpers import client_ssl_context, disconnect, free_port
from xmppim.transports.tls import generate_self_signed

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "localhost"
COMPONENT = "echo.localhost"

PROSODY_CONFIG = """\
-- written by tests/e2e/test_component_on_prosody.py: a private Prosody on loopback
run_as_root = true
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{dir}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ }}
component_ports = {{ {component} }}
component_interfaces = {{ "127.0.0.1" }}
http_ports = {{ }}
https_ports = {{ }}
certificates = "{dir}/certs"
ssl = {{ certificate = "{dir}/certs/localhost.crt"; key = "{dir}/certs/localhost.key" }}
c2s_require_encryption = true
authentication = "internal_plain"
storage = "internal"
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping" }}
modules_disabled = {{ "s2s" }}
VirtualHost "{domain}"
Component "{component_domain}"
  component_secret = "{secret}"
"""


@dataclass
class Prosody:
    dir: Path
    c2s: int
    component: int
    secret: str
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "prosody.log").read_text()[-3000:]
        return "(no log)"


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prosody exited with {proc.returncode} before opening port {port}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"prosody did not open port {port} within {timeout:.0f}s")


def stop_pid(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM our own process (by PID), SIGKILL after 5 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


@pytest.fixture(scope="module")
def prosody(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prosody]:
    if shutil.which("prosody") is None:
        subprocess.run(["bash", str(ROOT / "scripts" / "install-debs.sh"), "prosody"], check=True, timeout=600)
    d = tmp_path_factory.mktemp("prosody")
    (d / "data" / DOMAIN / "accounts").mkdir(parents=True)
    for user in ("alice", "bob"):
        # Prosody's internal_plain store: one Lua table per account (no prosodyctl round trip needed).
        (d / "data" / DOMAIN / "accounts" / f"{user}.dat").write_text('return {\n\t["password"] = "pw";\n};\n')
    generate_self_signed([DOMAIN], d / "certs" / "localhost.crt", d / "certs" / "localhost.key")
    c2s, component, secret = free_port(), free_port(), secrets.token_hex(8)
    (d / "prosody.cfg.lua").write_text(
        PROSODY_CONFIG.format(
            dir=d, c2s=c2s, component=component, domain=DOMAIN, component_domain=COMPONENT, secret=secret
        )
    )
    out = (d / "stdout.log").open("wb")
    proc = subprocess.Popen(
        ["prosody", "--config", str(d / "prosody.cfg.lua"), "-F"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
    )
    out.close()
    p = Prosody(d, c2s, component, secret, proc)
    try:
        wait_port(c2s, proc)
        wait_port(component, proc)
    except Exception as e:
        stop_pid(proc)
        raise RuntimeError(f"{e}\n{p.log()}") from e
    yield p
    stop_pid(proc)


async def prosody_client(p: Prosody, jid: str) -> slixmpp.ClientXMPP:
    c = slixmpp.ClientXMPP(jid, "pw")
    c.ssl_context = client_ssl_context()
    c.enable_direct_tls = False  # slixmpp 1.17 tries direct TLS first; this port speaks STARTTLS
    c.enable_plaintext = False  # STARTTLS or nothing: Prosody requires encryption here
    c.reconnect_max_attempts = 0
    for plugin in ("xep_0030", "xep_0004", "xep_0050"):
        c.register_plugin(plugin)
    started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _e: started.done() or started.set_result(None))
    c.add_event_handler("failed_all_auth", lambda _e: started.done() or started.set_exception(PermissionError(jid)))
    c.connect("127.0.0.1", p.c2s)
    await asyncio.wait_for(started, 10)
    c.send_presence()
    return c


@pytest.fixture
async def echo_on_prosody(prosody: Prosody, tmp_path: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    ensure_echo_plugin()
    env = {k: v for k, v in os.environ.items() if not k.startswith("XMPPIM_")}
    log = (tmp_path / "echo.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "xmppim", "component", "run", "echo",
        "--server", f"127.0.0.1:{prosody.component}", "--secret", prosody.secret, "--domain", COMPONENT,
        cwd=tmp_path, env=env, stdout=log, stderr=log,
    )
    log.close()
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def wait_component(client: slixmpp.ClientXMPP, proc: asyncio.subprocess.Process, timeout: float) -> None:  # noqa: ASYNC109
    """Ask Prosody for the component's disco#info until the component itself answers."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.returncode is not None:
            raise AssertionError(f"xmppim component run exited with {proc.returncode}")
        try:
            info = await client.plugin["xep_0030"].get_info(jid=COMPONENT, cached=False, timeout=2)
            if ("component", "echo", None, "Echo bot") in info["disco_info"]["identities"]:
                return
        except (IqError, IqTimeout) as e:
            last = repr(e)
        await asyncio.sleep(0.1)
    raise AssertionError(f"the echo component never answered through Prosody ({last})")


async def test_echo_plugin_as_external_component_of_prosody(
    prosody: Prosody, echo_on_prosody: asyncio.subprocess.Process, tmp_path: Path
) -> None:
    alice = await prosody_client(prosody, "alice@localhost/t")
    bob = await prosody_client(prosody, "bob@localhost/t")
    try:
        await wait_component(alice, echo_on_prosody, 10)
        inbox = Inbox(alice)
        for to in (COMPONENT, f"bot@{COMPONENT}"):
            alice.send_message(mto=to, mbody=f"hi {to}", mtype="chat")
            reply = await inbox.wait(lambda m, to=to: m["body"] == f"hi {to}", f"the echo from {to}")
            assert reply["from"].bare == to and reply["type"] == "chat"

        adhoc = alice.plugin["xep_0050"]
        commands = await adhoc.get_commands(jid=COMPONENT, timeout=5)
        assert [(n, name) for _j, n, name in commands["disco_items"]["items"]] == [("greet", "Greet me")]
        first = await adhoc.send_command(COMPONENT, "greet", action="execute", timeout=5)
        assert first["command"]["status"] == "executing"
        sid = first["command"]["sessionid"]
        form = alice.plugin["xep_0004"].make_form(ftype="submit")
        form.add_field(var="name", value="Alice")
        # Another Prosody user cannot continue alice's session (the check lives in the component).
        with pytest.raises(IqError) as e:
            await bob.plugin["xep_0050"].send_command(
                COMPONENT, "greet", action="complete", sessionid=sid, payload=form, timeout=5
            )
        assert condition(e.value.iq) == "forbidden"
        done = await adhoc.send_command(
            COMPONENT, "greet", action="complete", sessionid=sid, payload=form, timeout=5
        )
        assert done["command"]["status"] == "completed"
        assert done["command"]["notes"] == [("info", "Hello, Alice!")]
    finally:
        await disconnect(alice, bob)
    echo_on_prosody.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(echo_on_prosody.wait(), 10) == 0, (tmp_path / "echo.log").read_text()
