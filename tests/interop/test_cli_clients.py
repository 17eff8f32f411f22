"""Small command-line clients from Debian: go-sendxmpp (send, listen) and check_xmppng (monitoring probe)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import RecordRow
from harness import Account, Target
from peers import logged_in
from slixmpp import JID

CHECK_XMPPNG = "/usr/lib/nagios/plugins/check_xmppng"


@pytest.fixture
def private_home() -> Iterator[Path]:
    """go-sendxmpp reads ~/.config/go-sendxmpp: give it an empty HOME so nothing leaks in."""
    d = Path(tempfile.mkdtemp(prefix="interop-home-"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _need(binary: str, package: str) -> None:
    if shutil.which(binary) is None and not Path(binary).exists():
        pytest.fail(f"{binary} missing: run scripts/install-debs.sh {package}", pytrace=False)


def _sendxmpp_args(target: Target, acc: Account, direct_tls: bool) -> list[str]:
    port = target.direct_tls_port if direct_tls else target.port
    args = [
        "go-sendxmpp",
        "-n",
        "--timeout",
        "10",
        "-j",
        f"{target.host}:{port}",
        "-u",
        acc.jid,
        "-p",
        acc.password,
    ]
    return [*args, "-t"] if direct_tls else args


async def _one_shot(target: Target, home: Path, direct_tls: bool) -> None:
    _need("go-sendxmpp", "go-sendxmpp")
    sender, rcpt = target.new_account("gosend"), target.new_account("bob")
    body = f"go-sendxmpp says hi {secrets.token_hex(4)}"
    async with logged_in(target, rcpt, "listener") as b:
        proc = await asyncio.create_subprocess_exec(
            *_sendxmpp_args(target, sender, direct_tls),
            rcpt.jid,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, HOME=str(home)),
        )
        try:
            out, _ = await asyncio.wait_for(proc.communicate(body.encode() + b"\n"), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise AssertionError("go-sendxmpp did not finish within 30s") from None
        text = out.decode(errors="replace").strip()
        assert proc.returncode == 0, f"go-sendxmpp exited {proc.returncode}: {text[-200:]}"
        msg = await b.wait_message(sender.jid, body)
        assert msg["from"].resource, "message from go-sendxmpp arrived without the sender's resource"


async def test_go_sendxmpp_one_shot(target: Target, record_row: RecordRow, private_home: Path) -> None:
    """`echo MSG | go-sendxmpp RCPT` over STARTTLS reaches a slixmpp listener."""
    record_row("go-sendxmpp", "one-shot send (STARTTLS)")
    await _one_shot(target, private_home, direct_tls=False)


async def test_go_sendxmpp_one_shot_direct_tls(target: Target, record_row: RecordRow, private_home: Path) -> None:
    """Same with `-t` (XEP-0368 direct TLS)."""
    record_row("go-sendxmpp", "one-shot send (direct TLS)")
    if target.direct_tls_port is None:
        pytest.skip(f"{target.name} has no direct TLS port")
    await _one_shot(target, private_home, direct_tls=True)


async def test_go_sendxmpp_listen(target: Target, record_row: RecordRow, private_home: Path) -> None:
    """`go-sendxmpp -l` prints what a slixmpp client sends it (RFC 6121 §5 delivery to a bare JID)."""
    record_row("go-sendxmpp", "listen mode (-l) receives")
    _need("go-sendxmpp", "go-sendxmpp")
    listener, sender = target.new_account("golisten"), target.new_account("alice")
    token = f"to-go-listener-{secrets.token_hex(4)}"
    proc = await asyncio.create_subprocess_exec(
        *_sendxmpp_args(target, listener, False),
        "-l",
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, HOME=str(private_home)),
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with logged_in(target, sender, "to-go") as a:
            # The listener's login time is unknown: resend (numbered) until one is printed, at most 15s.
            found: str | None = None
            for i in range(30):
                if proc.returncode is not None:
                    break
                a.send_message(mto=JID(listener.jid), mbody=f"{token} #{i}", mtype="chat")
                with contextlib.suppress(TimeoutError):
                    while True:
                        raw = await asyncio.wait_for(proc.stdout.readline(), 0.5)
                        if not raw:
                            break
                        lines.append(raw.decode(errors="replace").rstrip())
                        if token in lines[-1]:
                            found = lines[-1]
                            break
                if found:
                    break
            assert found is not None, (
                f"go-sendxmpp -l printed no message from {sender.jid} within 15s"
                + (f" (exited {proc.returncode})" if proc.returncode is not None else "")
                + (f"; output: {' / '.join(lines[-3:])}" if lines else "")
            )
            assert f"{sender.jid}: {token}" in found, f"listener line does not show 'SENDER: BODY': {found!r}"
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 5)
            except TimeoutError:
                proc.kill()
                await proc.wait()


def test_check_xmppng_c2s_starttls(target: Target, record_row: RecordRow) -> None:
    """Nagios probe: c2s stream + STARTTLS offered and completed, exit 0 'XMPP OK'."""
    record_row("check_xmppng", "c2s STARTTLS probe")
    _need(CHECK_XMPPNG, "nagios-check-xmppng")
    cmd = [
        "/usr/bin/python3",
        CHECK_XMPPNG,
        "-H",
        target.host,
        "-p",
        str(target.port),
        "--c2s",
        "--servername",
        target.domain,
        "--starttls",
        "--no-check-certificates",
        "--warn-days",
        "0",
        "--crit-days",
        "0",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    text = (out.stdout + out.stderr).strip()
    assert out.returncode == 0, f"check_xmppng exit {out.returncode}: {text[:200]}"
    assert text.startswith("XMPP OK"), f"unexpected check_xmppng output: {text[:200]}"
