"""xmpp.js (npm @xmpp/client 0.14, Node) against each target, with a slixmpp peer on the other end.

xmpp.js is driven through ``node/xmppjs-driver.js``: the test sends JSON-line commands (roster get/set,
presence, message) and reads JSON-line events (online, message, presence, roster push).  Everything on
the wire is xmpp.js's own: its STARTTLS, SASL (SCRAM-SHA-1 / SASL2), resource binding and its WebSocket
framing (RFC 7395).  Node 20 has no global WebSocket, hence ``--experimental-websocket``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import RecordRow
from harness import REPO, Account, Target
from peers import SlixClient, cleanup_roster, logged_in
from slixmpp import JID

CLIENT = "xmpp.js"
NODE_DIR = Path(__file__).resolve().parent / "node"
INSTALL = REPO / "scripts" / "install-node-deps.sh"
NO_WS = "server has no WebSocket endpoint"

Event = dict[str, Any]


# ---------------------------------------------------------------------------------------------------
# Node side: one JSON-lines child process (also used by test_converse.py)


_deps_result: str | None = None


def ensure_node_deps() -> None:
    """Run scripts/install-node-deps.sh once per session (idempotent, instant when up to date).

    With INTEROP_SKIP_INSTALL set (scripts/interop.sh: "do not touch apt/npm/pip") only check the packages.
    """
    global _deps_result
    if _deps_result is None:
        wanted = {
            "@xmpp/client": "package.json",
            "converse.js": "dist/converse.min.js",
            "playwright-core": "package.json",
        }
        if shutil.which("node") is None:
            _deps_result = "node is not installed (scripts/install-debs.sh nodejs npm)"
        elif os.environ.get("INTEROP_SKIP_INSTALL"):
            missing = [p for p, f in wanted.items() if not (NODE_DIR / "node_modules" / p / f).exists()]
            _deps_result = f"npm packages missing: {missing}; run scripts/install-node-deps.sh" if missing else ""
        else:
            try:
                out = subprocess.run([str(INSTALL)], capture_output=True, text=True, timeout=300)
                _deps_result = "" if out.returncode == 0 else f"install-node-deps failed: {out.stderr[-300:]}"
            except subprocess.TimeoutExpired:
                _deps_result = "install-node-deps did not finish within 300s"
    if _deps_result:
        pytest.fail(_deps_result, pytrace=False)


@functools.cache
def _node_major() -> int:
    out = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=20).stdout
    return int(out.strip().lstrip("v").split(".")[0] or 0)


def node_argv(script: str, *args: str) -> list[str]:
    """``node [--experimental-websocket] SCRIPT ARGS``: the flag only where WebSocket is not global yet."""
    flags = ["--experimental-websocket"] if _node_major() < 22 else []
    return ["node", *flags, str(NODE_DIR / script), *args]


class JsonLinesProcess:
    """A Node driver speaking JSON lines: commands on stdin, events on stdout; every wait bounded."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(os.environ, NODE_TLS_REJECT_UNAUTHORIZED="0", **(env or {}))
        self.events: list[Event] = []
        self.stderr: list[str] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Event()
        self._ids = iter(range(1, 1_000_000))
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=NODE_DIR,
            start_new_session=True,  # own process group: Chromium children end with the driver
            limit=1 << 20,  # a page's text can be a long JSON line
        )
        self._tasks = [asyncio.create_task(self._read_stdout()), asyncio.create_task(self._read_stderr())]

    async def _read_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            line = raw.decode(errors="replace").strip()
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"event": "log", "line": line}
            self.events.append(ev if isinstance(ev, dict) else {"event": "log", "line": line})
            self._changed.set()
        self._changed.set()

    async def _read_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        while raw := await self.proc.stderr.readline():
            self.stderr.append(raw.decode(errors="replace").rstrip())
            del self.stderr[:-40]

    def _exited(self) -> bool:
        return self.proc is None or self.proc.returncode is not None

    def _why_dead(self) -> str:
        code = self.proc.returncode if self.proc is not None else None
        last = [e for e in self.events if e.get("event") in ("login_failed", "error")]
        tail = last[-1].get("message") if last else (self.stderr[-1] if self.stderr else "")
        return f"{self.name} exited ({code}){': ' + str(tail) if tail else ''}"

    async def wait_event(self, pred: Callable[[Event], bool], what: str, timeout: float = 10.0) -> Event:  # noqa: ASYNC109
        """First event (also earlier ones) matching ``pred``; fail with a sentence otherwise."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for ev in self.events[seen:]:
                if pred(ev):
                    return ev
            seen = len(self.events)
            if self._exited() and all(t.done() for t in self._tasks[:1]):
                raise AssertionError(f"{self.name} never saw {what}: {self._why_dead()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name} did not see {what} within {timeout:.0f}s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    async def call(self, cmd: str, timeout: float = 10.0, **args: Any) -> Event:  # noqa: ASYNC109
        """Send one command and wait for its result; a failed command fails the scenario."""
        if self._exited() or self.proc is None or self.proc.stdin is None:
            raise AssertionError(f"{self.name} cannot run {cmd}: {self._why_dead()}")
        rid = next(self._ids)
        self.proc.stdin.write((json.dumps({"id": rid, "cmd": cmd, **args}) + "\n").encode())
        await self.proc.stdin.drain()
        res = await self.wait_event(
            lambda e: e.get("event") == "result" and e.get("id") == rid, f"the result of {cmd}", timeout
        )
        if not res.get("ok"):
            raise AssertionError(f"{self.name}: {cmd} failed: {res.get('error')}")
        return res

    async def close(self, timeout: float = 8.0) -> None:  # noqa: ASYNC109
        """Ask the driver to stop (closing the XMPP stream), then end it by PID if it lingers."""
        proc = self.proc
        if proc is None:
            return
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(Exception):
                proc.stdin.write(b'{"id": 0, "cmd": "stop"}\n')
                await proc.stdin.drain()
                proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group this driver leads (started above)
            await proc.wait()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def remove_roster_items(target: Target, account: Account, *contacts: str) -> None:
    """Log in as ``account`` with slixmpp and remove ``contacts`` (RFC 6121 §2.5), best effort.

    The driven client may have died mid-scenario; an external server's account pool must still be left
    as found, so this does not rely on the client under test.
    """
    with contextlib.suppress(Exception):
        async with logged_in(target, account, "cleanup", initial_presence=False) as c:
            await cleanup_roster(c, *contacts)


# ---------------------------------------------------------------------------------------------------
# xmpp.js sessions


def _service(target: Target, websocket: bool, direct_tls: bool = False) -> str:
    if websocket:
        if not target.websocket_url:
            pytest.skip(NO_WS)
        return target.websocket_url
    if direct_tls:
        if target.direct_tls_port is None:
            pytest.skip(f"{target.name} has no direct TLS port")
        return f"xmpps://{target.host}:{target.direct_tls_port}"
    return f"xmpp://{target.host}:{target.port}"


@contextlib.asynccontextmanager
async def xmppjs_session(
    target: Target,
    account: Account,
    resource: str = "xmppjs",
    websocket: bool = False,
    direct_tls: bool = False,
) -> AsyncIterator[tuple[JsonLinesProcess, Event]]:
    """A logged-in xmpp.js client (STARTTLS, XEP-0368 direct TLS or RFC 7395 WebSocket): (driver, online)."""
    service = _service(target, websocket, direct_tls)
    ensure_node_deps()
    opts = {
        "service": service,
        "domain": target.domain,
        "username": account.local,
        "password": account.password,
        "resource": resource,
    }
    drv = JsonLinesProcess(f"xmpp.js client {account.local}", node_argv("xmppjs-driver.js", json.dumps(opts)))
    await drv.start()
    try:
        mode = "WebSocket" if websocket else "direct TLS" if direct_tls else "STARTTLS"
        online = await drv.wait_event(
            lambda e: e.get("event") in ("online", "login_failed"), f"{mode} login to {opts['service']}", 20
        )
        if online["event"] == "login_failed":
            raise AssertionError(f"xmpp.js {mode} login of {account.jid} failed: {online.get('message')}")
        yield drv, online
    finally:
        await drv.close()


def _is(event: str, **fields: Any) -> Callable[[Event], bool]:
    def pred(e: Event) -> bool:
        return e.get("event") == event and all(
            (JID(str(e.get(k))).bare == v) if k == "from" else e.get(k) == v for k, v in fields.items()
        )

    return pred


def _push_for(jid: str, subscription: str | None = None) -> Callable[[Event], bool]:
    def pred(e: Event) -> bool:
        return e.get("event") == "roster_push" and any(
            i["jid"] == jid and (subscription is None or i["subscription"] == subscription) for i in e["items"]
        )

    return pred


async def _handshake(js: JsonLinesProcess, ja: str, peer: SlixClient) -> None:
    """RFC 6121 §3 initiated by xmpp.js: roster add, subscribe/subscribed both ways, both rosters 'both'."""
    jb = peer.boundjid.bare
    await js.call("roster_get")  # interested resource (RFC 6121 §2.1.6)
    await js.call("presence")  # available resource: inbound subscribe requests are delivered (§3.1.3)
    await peer.roster_items()
    await js.call("roster_set", jid=jb, name="peer")
    await js.wait_event(_push_for(jb), f"the roster push adding {jb}")
    await js.call("presence", to=jb, type="subscribe")
    await peer.wait_presence(ja, "subscribe")
    peer.send_presence(pto=ja, ptype="subscribed")
    await js.wait_event(_is("presence", **{"from": jb, "type": "subscribed"}), f"subscribed from {jb}")
    await js.wait_event(_push_for(jb, "to"), f"the roster push with subscription='to' for {jb}")
    peer.send_presence(pto=ja, ptype="subscribe")
    await js.wait_event(_is("presence", **{"from": jb, "type": "subscribe"}), f"subscribe from {jb}")
    await js.call("presence", to=jb, type="subscribed")
    await peer.wait_presence(ja, "subscribed")
    await js.wait_event(_push_for(jb, "both"), f"the roster push with subscription='both' for {jb}")
    await peer.wait_roster_push(ja, subscription="both")


async def _message_both_ways(target: Target, websocket: bool) -> None:
    a, b = target.new_account("alice"), target.new_account("bob")
    async with (
        logged_in(target, b, "peer") as peer,
        xmppjs_session(target, a, websocket=websocket) as (js, on),
    ):
        full = on["jid"]
        await js.call("presence")  # available: the peer may now address the full JID too
        to_peer = f"from xmpp.js {secrets.token_hex(4)}"
        await js.call("message", to=b.jid, body=to_peer)
        got = await peer.wait_message(a.jid, to_peer)
        assert got["from"].full == full, f"peer saw sender {got['from']}, xmpp.js bound {full}"
        to_js = f"to xmpp.js {secrets.token_hex(4)}"
        peer.send_message(mto=JID(full), mbody=to_js, mtype="chat")
        msg = await js.wait_event(_is("message", body=to_js), f"the message {to_js!r} from {b.jid}")
        assert JID(msg["from"]).bare == b.jid, f"message arrived from {msg['from']}, expected {b.jid}"


# ---------------------------------------------------------------------------------------------------
# scenarios


async def test_login_starttls(target: Target, record_row: RecordRow) -> None:
    """RFC 6120 §5-§7 with xmpp.js's own STARTTLS/SASL/bind over TCP: bound JID is ours, stream is TLS."""
    record_row(CLIENT, "login (STARTTLS)")
    acc = target.new_account("alice")
    async with xmppjs_session(target, acc, "starttls") as (_js, online):
        assert JID(online["jid"]).bare == acc.jid, f"xmpp.js bound {online['jid']}, expected {acc.jid}/…"
        assert JID(online["jid"]).resource, "server bound no resource"
        assert online["secure"] and online["tls"], f"xmpp.js session is not TLS-encrypted: {online}"


async def test_login_direct_tls(target: Target, record_row: RecordRow) -> None:
    """XEP-0368: xmpp.js's xmpps:// transport, TLS from the first byte on the direct TLS port."""
    record_row(CLIENT, "login (direct TLS, XEP-0368)")
    acc = target.new_account("alice")
    async with xmppjs_session(target, acc, "directtls", direct_tls=True) as (_js, online):
        assert JID(online["jid"]).bare == acc.jid, f"xmpp.js bound {online['jid']}, expected {acc.jid}/…"
        assert online["secure"] and online["tls"], f"xmpp.js session is not TLS-encrypted: {online}"


async def test_login_websocket(target: Target, record_row: RecordRow) -> None:
    """RFC 7395: xmpp.js opens the WebSocket (subprotocol 'xmpp'), authenticates and binds."""
    record_row(CLIENT, "login (WebSocket)")
    acc = target.new_account("alice")
    async with xmppjs_session(target, acc, "ws", websocket=True) as (_js, online):
        assert online["transport"] == "websocket"
        assert JID(online["jid"]).bare == acc.jid, f"xmpp.js bound {online['jid']}, expected {acc.jid}/…"


async def test_roster_subscription_handshake(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §2-3 driven from xmpp.js; both rosters end in subscription='both'."""
    record_row(CLIENT, "roster add + subscription handshake")
    a, b = target.new_account("alice"), target.new_account("bob")
    async with logged_in(target, b, "peer", fetch_roster=True) as peer:
        try:
            async with xmppjs_session(target, a) as (js, _online):
                try:
                    await _handshake(js, a.jid, peer)
                    roster = await js.call("roster_get")
                    item = next((i for i in roster["items"] if i["jid"] == b.jid), None)
                    assert item is not None, f"{b.jid} missing from xmpp.js roster: {roster['items']}"
                    assert item["subscription"] == "both", f"xmpp.js roster item for {b.jid}: {item}"
                    peer_item = (await peer.roster_items()).get(a.jid)
                    assert peer_item and peer_item.get("subscription") == "both", (
                        f"peer roster item for {a.jid}: {peer_item}"
                    )
                finally:
                    with contextlib.suppress(AssertionError):
                        await js.call("roster_remove", jid=b.jid)
        finally:
            await cleanup_roster(peer, a.jid)
            await remove_roster_items(target, a, b.jid)


async def test_presence_both_ways(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §4: after mutual subscription, each side's presence (show + status) reaches the other."""
    record_row(CLIENT, "presence both ways")
    a, b = target.new_account("alice"), target.new_account("bob")
    async with logged_in(target, b, "peer", fetch_roster=True) as peer:
        try:
            async with xmppjs_session(target, a) as (js, _online):
                try:
                    await _handshake(js, a.jid, peer)
                    mine = f"xmpp.js here {secrets.token_hex(3)}"
                    await js.call("presence", status=mine, show="chat")
                    p = await peer.wait_presence(a.jid, "chat", status=mine)
                    assert p["status"] == mine
                    theirs = f"peer here {secrets.token_hex(3)}"
                    peer.send_presence(pstatus=theirs, pshow="away")
                    ev = await js.wait_event(
                        _is("presence", **{"from": b.jid, "status": theirs}),
                        f"presence {theirs!r} from {b.jid}",
                    )
                    assert ev["show"] == "away", f"xmpp.js saw show={ev['show']!r}, peer sent 'away'"
                finally:
                    with contextlib.suppress(AssertionError):
                        await js.call("roster_remove", jid=b.jid)
        finally:
            await cleanup_roster(peer, a.jid)
            await remove_roster_items(target, a, b.jid)


async def test_message_both_ways(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §5 over STARTTLS: xmpp.js -> bare JID of the peer, peer -> full JID of xmpp.js."""
    record_row(CLIENT, "message both ways")
    await _message_both_ways(target, websocket=False)


async def test_message_both_ways_websocket(target: Target, record_row: RecordRow) -> None:
    """Same over RFC 7395 WebSocket."""
    record_row(CLIENT, "message both ways (WebSocket)")
    await _message_both_ways(target, websocket=True)


async def test_wrong_password_rejected(target: Target, record_row: RecordRow) -> None:
    """RFC 6120 §6.5: xmpp.js must get a SASL failure (not-authorized), never come online."""
    record_row(CLIENT, "wrong password rejected")
    acc = target.new_account("alice")
    bad = Account(acc.jid, acc.password + "-wrong")
    with pytest.raises(AssertionError, match="login of .* failed") as info:
        async with xmppjs_session(target, bad, "badpw"):
            pass
    assert "not-authorized" in str(info.value), f"expected SASL not-authorized (RFC 6120 §6.5.10): {info.value}"
