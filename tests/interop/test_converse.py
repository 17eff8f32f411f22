"""Converse.js 14 (npm) in Debian's headless Chromium against each target, with a slixmpp peer.

Converse is a browser client: it only speaks WebSocket (RFC 7395) or BOSH (XEP-0124/0206).  The test serves
``node/converse.html`` + Converse's dist from a loopback origin and drives the page through
``node/converse-driver.js`` (playwright-core, /usr/bin/chromium) like a user: the login form, clicking a
contact, typing into the chat textarea, the "Add a contact" and status dialogs.  What the user would see
(message text in the DOM, a contact's status) is what is asserted.  A target without WebSocket/BOSH gets
these rows as *skipped* ("server has no WebSocket/BOSH endpoint"), never as passed.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import RecordRow
from harness import Account, Target
from peers import SlixClient, cleanup_roster, logged_in
from slixmpp import JID
from test_xmppjs import NODE_DIR, JsonLinesProcess, ensure_node_deps, node_argv, remove_roster_items

CLIENT = "converse.js"
CHROMIUM = "/usr/bin/chromium"
DIST = NODE_DIR / "node_modules" / "converse.js" / "dist"
NO_HTTP = "server has no WebSocket/BOSH endpoint"
SHOTS = Path(tempfile.gettempdir()) / "xmppim-interop-converse"


# ---------------------------------------------------------------------------------------------------
# the page's origin: a tiny static server on 127.0.0.1 (own thread, one per test session)


class _PageHandler(http.server.SimpleHTTPRequestHandler):
    """``/`` -> converse.html, ``/dist/...`` -> Converse's dist; nothing else."""

    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".js": "text/javascript",
        ".mjs": "text/javascript",
        ".wasm": "application/wasm",
        ".json": "application/json",
    }

    def translate_path(self, path: str) -> str:
        rel = urllib.parse.urlsplit(path).path
        if rel in ("/", "/index.html"):
            return str(NODE_DIR / "converse.html")
        if rel.startswith("/dist/"):
            candidate = (DIST / urllib.parse.unquote(rel[len("/dist/") :])).resolve()
            if candidate.is_relative_to(DIST.resolve()):
                return str(candidate)
        return str(NODE_DIR / "does-not-exist")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass


@pytest.fixture(scope="session")
def page_origin() -> Iterator[str]:
    """``http://127.0.0.1:PORT``: serves the Converse page (a loopback origin, as Chromium requires)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _PageHandler)
    thread = threading.Thread(target=server.serve_forever, name="converse-page", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------------------------------------------
# one Chromium per session (started here, ended by PID), one browser context + page per scenario

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # root
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=LocalNetworkAccessChecks",  # else WebSockets from the page to loopback are blocked
    "--no-first-run",
]


@pytest.fixture(scope="session")
def chromium_cdp() -> Iterator[str | None]:
    """A shared headless Chromium's CDP endpoint (``http://127.0.0.1:PORT``), or None if it did not start
    (then every driver launches its own browser, which is slower but equivalent)."""
    if not Path(CHROMIUM).exists():
        yield None
        return
    profile = Path(tempfile.mkdtemp(prefix="xmppim-interop-chromium-"))
    log = open(profile / "chromium.log", "wb")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [CHROMIUM, *CHROMIUM_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    endpoint: str | None = None
    port_file = profile / "DevToolsActivePort"  # Chromium writes "PORT\n/devtools/browser/ID"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            endpoint = f"http://127.0.0.1:{int(port_file.read_text().split()[0])}"
            break
        time.sleep(0.1)
    try:
        yield endpoint
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # the group Chromium leads (started above)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)


def _settings(target: Target, transport: str) -> dict[str, str]:
    if transport == "websocket" and target.websocket_url:
        return {"websocket_url": target.websocket_url}
    if transport == "bosh" and target.bosh_url:
        return {"bosh_service_url": target.bosh_url}
    if not target.websocket_url and not target.bosh_url:
        pytest.skip(NO_HTTP)
    pytest.skip(f"server has no {'WebSocket' if transport == 'websocket' else 'BOSH'} endpoint")


def _any_transport(target: Target) -> str:
    """WebSocket when the target has it, else BOSH (the roster/presence rows are not about transport).

    Called before anything else in a scenario, so a target without either is a skip, not a peer failure.
    """
    if not target.websocket_url and not target.bosh_url:
        pytest.skip(NO_HTTP)
    return "websocket" if target.websocket_url else "bosh"


class ConversePage:
    """The driver process plus the sentences our assertions need."""

    def __init__(self, drv: JsonLinesProcess, account: Account, transport: str) -> None:
        self.drv = drv
        self.account = account
        self.transport = transport
        self.bound: str = ""
        self.service: str = ""

    async def call(self, cmd: str, wait: float = 10.0, **args: Any) -> dict[str, Any]:
        """Browser action with a bound of ``wait`` seconds in the page and a few more in Python."""
        return await self.drv.call(cmd, timeout=wait + 10, timeout_ms=int(wait * 1000), **args)

    async def login(self, url: str) -> None:
        """Fill Converse's login form and submit it, as a user would; wait until Converse is connected."""
        await self.call("open", wait=30, url=url)
        await self.call("fill", selector="input[name=jid]", value=self.account.jid)
        await self.call("fill", selector="input[name=password]", value=self.account.password)
        await self.call("click", selector="form button[type=submit]")
        try:
            res = await self.call("wait_probe", wait=20, connected=True)
        except AssertionError as exc:
            raise AssertionError(f"Converse ({self.transport}) login of {self.account.jid} failed: {exc}") from None
        self.bound = str(res["probe"]["jid"])
        self.service = str(res["probe"]["transport"])

    def contact(self, jid: str) -> str:
        """The roster entry of ``jid`` in the control box (roster item, unsaved contact or request)."""
        return f'a.open-chat[data-jid="{jid}"]'

    def chat(self, jid: str) -> str:
        return f'converse-chat[jid="{jid}"]'

    async def screenshot(self, name: str) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        with contextlib.suppress(AssertionError):
            await self.call("screenshot", path=str(path))
        return path


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: run scripts/install-debs.sh chromium", pytrace=False)


@contextlib.asynccontextmanager
async def converse_session(
    target: Target, origin: str, cdp: str | None, account: Account, transport: str, name: str
) -> AsyncIterator[ConversePage]:
    """Chromium with Converse logged in as ``account`` over ``transport``; screenshot kept on failure."""
    settings = _settings(target, transport)
    ensure_node_deps()
    _need_chromium()
    drv = JsonLinesProcess(
        f"Converse.js ({transport}) as {account.local}",
        node_argv("converse-driver.js", json.dumps({"chromium": CHROMIUM, "args": CHROMIUM_FLAGS, "cdp": cdp})),
    )
    await drv.start()
    page = ConversePage(drv, account, transport)
    try:
        url = f"{origin}/?settings={urllib.parse.quote(json.dumps(settings))}"
        await page.login(url)
        yield page
    except BaseException:
        shot = await page.screenshot(name)
        errors = [e.get("text") for e in drv.events if e.get("event") == "pageerror"]
        if errors:
            print(f"converse page errors: {errors[-3:]}")
        print(f"converse screenshot: {shot}")
        raise
    finally:
        await drv.close()


async def _handshake(page: ConversePage, peer: SlixClient) -> None:
    """RFC 6121 §3 from the Converse UI: "Add a contact" dialog, then the peer approves and subscribes back.

    Converse sends roster set + subscribe; once the peer has approved (subscription 'to') Converse approves
    the peer's own request by itself, so both rosters must end in subscription='both'.
    """
    me, jb = page.account.jid, peer.boundjid.bare
    await page.call("click", selector="converse-dropdown.dropdown--contacts button.dropdown-toggle")
    await page.call("click", selector="converse-dropdown.dropdown--contacts a.add-contact")
    await page.call("fill", selector="form.add-xmpp-contact input[name=jid]", value=jb)
    await page.call("fill", selector="form.add-xmpp-contact input[name=name]", value="Peer")
    await page.call("click", selector="form.add-xmpp-contact button[type=submit]")
    await peer.wait_presence(me, "subscribe")
    peer.send_presence(pto=me, ptype="subscribed")
    peer.send_presence(pto=me, ptype="subscribe")
    await peer.wait_presence(me, "subscribed")
    await peer.wait_roster_push(me, subscription="both")
    await page.call("wait_visible", selector=page.contact(jb))
    names = await page.call("wait_text", selector=page.contact(jb), text="Peer")
    assert any("Peer" in t for t in names["texts"]), f"Converse roster does not show the contact name: {names}"


# ---------------------------------------------------------------------------------------------------
# scenarios


@pytest.mark.parametrize("transport", ["websocket", "bosh"])
async def test_login(
    target: Target, record_row: RecordRow, page_origin: str, chromium_cdp: str | None, transport: str
) -> None:
    """RFC 7395 / XEP-0206: the login form ends in a connected session bound to our JID, roster shown."""
    record_row(CLIENT, f"login ({'WebSocket' if transport == 'websocket' else 'BOSH'})")
    _settings(target, transport)  # skip first when the target lacks this transport
    acc = target.new_account("alice")
    async with converse_session(target, page_origin, chromium_cdp, acc, transport, f"login-{transport}") as page:
        assert JID(page.bound).bare == acc.jid, f"Converse bound {page.bound}, expected {acc.jid}/…"
        wanted = target.websocket_url if transport == "websocket" else target.bosh_url
        assert page.service == wanted, f"Converse connected through {page.service}, not {wanted}"
        profile = await page.call("wait_text", selector="converse-user-profile", text=acc.local)
        assert profile["texts"], "Converse shows no user profile after login"
        assert not (await page.call("texts", selector="input[name=password]"))["texts"], (
            "the login form is still shown although Converse reports a connection"
        )


@pytest.mark.parametrize("transport", ["websocket", "bosh"])
async def test_message_both_ways(
    target: Target, record_row: RecordRow, page_origin: str, chromium_cdp: str | None, transport: str
) -> None:
    """RFC 6121 §5: a peer's message shows in Converse's DOM; a message typed in Converse reaches the peer."""
    record_row(CLIENT, f"message both ways ({'WebSocket' if transport == 'websocket' else 'BOSH'})")
    _settings(target, transport)
    a, b = target.new_account("alice"), target.new_account("bob")
    async with (
        logged_in(target, b, "peer") as peer,
        converse_session(target, page_origin, chromium_cdp, a, transport, f"message-{transport}") as page,
    ):
        incoming = f"hello Converse {secrets.token_hex(4)}"
        peer.send_message(mto=JID(a.jid), mbody=incoming, mtype="chat")
        # A message from a non-contact appears in the control box; the user clicks it to open the chat.
        await page.call("click", selector=page.contact(b.jid))
        await page.call("wait_text", selector=f"{page.chat(b.jid)} converse-chat-message", text=incoming)
        outgoing = f"typed in Converse {secrets.token_hex(4)}"
        await page.call("type_enter", selector=f"{page.chat(b.jid)} textarea.chat-textarea", text=outgoing)
        got = await peer.wait_message(a.jid, outgoing)
        assert got["from"].full == page.bound, f"peer saw sender {got['from']}, Converse bound {page.bound}"
        await page.call("wait_text", selector=f"{page.chat(b.jid)} converse-chat-message", text=outgoing)


async def test_roster_subscription_handshake(
    target: Target, record_row: RecordRow, page_origin: str, chromium_cdp: str | None
) -> None:
    """RFC 6121 §2-3 started from Converse's "Add a contact" dialog; both sides end in subscription='both'."""
    record_row(CLIENT, "roster add + subscription handshake")
    transport = _any_transport(target)
    a, b = target.new_account("alice"), target.new_account("bob")
    async with logged_in(target, b, "peer", fetch_roster=True) as peer:
        try:
            async with converse_session(target, page_origin, chromium_cdp, a, transport, "roster") as page:
                await _handshake(page, peer)
                item = (await peer.roster_items()).get(a.jid)
                assert item and item.get("subscription") == "both", f"peer roster item for {a.jid}: {item}"
                # subscription 'both'/'to' is when Converse draws the contact's status icon (rosterview).
                await page.call("wait_visible", selector=f"{page.contact(b.jid)} converse-icon.chat-status")
        finally:
            await cleanup_roster(peer, a.jid)
            await remove_roster_items(target, a, b.jid)


async def test_presence_both_ways(
    target: Target, record_row: RecordRow, page_origin: str, chromium_cdp: str | None
) -> None:
    """RFC 6121 §4 after mutual subscription: the peer's 'away' shows in Converse's roster; the status
    chosen in Converse's status dialog reaches the peer."""
    record_row(CLIENT, "presence both ways")
    transport = _any_transport(target)
    a, b = target.new_account("alice"), target.new_account("bob")
    async with logged_in(target, b, "peer", fetch_roster=True) as peer:
        try:
            async with converse_session(target, page_origin, chromium_cdp, a, transport, "presence") as page:
                await _handshake(page, peer)
                theirs = f"peer is away {secrets.token_hex(3)}"
                peer.send_presence(pshow="away", pstatus=theirs)
                await page.call("wait_visible", selector=f"{page.contact(b.jid)} .contact-name--away")
                mine = f"Converse is busy {secrets.token_hex(3)}"
                await page.call("click", selector="converse-user-profile a.change-status")
                await page.call("click", selector="form.set-xmpp-status input[value=dnd]")
                await page.call("fill", selector="form.set-xmpp-status input[name=status_message]", value=mine)
                await page.call("click", selector="form.set-xmpp-status button[type=submit]")
                p = await peer.wait_presence(a.jid, "dnd", status=mine)
                assert p["from"].full == page.bound, f"presence came from {p['from']}, not {page.bound}"
        finally:
            await cleanup_roster(peer, a.jid)
            await remove_roster_items(target, a, b.jid)
