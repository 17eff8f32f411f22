"""Fixtures of the interoperability tier (issue 11).

Contract (other scenario files code against it):

* ``target`` — session-scoped :class:`harness.Target`, parametrised over the servers selected with
  ``--target xmppim,prosody`` or env ``INTEROP_TARGETS`` (``external`` when ``--external-host`` is given).
* ``record_row(client, feature)`` — call it in a test (any number of times) to put that test's outcome into
  the matrix as (client, feature, server) -> pass/fail/skip + reason.  The marker
  ``@pytest.mark.interop_row("client", "feature")`` does the same statically (it also covers set-up errors).
  Fail reasons are the first line of the exception: write assertion messages a reader understands.

Results: ``tests/interop/results/latest.json`` and ``latest.md`` (see report.py), written at session end.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    REPO,
    Account,
    Target,
    deb_version,
    external_target,
    managed_target,
    parse_account,
    py_version,
)
from report import RESULTS_DIR, Row, closing_line, summarise, write_results  # noqa: E402

__all__ = ["Account", "Target"]

RecordRow = Callable[..., None]
_ROWS_KEY = pytest.StashKey[list[tuple[str, str]]]()
_TARGETS_SEEN: dict[str, Target] = {}
_TARGET_ERRORS: dict[str, str] = {}
_CLIENT_VERSIONS: dict[str, str] = {}
_RESULTS: list[Row] = []
_ROWS_BY_TEST: dict[str, list[tuple[str, str]]] = {}
_UNNAMED: set[str] = set()


def _name_unnamed_rows() -> None:
    """Give rows of tests that failed before ``record_row`` the (client, feature) they have elsewhere."""
    fixed: list[Row] = []
    for r in _RESULTS:
        keys = _ROWS_BY_TEST.get(r.test.split("[", 1)[0]) if r.test in _UNNAMED else None
        if keys:
            fixed += [Row(c, f, r.server, r.outcome, r.reason, r.test, r.duration) for c, f in keys]
        else:
            fixed.append(r)
    _RESULTS[:] = fixed
    _UNNAMED.clear()


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("interop", "xmppim interoperability tier")
    g.addoption("--target", default=None, help="comma list of targets: xmppim,xmppim-2w,prosody,external")
    g.addoption("--external-host", default=None)
    g.addoption("--external-port", type=int, default=5222)
    g.addoption("--external-direct-tls-port", type=int, default=None)
    g.addoption("--external-domain", default=None)
    g.addoption("--external-websocket-url", default=None)
    g.addoption("--external-bosh-url", default=None)
    g.addoption("--external-account", action="append", default=[], help="JID:PASSWORD (repeat)")
    g.addoption(
        "--xmppim-fault",
        default=os.environ.get("XMPPIM_FAULT"),
        help="start xmppim with XMPPIM_FAULT=NAME (test-only fault injection)",
    )
    g.addoption("--interop-results", default=str(RESULTS_DIR), help="directory for latest.json / latest.md")


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # `timeout` in scripts/interop.sh sends SIGTERM: turn it into an interrupt so pytest still tears
    # the session down (stops our servers) and the results of finished scenarios are written.
    signal.signal(signal.SIGTERM, _interrupt)
    config.addinivalue_line("markers", "interop_row(client, feature): matrix row(s) this test fills")


def selected_targets(config: pytest.Config) -> list[str]:
    """Targets from --target, else INTEROP_TARGETS, else external/xmppim+xmppim-2w+prosody/prosody."""
    raw = config.getoption("--target") or os.environ.get("INTEROP_TARGETS")
    if raw:
        return [t.strip() for t in raw.split(",") if t.strip()]
    if config.getoption("--external-host"):
        return ["external"]
    if (REPO / "xmppim" / "cli.py").exists():
        # xmppim-2w: the same server as two worker processes (``[server] workers = 2``), clients spread
        # over both by the kernel, so every scenario also crosses the cluster mesh.
        return ["xmppim", "xmppim-2w", "prosody"]
    return ["prosody"]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "target" in metafunc.fixturenames:
        names = selected_targets(metafunc.config)
        metafunc.parametrize("target", names, indirect=True, scope="session", ids=names)


@pytest.fixture(scope="session")
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The server under test (started for the session when managed)."""
    name: str = request.param
    cfg = request.config
    if name in _TARGET_ERRORS:
        pytest.fail(_TARGET_ERRORS[name], pytrace=False)
    if name == "external":
        host = cfg.getoption("--external-host")
        domain = cfg.getoption("--external-domain")
        if not host or not domain:
            pytest.fail("target 'external' needs --external-host and --external-domain", pytrace=False)
        accounts = [parse_account(a) for a in cfg.getoption("--external-account")]
        t = external_target(
            host,
            cfg.getoption("--external-port"),
            domain,
            accounts,
            direct_tls_port=cfg.getoption("--external-direct-tls-port"),
            websocket_url=cfg.getoption("--external-websocket-url"),
            bosh_url=cfg.getoption("--external-bosh-url"),
        )
        _TARGETS_SEEN[name] = t
        yield t
        return
    fault = cfg.getoption("--xmppim-fault") if name == "xmppim" else None
    try:
        cm = managed_target(name, fault=fault)
        t = cm.__enter__()
    except Exception as exc:
        # Remember the reason so every scenario of this target shows it instead of retrying the start.
        _TARGET_ERRORS[name] = f"{name} did not start: {str(exc).splitlines()[0]}"
        sys.stderr.write(f"\n[interop] {exc}\n")
        pytest.fail(_TARGET_ERRORS[name], pytrace=False)
    _TARGETS_SEEN[name] = t
    try:
        yield t
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(autouse=True)
def _fresh_account_pool(request: pytest.FixtureRequest) -> None:
    """Each test starts again at the first --account of an external target."""
    if "target" in request.fixturenames:
        request.getfixturevalue("target").begin_test()


@pytest.fixture
def record_row(request: pytest.FixtureRequest) -> RecordRow:
    """``record_row(client, feature, version=None)``: this test's outcome fills that matrix cell."""

    def record(client: str, feature: str, version: str | None = None) -> None:
        rows = request.node.stash.setdefault(_ROWS_KEY, [])
        if (client, feature) not in rows:
            rows.append((client, feature))
        if version:
            _CLIENT_VERSIONS[client] = version

    return record


# ---------------------------------------------------------------------------------------------------
# outcome collection


def _reason(report: pytest.TestReport, call: pytest.CallInfo[None]) -> str:
    if report.skipped:
        lr = report.longrepr
        if isinstance(lr, tuple) and len(lr) == 3:
            return str(lr[2]).removeprefix("Skipped: ")
        return str(lr)
    exc = call.excinfo.value if call.excinfo is not None else None
    if exc is None:
        return str(report.longrepr).splitlines()[-1] if report.longrepr else "failed"
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, AssertionError):
        return first or "assertion failed"
    if type(exc).__name__ in ("Failed", "OutcomeException"):
        return first
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome: Any = yield
    report: pytest.TestReport = outcome.get_result()
    fresh: dict[str, Any] = {"outcome": "pass", "reason": "", "duration": 0.0}
    state = item.stash.setdefault(_STATE_KEY, fresh)
    state["duration"] += report.duration
    if report.when == "call" or report.failed or report.skipped:
        if report.failed and state["outcome"] != "fail":
            prefix = "" if report.when == "call" else f"{report.when}: "
            state["outcome"], state["reason"] = "fail", prefix + _reason(report, call)
        elif report.skipped and state["outcome"] == "pass":
            state["outcome"], state["reason"] = "skip", _reason(report, call)
    if report.when == "teardown" and "target" in getattr(item, "fixturenames", ()):
        _finish_item(item, state)  # only scenarios (tests run against a server) fill the matrix


_STATE_KEY = pytest.StashKey[dict[str, Any]]()


def _finish_item(item: pytest.Item, state: dict[str, Any]) -> None:
    recorded: list[tuple[str, str]] = item.stash.get(_ROWS_KEY, [])
    rows = list(recorded)
    for m in item.iter_markers("interop_row"):
        key = (str(m.args[0]), str(m.args[1]))
        if key not in rows:
            rows.append(key)
    base = item.nodeid.split("[", 1)[0]
    if rows:
        _ROWS_BY_TEST.setdefault(base, rows)
    else:
        # Failed before record_row ran (e.g. the server did not start): named later from the same
        # test's rows on another target, else after the test function.
        module = getattr(item, "module", None)
        client = module.__name__.removeprefix("test_") if module is not None else "?"
        rows = [(client, getattr(item, "originalname", item.name))]
        _UNNAMED.add(item.nodeid)
    callspec = getattr(item, "callspec", None)
    server = str(callspec.params.get("target", "-")) if callspec is not None else "-"
    for client, feature in rows:
        _RESULTS.append(
            Row(
                client=client,
                feature=feature,
                server=server,
                outcome=state["outcome"],
                reason=state["reason"],
                test=item.nodeid,
                duration=round(state["duration"], 2),
            )
        )


# ---------------------------------------------------------------------------------------------------
# versions and result files


def _node_pkg_version(pkg: str) -> str | None:
    p = Path(__file__).resolve().parent / "node" / "node_modules" / pkg / "package.json"
    try:
        return str(json.loads(p.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def _known_client_versions(clients: set[str]) -> dict[str, str]:
    """Versions of the clients that appear in the matrix (probed, never failing the run)."""
    probes: dict[str, Callable[[], str | None]] = {
        "slixmpp": lambda: py_version("slixmpp"),
        "aioxmpp": lambda: py_version("aioxmpp"),
        "go-sendxmpp": lambda: deb_version("go-sendxmpp"),
        "check_xmppng": lambda: deb_version("nagios-check-xmppng"),
        "profanity": lambda: deb_version("profanity"),
        "xmpp.js": lambda: _node_pkg_version("@xmpp/client"),
        "converse.js": lambda: _node_pkg_version("converse.js"),
    }
    out: dict[str, str] = {}
    for c in sorted(clients):
        if c in _CLIENT_VERSIONS:
            out[c] = _CLIENT_VERSIONS[c]
            continue
        probe = probes.get(c.lower())
        v = None
        if probe is not None:
            try:
                v = probe()
            except Exception:  # a version probe must never fail the run
                v = None
        out[c] = v or "unknown"
    if "converse.js" in out and shutil.which("chromium"):
        out["converse.js"] += f" (chromium {deb_version('chromium')})"
    return out


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _RESULTS or getattr(session.config, "workerinput", None) is not None:
        return
    _name_unnamed_rows()
    servers: dict[str, str] = {}
    for name in selected_targets(session.config):
        if name in _TARGETS_SEEN:
            servers[name] = _TARGETS_SEEN[name].versions()
        elif name in _TARGET_ERRORS:
            servers[name] = _TARGET_ERRORS[name]
        else:
            servers[name] = "not used"
    clients = _known_client_versions({r.client for r in _RESULTS})
    date = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    fault = session.config.getoption("--xmppim-fault")
    write_results(
        _RESULTS,
        date,
        servers,
        clients,
        Path(session.config.getoption("--interop-results")),
        extra={"fault": fault} if fault else None,
    )


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if not _RESULTS:
        return
    tr = terminalreporter
    tr.section("interop matrix")
    for r in _RESULTS:
        extra = f"  ({r.reason})" if r.reason else ""
        tr.write_line(f"{r.outcome:4}  {r.server:9} {r.client:14} {r.feature}{extra}")
    tr.write_line(f"results: {config.getoption('--interop-results')}/latest.json and latest.md")
    tr.write_line(closing_line(summarise(_RESULTS)))
