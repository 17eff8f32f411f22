"""The examples work as documented: the echo plugin package (in-process and as an external component
started with ``xmppim component run``) and ``examples/external_component.py`` (a slixmpp component run as
a subprocess), each chatting with a real slixmpp user of an xmppim server on loopback.

The echo plugin is ``pip install -e``'d into the running venv once (idempotent); see
:func:`ensure_echo_plugin`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
import slixmpp
from slixmpp.exceptions import IqError

from tests.helpers import Inbox, disconnect, make_config, running_server, slix_client
from xmppim.config import ConfigError
from xmppim.server import Server

ROOT = Path(__file__).resolve().parents[2]
ECHO_DIR = ROOT / "examples" / "echo_plugin"
REVERSE = ROOT / "examples" / "external_component.py"
STANZA_ERRORS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"


def ensure_echo_plugin() -> None:
    """``pip install -e examples/echo_plugin`` into this venv unless its entry point is already there,
    and make the module importable in this (already running) interpreter."""
    eps = {ep.name: ep for ep in entry_points(group="xmppim.plugins")}
    if "echo" not in eps:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", str(ECHO_DIR)],
            check=True,
            timeout=300,
        )
        importlib.invalidate_caches()
    if importlib.util.find_spec("echo_plugin") is None:
        # The editable install's .pth file is only read at interpreter start.
        sys.path.insert(0, str(ECHO_DIR))
    eps = {ep.name: ep for ep in entry_points(group="xmppim.plugins")}
    assert "echo" in eps, "the echo plugin's entry point is missing after pip install"
    module = importlib.import_module(eps["echo"].module)
    assert Path(module.__file__ or "").parent == ECHO_DIR, f"echo_plugin comes from {module.__file__}"


@pytest.fixture(scope="session")
def echo_plugin() -> None:
    ensure_echo_plugin()


@pytest.fixture
def config_overrides(echo_plugin: None) -> dict[str, Any]:
    return {
        "plugins": {"enabled": ["echo"], "echo": {"greeting": "Hi"}},
        "components": {"reverse.localhost": {"secret": "rs"}, "echo2.localhost": {"secret": "es"}},
    }


# ----------------------------------------------------------------------------- helpers
async def wait_until(pred: Callable[[], bool], what: str, timeout: float = 15.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def condition(stanza: Any) -> str:
    for err in stanza.xml:
        if err.tag.rpartition("}")[2] == "error":
            for child in err:
                if child.tag.startswith(STANZA_ERRORS) and not child.tag.endswith("}text"):
                    return str(child.tag.rpartition("}")[2])
    return ""


Users = tuple[slixmpp.ClientXMPP, slixmpp.ClientXMPP]


async def chat_and_greet(users: Users, domain: str, greeting: str) -> None:
    """Chat with the echo service at ``domain`` and ``bot@domain``, then run its "Greet me" command."""
    alice, bob = users
    inbox = Inbox(alice)
    for to in (domain, f"bot@{domain}"):
        alice.send_message(mto=to, mbody=f"hi {to}", mtype="chat")
        reply = await inbox.wait(lambda m, to=to: m["body"] == f"hi {to}", f"the echo from {to}")
        assert reply["from"].bare == to
    adhoc = alice.plugin["xep_0050"]
    commands = await adhoc.get_commands(jid=domain, timeout=5)
    assert [(n, name) for _j, n, name in commands["disco_items"]["items"]] == [("greet", "Greet me")]
    first = await adhoc.send_command(domain, "greet", action="execute", timeout=5)
    assert first["command"]["status"] == "executing"
    assert list(first["command"]["form"].get_fields()) == ["name"]
    sid = first["command"]["sessionid"]
    form = alice.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="name", value="Alice")
    with pytest.raises(IqError) as e:
        await bob.plugin["xep_0050"].send_command(
            domain, "greet", action="complete", sessionid=sid, payload=form, timeout=5
        )
    assert condition(e.value.iq) == "forbidden"
    done = await adhoc.send_command(
        domain, "greet", action="complete", sessionid=sid, payload=form, timeout=5
    )
    assert done["command"]["status"] == "completed"
    assert done["command"]["notes"] == [("info", f"{greeting}, Alice!")]


@pytest.fixture
async def users(server: Server) -> AsyncIterator[tuple[slixmpp.ClientXMPP, slixmpp.ClientXMPP]]:
    plugins = ("xep_0050", "xep_0004")
    alice, bob = await asyncio.gather(
        slix_client(server, "alice@localhost/t", "pw", plugins=plugins),
        slix_client(server, "bob@localhost/t", "pw", plugins=plugins),
    )
    yield alice, bob
    await disconnect(alice, bob)


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XMPPIM_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.asynccontextmanager
async def subprocess_running(
    args: list[str], cwd: Path, log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process with stdout piped and stderr in ``log``; killed (by its PID) if still running."""
    err = log.open("wb")  # noqa: ASYNC230 - a local file, opened once
    try:
        proc = await asyncio.create_subprocess_exec(
            *args, cwd=cwd, env=clean_env(), stdout=asyncio.subprocess.PIPE, stderr=err
        )
    finally:
        err.close()
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def stop(proc: asyncio.subprocess.Process) -> int:
    proc.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(proc.wait(), 10)


# ------------------------------------------------------------------- echo plugin
async def test_echo_plugin_in_process(server: Server, users: Any) -> None:
    assert "echo" in server.plugins.loaded
    disco = users[0].plugin["xep_0030"]
    items = await disco.get_items(jid="localhost", timeout=5)
    assert ("echo.localhost", None, "Echo bot") in items["disco_items"]["items"]
    info = await disco.get_info(jid="echo.localhost", timeout=5)
    assert ("component", "echo", None, "Echo bot") in info["disco_info"]["identities"]
    await chat_and_greet(users, "echo.localhost", "Hi")  # [plugins.echo] greeting applies


async def test_echo_plugin_config_key_typo_is_refused_by_name(echo_plugin: None, tmp_path: Path) -> None:
    cfg = make_config(tmp_path, plugins={"enabled": ["echo"], "echo": {"greting": "Hi"}})
    with pytest.raises(ConfigError) as e:
        async with running_server(cfg):
            pass
    assert "greting" in str(e.value) and "[plugins.echo]" in str(e.value) and "greeting" in str(e.value)


async def test_echo_plugin_as_external_component_of_xmppim(
    server: Server, users: Any, tmp_path: Path
) -> None:
    """``xmppim component run echo`` in a subprocess, attached to xmppim's XEP-0114 port."""
    args = [
        sys.executable, "-m", "xmppim", "component", "run", "echo",
        "--server", f"127.0.0.1:{server.ports['component']}", "--secret", "es", "--domain", "echo2.localhost",
    ]
    async with subprocess_running(args, tmp_path, tmp_path / "echo.log") as proc:
        await wait_until(lambda: server.router.components.get("echo2.localhost") is not None,
                         "the external echo component to connect")
        await chat_and_greet(users, "echo2.localhost", "Hello")  # the default config
        assert await stop(proc) == 0
    await wait_until(lambda: server.router.components.get("echo2.localhost") is None, "the server to notice")
    log = (tmp_path / "echo.log").read_text()
    assert "component echo2.localhost connected" in log
    assert not (tmp_path / "var").exists(), "the echo component has no tables: it must not create a database"


async def test_external_echo_with_a_wrong_secret_exits_1_naming_the_error(
    server: Server, tmp_path: Path
) -> None:
    args = [
        sys.executable, "-m", "xmppim", "component", "run", "echo",
        "--server", f"127.0.0.1:{server.ports['component']}",
        "--secret", "wrong", "--domain", "echo2.localhost",
    ]
    async with subprocess_running(args, tmp_path, tmp_path / "echo.log") as proc:
        assert await asyncio.wait_for(proc.wait(), 15) == 1
    assert "not-authorized" in (tmp_path / "echo.log").read_text()
    assert server.router.components["echo2.localhost"] is None


async def test_component_run_with_an_unknown_plugin_exits_2(echo_plugin: None, tmp_path: Path) -> None:
    args = [sys.executable, "-m", "xmppim", "component", "run", "nosuch",
            "--server", "127.0.0.1:1", "--secret", "s"]
    async with subprocess_running(args, tmp_path, tmp_path / "err.log") as proc:
        assert await asyncio.wait_for(proc.wait(), 15) == 2
    text = (tmp_path / "err.log").read_text()
    assert "'nosuch'" in text and "echo" in text  # names the wrong name and lists what is installed


# ------------------------------------------------------------- slixmpp component
async def test_reverse_bot_example_chats_with_a_user(server: Server, users: Any, tmp_path: Path) -> None:
    args = [sys.executable, str(REVERSE), "--jid", "reverse.localhost", "--secret", "rs",
            "--host", "127.0.0.1", "--port", str(server.ports["component"])]
    async with subprocess_running(args, tmp_path, tmp_path / "reverse.log") as proc:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), 15)
        assert line.strip() == b"ready", (tmp_path / "reverse.log").read_text()
        alice = users[0]
        inbox = Inbox(alice)
        for to in ("reverse.localhost", "someone@reverse.localhost"):
            alice.send_message(mto=to, mbody="stressed", mtype="chat")
            reply = await inbox.wait(
                lambda m, to=to: m["from"].bare == to and m["body"] == "desserts", f"desserts from {to}"
            )
            assert reply["type"] == "chat"
        items = await alice.plugin["xep_0030"].get_items(jid="localhost", timeout=5)
        assert "reverse.localhost" in {j for j, _n, _name in items["disco_items"]["items"]}
        assert await stop(proc) == 0
    await wait_until(lambda: server.router.components.get("reverse.localhost") is None, "it to go")


async def test_reverse_bot_with_a_wrong_secret_exits_1(server: Server, tmp_path: Path) -> None:
    args = [sys.executable, str(REVERSE), "--jid", "reverse.localhost", "--secret", "nope",
            "--host", "127.0.0.1", "--port", str(server.ports["component"])]
    async with subprocess_running(args, tmp_path, tmp_path / "reverse.log") as proc:
        assert await asyncio.wait_for(proc.wait(), 15) == 1
    assert "not-authorized" in (tmp_path / "reverse.log").read_text()
