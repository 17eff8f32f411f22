"""Self-tests of the interop tier's machinery (not scenarios; `cli.py` leaves this dir out of the tier).

They prove the tier *can fail*: a failing scenario becomes a FAIL cell with the assertion's sentence as
its reason, the closing line counts it and the CLI exits non-zero; a short external account pool skips.
Run: .venv/bin/python -m pytest tests/interop/selftest -p no:cacheprovider
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

INTEROP = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(INTEROP))

from report import Row, closing_line, render_markdown, summarise  # noqa: E402

FAKE_SCENARIOS = """
import pytest

def test_ok(target, record_row):
    record_row("fakeclient", "works")
    assert target.name == "external"
    assert target.new_account().jid == "a@localhost"

def test_broken(target, record_row):
    record_row("fakeclient", "roster push")
    assert False, "alice did not receive a roster push for bob within 10s"

def test_crash(target, record_row):
    record_row("fakeclient", "crash")
    raise ConnectionResetError("peer went away")

def test_needs_three(target, record_row):
    record_row("fakeclient", "three accounts")
    for _ in range(3):
        target.new_account()

@pytest.mark.interop_row("fakeclient", "static row")
def test_marker(target):
    pytest.skip("server has no WebSocket endpoint")
"""


def _fake_tier(tmp_path: Path) -> Path:
    d = tmp_path / "tier"
    d.mkdir()
    for name in ("conftest.py", "harness.py", "report.py"):
        shutil.copy(INTEROP / name, d / name)
    (d / "test_fake.py").write_text(FAKE_SCENARIOS)
    return d


def test_cli_reports_failures_readably(tmp_path: Path) -> None:
    tier = _fake_tier(tmp_path)
    results = tmp_path / "results"
    cmd = [
        sys.executable, str(INTEROP / "cli.py"), "--tests", str(tier), "--results", str(results), "-q",
        "--host", "127.0.0.1", "--port", "1", "--domain", "localhost",
        "--account", "a@localhost:pw", "--account", "b@localhost:pw:with:colons",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    last = out.stdout.strip().splitlines()[-1]
    assert last == "1 passed, 2 failed, 2 skipped", out.stdout
    doc = json.loads((results / "latest.json").read_text())
    cells = {(r["feature"], r["server"]): (r["outcome"], r["reason"]) for r in doc["rows"]}
    assert cells[("works", "external")] == ("pass", "")
    assert cells[("roster push", "external")] == (
        "fail",
        "alice did not receive a roster push for bob within 10s",
    )
    assert cells[("crash", "external")] == ("fail", "ConnectionResetError: peer went away")
    assert cells[("three accounts", "external")][0] == "skip"
    assert "2 --account(s)" in cells[("three accounts", "external")][1]
    assert cells[("static row", "external")] == ("skip", "server has no WebSocket endpoint")
    md = (results / "latest.md").read_text()
    assert "| fakeclient | roster push | **FAIL** (alice did not receive a roster push" in md
    assert "## Failures" in md
    assert doc["servers"] == {"external": "external localhost at 127.0.0.1:1"}


def test_target_that_does_not_start_fails_every_scenario_by_name(tmp_path: Path) -> None:
    tier = _fake_tier(tmp_path)
    results = tmp_path / "results"
    cmd = [
        sys.executable, "-m", "pytest", str(tier), "-q", "-p", "no:cacheprovider", "-k", "ok or broken",
        "--interop-results", str(results), "--target", "external,bogus",
        "--external-host", "127.0.0.1", "--external-domain", "localhost",
        "--external-account", "a@localhost:pw",
    ]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 1, out.stdout + out.stderr
    doc = json.loads((results / "latest.json").read_text())
    bogus = {r["feature"]: (r["outcome"], r["reason"]) for r in doc["rows"] if r["server"] == "bogus"}
    # Rows carry the scenario's (client, feature) even though record_row never ran on this target.
    assert set(bogus) == {"works", "roster push"}, bogus
    for outcome, reason in bogus.values():
        assert outcome == "fail"
        assert reason == "setup: bogus did not start: unknown managed target 'bogus'", reason
    assert doc["servers"]["bogus"].startswith("bogus did not start")
    assert "\n1 passed, 3 failed, 0 skipped\n" in out.stdout, out.stdout


def test_cli_refuses_external_without_two_accounts(tmp_path: Path) -> None:
    cmd = [sys.executable, str(INTEROP / "cli.py"), "--host", "h", "--domain", "d", "--account", "a@d:p"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "two --account" in out.stderr


def test_markdown_matrix_columns_and_escaping() -> None:
    rows = [
        Row("c1", "f1", "xmppim", "pass", "", "t::a", 0.1),
        Row("c1", "f1", "prosody", "fail", "bad | pipe\nsecond line", "t::a", 0.1),
        Row("c2", "f2", "prosody", "skip", "no direct TLS", "t::b", 0.0),
    ]
    doc: dict[str, Any] = {
        "date": "2026-01-01 00:00 UTC",
        "servers": {"xmppim": "xmppim 0.1", "prosody": "Prosody 0.12"},
        "clients": {"c1": "1", "c2": "2"},
        "summary": summarise(rows),
        "rows": [r.__dict__ for r in rows],
    }
    md = render_markdown(doc)
    assert "| client | feature | xmppim | prosody |" in md
    assert "| c1 | f1 | pass | **FAIL** (bad \\| pipe second line) |" in md
    assert "| c2 | f2 | — | skip (no direct TLS) |" in md
    assert closing_line(doc["summary"]) == "1 passed, 1 failed, 1 skipped"


def _fault_doc(tmp_path: Path, server_version: str, rows: list[Row]) -> Path:
    from report import write_results

    d = tmp_path / "fault"
    write_results(rows, "now", {"xmppim": server_version}, {}, d, extra={"fault": "drop-roster-push"})
    return d


def test_expect_failure_verdict_counts_only_real_scenario_failures(tmp_path: Path) -> None:
    from cli import expect_failure_verdict

    setup_only = [Row("c", "f", "xmppim", "fail", "setup: boom", "t", 0.0)]
    real = [*setup_only, Row("c", "roster", "xmppim", "fail", "alice did not receive a roster push", "t2", 1.0)]
    prosody_only = [Row("c", "roster", "prosody", "fail", "x", "t3", 1.0)]
    assert expect_failure_verdict(_fault_doc(tmp_path / "a", "xmppim 0.1", setup_only), "f", "l") == 1
    assert expect_failure_verdict(_fault_doc(tmp_path / "b", "xmppim 0.1", real), "f", "l") == 0
    assert expect_failure_verdict(_fault_doc(tmp_path / "c", "xmppim 0.1", prosody_only), "f", "l") == 1
    assert expect_failure_verdict(_fault_doc(tmp_path / "d", "xmppim did not start: x", real), "f", "l") == 1
