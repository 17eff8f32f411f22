"""Entry point of the interop tier: ``xmppim interop ...`` calls :func:`main` (issue 11).

Without ``--host`` it starts the managed targets (xmppim and/or Prosody) itself; with ``--host`` it runs
every scenario against a server somebody else runs, using the ``--account`` pool::

    xmppim interop --host 127.0.0.1 --port 5222 --domain example.test \\
        --account a@example.test:pw --account b@example.test:pw

It runs pytest on tests/interop in a subprocess (the scenarios need a clean event loop and their own
sys.path), then prints the matrix location and the closing ``N passed, N failed`` line.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xmppim interop", description="Run the interoperability tier.")
    p.add_argument("--target", help="managed targets, comma list (xmppim,xmppim-2w,prosody); default: all available")
    p.add_argument("--host", help="external server address (switches to the 'external' target)")
    p.add_argument("--port", type=int, default=5222, help="external c2s STARTTLS port")
    p.add_argument("--direct-tls-port", type=int, default=None, help="external XEP-0368 port, if any")
    p.add_argument("--domain", help="external server's XMPP domain")
    p.add_argument("--websocket-url", default=None)
    p.add_argument("--bosh-url", default=None)
    p.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="JID:PASSWORD",
        help="existing account on the external server (repeat; scenarios need 2)",
    )
    p.add_argument("--fault", default=None, help="start the managed xmppim with XMPPIM_FAULT=NAME")
    p.add_argument(
        "--results",
        default=None,
        help="directory for latest.json/latest.md (default results/, fault runs results/fault-NAME/)",
    )
    p.add_argument(
        "--expect-failure",
        action="store_true",
        help="with --fault: succeed only if some xmppim scenario fails (proves the tier can fail)",
    )
    p.add_argument("-k", dest="keyword", default=None, help="pytest -k expression (subset of scenarios)")
    p.add_argument("-q", "--quiet", action="store_true", help="less pytest output")
    p.add_argument("--tests", default=str(HERE), help=argparse.SUPPRESS)  # scenario dir (self-tests)
    return p


def pytest_args(ns: argparse.Namespace) -> list[str]:
    """Translate CLI options into the conftest's pytest options."""
    args = [ns.tests, "-p", "no:cacheprovider", "--interop-results", ns.results, "-rfE"]
    if Path(ns.tests).resolve() == HERE:
        args += ["--ignore", str(HERE / "selftest")]  # the tier's own tests are not scenarios
    if ns.quiet:
        args.append("-q")
    if ns.keyword:
        args += ["-k", ns.keyword]
    if ns.host:
        if not ns.domain:
            raise SystemExit("xmppim interop: --host needs --domain")
        if len(ns.account) < 2:
            raise SystemExit("xmppim interop: --host needs at least two --account JID:PASSWORD")
        args += [
            "--target",
            "external",
            "--external-host",
            ns.host,
            "--external-port",
            str(ns.port),
            "--external-domain",
            ns.domain,
        ]
        if ns.direct_tls_port:
            args += ["--external-direct-tls-port", str(ns.direct_tls_port)]
        if ns.websocket_url:
            args += ["--external-websocket-url", ns.websocket_url]
        if ns.bosh_url:
            args += ["--external-bosh-url", ns.bosh_url]
        for acc in ns.account:
            args += ["--external-account", acc]
    elif ns.target:
        args += ["--target", ns.target]
    elif ns.fault:
        args += ["--target", "xmppim"]  # the fault switch exists only in xmppim
    if ns.fault:
        args += ["--xmppim-fault", ns.fault]
    return args


def closing(results_dir: Path) -> tuple[str, int] | None:
    """The closing line and failure count from latest.json (None when no result file was written)."""
    sys.path.insert(0, str(HERE))
    from report import closing_line, load

    try:
        doc = load(results_dir)
    except (OSError, ValueError):
        return None
    return closing_line(doc["summary"]), int(doc["summary"]["failed"])


def update_readme(results_dir: Path, readme: Path = HERE / "README.md") -> bool:
    """Copy the matrix of the last full run into README.md between the matrix markers."""
    begin, end = "<!-- matrix:begin -->", "<!-- matrix:end -->"
    try:
        text = readme.read_text()
        md = (results_dir / "latest.md").read_text()
    except OSError:
        return False
    if begin not in text or end not in text:
        return False
    body = "\n".join(line for line in md.splitlines() if not line.startswith("# ")).strip()
    body = body.replace("\n## Failures", "\n### Failures")
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{begin}\n{body}\n{end}{tail}")
    return True


def expect_failure_verdict(results_dir: Path, fault: str, line: str) -> int:
    """Fault run: 0 when at least one xmppim cell failed (each with its reason printed), else 1."""
    sys.path.insert(0, str(HERE))
    from report import load

    doc = load(results_dir)
    print(line)
    server = str(doc["servers"].get("xmppim", "not run"))
    if "did not start" in server or server == "not run":
        print(f"xmppim was not running ({server}): a fault run proves nothing")
        return 1
    # Only failures of the scenario itself count; a set-up error is not the fault being noticed.
    failed = [
        r
        for r in doc["rows"]
        if r["outcome"] == "fail" and r["server"] == "xmppim" and not r["reason"].startswith("setup:")
    ]
    for r in failed:
        print(f"  expected failure under XMPPIM_FAULT={fault}: {r['client']} / {r['feature']}: {r['reason']}")
    if not failed:
        print(f"XMPPIM_FAULT={fault} made no xmppim scenario fail: the tier did not notice the fault")
        return 1
    print(f"fault {fault!r} detected by {len(failed)} scenario(s)")
    return 0


def main(argv: list[str]) -> int:
    """Run the tier; 0 only when pytest passed and no matrix cell failed."""
    if argv[:1] == ["--"]:  # `xmppim interop -- --host ...` passes the separator through
        argv = argv[1:]
    ns = build_parser().parse_args(argv)
    if ns.expect_failure and not ns.fault:
        raise SystemExit("xmppim interop: --expect-failure needs --fault NAME")
    if ns.results is None:
        ns.results = str(HERE / "results" / f"fault-{ns.fault}" if ns.fault else HERE / "results")
    results = Path(ns.results)
    stale = results / "latest.json"
    before = stale.stat().st_mtime if stale.exists() else None
    python = REPO / ".venv" / "bin" / "python"
    cmd = [str(python) if python.exists() else sys.executable, "-m", "pytest", *pytest_args(ns)]
    pypath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = dict(os.environ, PYTHONPATH=pypath)
    rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
    fresh = stale.exists() and stale.stat().st_mtime != before
    summary = closing(results) if fresh else None
    print(f"matrix: {results / 'latest.md'}" if fresh else "no result file written (no scenario ran)")
    if summary is None:
        print(f"0 passed, 0 failed (pytest exit {rc})")
        return rc or 1
    line, failed = summary
    if ns.expect_failure:
        return expect_failure_verdict(results, ns.fault, line)
    default_dirs = Path(ns.tests).resolve() == HERE and results.resolve() == HERE / "results"
    full_run = ns.keyword is None and default_dirs
    if full_run and not ns.fault:
        # Our README always; the project README too once its owner adds the matrix markers.
        for readme in (HERE / "README.md", REPO / "README.md"):
            update_readme(results, readme)
    print(line)
    return 1 if (rc != 0 or failed) else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
