"""The ``xmppim`` command line (its command names are a contract other tools rely on)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from tests.helpers import free_port


def write_config(tmp: Path, port: int | None = None, domains: str = '["localhost"]') -> Path:
    cfg = tmp / "c.toml"
    cfg.write_text(
        f"""[server]
domains = {domains}
data_dir = "{tmp / 'var'}"
[c2s]
port = {port or free_port()}
direct_tls_port = {free_port()}
[component]
port = {free_port()}
[http]
port = {free_port()}
"""
    )
    return cfg


def xmppim(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "xmppim", "--config", str(cfg), "--log-level", "warning", *args],
        capture_output=True, text=True, timeout=120,
    )


def test_user_commands(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert xmppim(cfg, "user", "add", "zed@localhost", "--password", "a").returncode == 0
    assert xmppim(cfg, "user", "add", "amy@localhost", "--password", "b").returncode == 0
    again = xmppim(cfg, "user", "add", "amy@localhost", "--password", "b")
    assert again.returncode == 1 and "already exists" in again.stderr
    assert xmppim(cfg, "user", "list").stdout.split() == ["amy@localhost", "zed@localhost"]
    assert xmppim(cfg, "user", "passwd", "amy@localhost", "--password", "c").returncode == 0
    assert xmppim(cfg, "user", "del", "zed@localhost").returncode == 0
    assert xmppim(cfg, "user", "list", "localhost").stdout.split() == ["amy@localhost"]
    bad = xmppim(cfg, "user", "add", "x@example.org", "--password", "p")
    assert bad.returncode == 2 and "not served here" in bad.stderr


def test_check_reports_problems_in_plain_words(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cfg = write_config(tmp_path, port=busy.getsockname()[1])
        r = xmppim(cfg, "check")
        assert r.returncode == 1
        assert "port" in r.stdout and "in use" in r.stdout
    cfg = write_config(tmp_path)
    assert xmppim(cfg, "cert", "generate").returncode == 0
    ok = xmppim(cfg, "check")
    assert ok.returncode == 0, ok.stdout
    assert "all checks passed" in ok.stdout
    # a certificate that does not cover a newly added domain is named
    cfg = write_config(tmp_path, domains='["localhost", "chat.example.net"]')
    r = xmppim(cfg, "check")
    assert r.returncode == 1 and "chat.example.net" in r.stdout


def test_bad_config_key_is_named(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[c2s]\nprot = 5222\n")
    r = xmppim(cfg, "check")
    assert r.returncode == 2 and "prot" in r.stderr


def test_worker_count_out_of_range_is_refused(tmp_path: Path) -> None:
    r = xmppim(write_config(tmp_path), "serve", "--workers", "0")
    assert r.returncode == 2 and "--workers must be from 1 to 64" in r.stderr
    cfg = tmp_path / "w.toml"
    cfg.write_text("[server]\nworkers = 65\n")
    r = xmppim(cfg, "check")
    assert r.returncode == 2 and "[server] workers must be from 1 to 64" in r.stderr


def test_plugins_list(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    r = xmppim(cfg, "plugins", "list", "--json")
    rows = {p["name"]: p for p in json.loads(r.stdout)}
    assert rows["ping"]["enabled"] and rows["ping"]["builtin"]
    assert any("XEP-0199" in x for x in rows["ping"]["xeps"])
    r = xmppim(cfg, "plugins", "list", "--registrations")
    assert "hook iq/get/urn:xmpp:ping" in r.stdout


def test_wallet_cli(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    assert xmppim(cfg, "user", "add", "amy@localhost", "--password", "a").returncode == 0
    minted = xmppim(cfg, "wallet", "mint", "amy@localhost", "120", "--memo", "welcome")
    assert minted.returncode == 0, minted.stderr
    bal = xmppim(cfg, "wallet", "balance", "amy@localhost")
    assert bal.returncode == 0 and bal.stdout.strip() == "120"
    hist = xmppim(cfg, "wallet", "history", "amy@localhost").stdout.strip().splitlines()
    assert len(hist) == 1 and "120" in hist[0] and "welcome" in hist[0]
    unknown = xmppim(cfg, "wallet", "mint", "nobody@localhost", "5")
    assert unknown.returncode == 1 and "unknown-recipient" in unknown.stderr
    export = xmppim(cfg, "wallet", "export", "--output", str(tmp_path / "x.csv"))
    assert export.returncode == 0
    assert (tmp_path / "x.csv").read_text().count("\n") == 2  # header + one transfer
    verify = xmppim(cfg, "wallet", "verify")
    assert verify.returncode == 0 and verify.stdout.startswith("OK")
