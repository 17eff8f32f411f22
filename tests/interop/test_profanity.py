"""profanity 0.13 (Debian, libstrophe) against each target, driven through tmux, with a slixmpp peer.

profanity is a terminal client: the test starts it inside a private tmux server (own socket, own HOME), types
commands with ``send-keys`` and reads what a user would see with ``capture-pane``.  Login is
``/connect JID server HOST port PORT tls force`` + password prompt + ``/tls allow`` for the self-signed
certificate, so a session only exists over TLS (STARTTLS, RFC 6120 §5).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import RecordRow
from harness import Account, Target
from peers import SlixClient, cleanup_roster, logged_in
from slixmpp import JID
from test_xmppjs import remove_roster_items

CLIENT = "profanity"


class ProfanityPane:
    """One profanity process in a private tmux server; every wait bounded, failures quote the screen."""

    def __init__(self, account: Account) -> None:
        self.account = account
        self.dir = Path(tempfile.mkdtemp(prefix="xmppim-interop-profanity-"))
        self.home = self.dir / "home"
        self.home.mkdir()
        self.socket = str(self.dir / "tmux.sock")
        self.full_jid = ""

    async def _tmux(self, *args: str, check: bool = True) -> str:
        proc = await asyncio.create_subprocess_exec(
            "tmux", "-S", self.socket, *args,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError(f"tmux {args[0]} did not return within 10s") from None
        text = out.decode(errors="replace")
        if check and proc.returncode != 0:
            raise AssertionError(f"tmux {args[0]} failed ({proc.returncode}): {text.strip()[:200]}")
        return text

    async def start(self) -> None:
        """Start profanity in a detached 200x60 tmux session with a private HOME (no accounts, no history)."""
        env = f"env HOME={self.home} TERM=xterm-256color LANG=C.UTF-8"
        await self._tmux("new-session", "-d", "-s", "prof", "-x", "200", "-y", "60", f"{env} profanity")
        await self._tmux("set-option", "-t", "prof", "history-limit", "5000")
        await self.wait_text("Type '/help'", "profanity's start screen")

    async def screen(self) -> str:
        """Visible pane plus scroll-back, wrapped lines joined (-J)."""
        return await self._tmux("capture-pane", "-p", "-J", "-S", "-300", "-t", "prof", check=False)

    async def type(self, text: str) -> None:
        """Type a line literally (-l: no key-name interpretation) and press Enter."""
        await self._tmux("send-keys", "-t", "prof", "-l", text)
        await self._tmux("send-keys", "-t", "prof", "Enter")

    async def wait_text(self, pattern: str, what: str, timeout: float = 10.0) -> re.Match[str]:  # noqa: ASYNC109
        """Wait until the screen matches ``pattern`` (a regex, or plain text when it has no regex syntax)."""
        rx = re.compile(pattern if any(c in pattern for c in "\\()[]*+?|^$") else re.escape(pattern))
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = await self.screen()
            if m := rx.search(text):
                return m
            await asyncio.sleep(0.2)
        tail = " / ".join(line.strip() for line in text.strip().splitlines()[-4:] if line.strip())
        raise AssertionError(f"profanity did not show {what} within {timeout:.0f}s; screen ends: {tail[-300:]}")

    async def login(self, target: Target, direct_tls: bool = False) -> None:
        """/connect ... tls force (STARTTLS) or tls legacy (direct TLS on the XEP-0368 port), password
        prompt, /tls allow (self-signed) -> 'logged in successfully'."""
        acc = self.account
        port, mode = (target.direct_tls_port, "legacy") if direct_tls else (target.port, "force")
        await self.type(f"/connect {acc.jid} server {target.host} port {port} tls {mode}")
        await self.wait_text("Enter password:", "the password prompt")
        await self.type(acc.password)
        m = await self.wait_text(
            r"Use '/tls allow'|logged in successfully|Login failed|[Cc]onnection (failed|lost)",
            "the certificate prompt or the login result",
            timeout=20,
        )
        if "/tls allow" in m.group(0):
            await self.type("/tls allow")
        m = await self.wait_text(
            r"(\S+) logged in successfully|Login failed[^\n]*|[Cc]onnection (failed|lost)[^\n]*",
            "the login result",
            timeout=20,
        )
        if "logged in successfully" not in m.group(0):
            raise AssertionError(f"profanity login of {acc.jid} failed: {m.group(0).strip()}")
        self.full_jid = m.group(1)

    async def close(self) -> None:
        """/quit, then end our private tmux server (its socket is ours alone) and remove the HOME dir."""
        with contextlib.suppress(AssertionError):
            await self.type("/quit")
            for _ in range(25):  # up to 5s for profanity to close its stream and exit
                if not (await self._tmux("ls", check=False)).startswith("prof:"):
                    break
                await asyncio.sleep(0.2)
        with contextlib.suppress(AssertionError):
            await self._tmux("kill-server", check=False)
        if not os.environ.get("INTEROP_KEEP_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.asynccontextmanager
async def profanity_session(target: Target, account: Account, direct_tls: bool = False) -> AsyncIterator[ProfanityPane]:
    """A logged-in profanity; the failure message quotes the screen's last lines."""
    if direct_tls and target.direct_tls_port is None:
        pytest.skip(f"{target.name} has no direct TLS port")
    for binary, pkg in (("profanity", "profanity"), ("tmux", "tmux")):
        if shutil.which(binary) is None:
            pytest.fail(f"{binary} missing: run scripts/install-debs.sh {pkg}", pytrace=False)
    pane = ProfanityPane(account)
    try:
        await pane.start()
        await pane.login(target, direct_tls)
        yield pane
    finally:
        await pane.close()


async def _handshake(pane: ProfanityPane, peer: SlixClient) -> None:
    """RFC 6121 §3 from profanity: /roster add + /sub request; peer approves and asks back; /sub allow."""
    me, jb = pane.account.jid, peer.boundjid.bare
    await pane.type(f"/roster add {jb} Peer")
    await pane.type(f"/sub request {jb}")
    await peer.wait_presence(me, "subscribe")
    peer.send_presence(pto=me, ptype="subscribed")
    peer.send_presence(pto=me, ptype="subscribe")
    await pane.wait_text(f"authorization request from {jb}", f"the subscription request of {jb}")
    await pane.type(f"/sub allow {jb}")
    await peer.wait_presence(me, "subscribed")
    await peer.wait_roster_push(me, subscription="both")


# ---------------------------------------------------------------------------------------------------
# scenarios


async def test_login_starttls(target: Target, record_row: RecordRow) -> None:
    """RFC 6120 §5-§7 via libstrophe: STARTTLS forced, SASL, bind; profanity reports our full JID."""
    record_row(CLIENT, "login (STARTTLS)")
    acc = target.new_account("alice")
    async with profanity_session(target, acc) as pane:
        assert JID(pane.full_jid).bare == acc.jid, f"profanity logged in as {pane.full_jid}, not {acc.jid}"
        assert JID(pane.full_jid).resource, "profanity shows no bound resource"


async def test_login_direct_tls(target: Target, record_row: RecordRow) -> None:
    """XEP-0368 via libstrophe's 'tls legacy': TLS from the first byte on the direct TLS port."""
    record_row(CLIENT, "login (direct TLS, XEP-0368)")
    acc = target.new_account("alice")
    async with profanity_session(target, acc, direct_tls=True) as pane:
        assert JID(pane.full_jid).bare == acc.jid, f"profanity logged in as {pane.full_jid}, not {acc.jid}"


async def test_message_both_ways(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §5: /msg reaches the peer; the peer's reply appears in profanity's chat window."""
    record_row(CLIENT, "message both ways")
    a, b = target.new_account("alice"), target.new_account("bob")
    async with logged_in(target, b, "peer") as peer, profanity_session(target, a) as pane:
        out = f"profanity says hi {secrets.token_hex(4)}"
        await pane.type(f"/msg {b.jid} {out}")
        got = await peer.wait_message(a.jid, out)
        assert got["from"].full == pane.full_jid, f"peer saw sender {got['from']}, profanity is {pane.full_jid}"
        reply = f"peer replies {secrets.token_hex(4)}"
        peer.send_message(mto=got["from"], mbody=reply, mtype="chat")
        await pane.wait_text(reply, f"the reply {reply!r} from {b.jid}")


async def test_roster_subscription_handshake(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §2-3 from profanity's /roster and /sub commands; both sides end in subscription='both'."""
    record_row(CLIENT, "roster add + subscription handshake")
    a, b = target.new_account("alice"), target.new_account("bob")
    async with logged_in(target, b, "peer", fetch_roster=True) as peer:
        try:
            async with profanity_session(target, a) as pane:
                await _handshake(pane, peer)
                # The peer's roster is final here, profanity's own roster push may still be on its way:
                # ask again (bounded) until /sub show reports 'both'.
                both = rf"{re.escape(b.jid)} subscription status: both"
                for attempt in range(10):
                    await pane.type(f"/sub show {b.jid}")
                    try:
                        await pane.wait_text(both, f"'/sub show {b.jid}' reporting 'both'", timeout=1)
                        break
                    except AssertionError:
                        if attempt == 9:
                            raise
                item = (await peer.roster_items()).get(a.jid)
                assert item and item.get("subscription") == "both", f"peer roster item for {a.jid}: {item}"
        finally:
            await cleanup_roster(peer, a.jid)
            await remove_roster_items(target, a, b.jid)


async def test_presence_both_ways(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §4 after mutual subscription: /status set reaches the peer; the peer's 'away' shows up."""
    record_row(CLIENT, "presence both ways")
    a, b = target.new_account("alice"), target.new_account("bob")
    async with logged_in(target, b, "peer", fetch_roster=True) as peer:
        try:
            async with profanity_session(target, a) as pane:
                await _handshake(pane, peer)
                mine = f"profanity-dnd-{secrets.token_hex(3)}"
                await pane.type(f'/status set dnd "{mine}"')
                p = await peer.wait_presence(a.jid, "dnd", status=mine)
                assert p["from"].full == pane.full_jid, f"presence came from {p['from']}, not {pane.full_jid}"
                theirs = f"peer-status-{secrets.token_hex(3)}"
                peer.send_presence(pshow="away", pstatus=theirs)
                await pane.type(f"/status get {b.jid}")
                await pane.wait_text(rf"away[^\n]*{theirs}|{theirs}[^\n]*away", f"{b.jid} shown away with {theirs!r}")
        finally:
            await cleanup_roster(peer, a.jid)
            await remove_roster_items(target, a, b.jid)


async def test_wrong_password_rejected(target: Target, record_row: RecordRow) -> None:
    """RFC 6120 §6.5: a wrong password typed at the prompt ends in profanity's 'Login failed', no session."""
    record_row(CLIENT, "wrong password rejected")
    acc = target.new_account("alice")
    with pytest.raises(AssertionError, match="login of .* failed") as info:
        async with profanity_session(target, Account(acc.jid, acc.password + "-wrong")):
            pass
    assert "Login failed" in str(info.value), f"profanity did not report a login failure: {info.value}"
