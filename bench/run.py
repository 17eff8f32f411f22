"""``make bench``: run the issue-12 workloads against xmppim, Prosody and ejabberd in turn.

    .venv/bin/python -m bench.run [--quick] [--servers echo,xmppim,xmppim-uvloop,prosody,ejabberd]
                                  [--only logins,messages,idle,fanout,offline] [--duration S]

Prints a table with each server's figures and xmppim's ratio to each other server, and writes
``bench/results/latest.json`` and ``bench/results/latest.md``. Servers run one at a time on their own
loopback ports; every run is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

from bench import scenarios
from bench.scenarios import Settings
from bench.servers import Server, ServerError, make_server

ALL_SERVERS = ("echo", "xmppim", "xmppim-uvloop", "xmppim-uvloop-2w", "prosody", "ejabberd")
ALL_WORKLOADS = ("idle", "logins", "messages", "fanout", "offline")
RESULTS = Path(__file__).resolve().parent / "results"
BASE_PORT = 17200

# (result key, field, label, True if higher is better)
TABLE: list[tuple[str, str, str, bool]] = [
    ("logins_tls", "per_s", "logins/s, STARTTLS+SCRAM-SHA-1+bind", True),
    ("logins_tls", "p99_ms", "login p99 ms (TLS)", False),
    ("logins_tls", "server_cpu_ms_per_login", "server CPU ms per login (TLS)", False),
    ("logins_plain", "per_s", "logins/s, no TLS", True),
    ("messages_100", "per_s", "msgs/s, 100 pairs", True),
    ("messages_100", "p50_ms", "latency p50 ms, 100 pairs", False),
    ("messages_100", "p99_ms", "latency p99 ms, 100 pairs", False),
    ("messages_100", "server_cpu_us_per_msg", "server CPU µs/msg, 100 pairs", False),
    ("messages_100", "gen_cpu_us_per_msg", "generator CPU µs/msg, 100 pairs", False),
    ("messages_100", "gen_capacity_per_core", "generator ceiling, msgs/s per core", True),
    ("messages_100", "other_load_cores", "other processes' load during 100 pairs, cores", False),
    ("messages_5", "per_s", "msgs/s, 5 pairs", True),
    ("messages_5", "p50_ms", "latency p50 ms, 5 pairs", False),
    ("messages_5", "p99_ms", "latency p99 ms, 5 pairs", False),
    ("messages_5", "server_cpu_us_per_msg", "server CPU µs/msg, 5 pairs", False),
    ("idle", "kib_per_conn", "KiB RSS per idle TLS connection", False),
    ("fanout", "median_ms", "presence fan-out to 200 contacts, ms", False),
    ("fanout", "fan_got_all_median_ms", "user has 200 contacts' presence, ms", False),
    ("offline", "deliver_s", "deliver 1,000 offline msgs, s", False),
    ("offline", "store_s", "store 1,000 offline msgs, s", False),
]

# figures about the generator and the machine, not the server: no xmppim ratio
NO_RATIO = {"gen_cpu_us_per_msg", "gen_capacity_per_core", "other_load_cores"}


def machine() -> dict[str, Any]:
    """CPU model, cores, kernel and Python: the context every figure needs."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().splitlines()[0].split()[1])
        mem = f"{kib / 1024 / 1024:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    return {
        "cpu_model": model, "cores": os.cpu_count(), "memory": mem, "kernel": platform.release(),
        "python": sys.version.split()[0], "loadavg_at_start": os.getloadavg(),
    }


def raise_nofile() -> int:
    """Raise RLIMIT_NOFILE to the hard limit (2,000 idle connections need 2,000+ fds on each side)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


async def _guard(name: str, server: Server, coro: Awaitable[dict[str, Any]], limit_s: float,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """Run one scenario with a time bound; failures become ``{"error": ...}`` instead of aborting."""
    t = time.monotonic()
    try:
        res = await asyncio.wait_for(coro, limit_s)
    except Exception as exc:  # noqa: BLE001 - the report shows what failed
        res = {"error": f"{type(exc).__name__}: {exc}"[:500]}
    if not server.alive():
        res.setdefault("error", "server process died")
        res["server_died"] = True
    if "error" in res:
        res["server_log_errors"] = server.log_errors()
    log(f"  {name}: {_brief(res)} ({time.monotonic() - t:.1f} s)")
    return res


def _brief(res: dict[str, Any]) -> str:
    if "error" in res:
        return "ERROR " + str(res["error"])
    keys = [k for k in ("per_s", "p50_ms", "p99_ms", "kib_per_conn", "median_ms", "deliver_s", "delivered",
                        "errors", "lost_or_late", "server_cpu_us_per_msg", "gen_cpu_util", "other_load_cores")
            if k in res]
    return ", ".join(f"{k}={_fmt(res[k])}" for k in keys)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


async def run_server(server: Server, s: Settings, only: set[str], log: Callable[[str], None],
                     out: dict[str, Any]) -> dict[str, Any]:
    """All selected workloads against one running server; results go into ``out`` as they come."""
    todo = [w for w in ALL_WORKLOADS if w in only and w not in server.unsupported]
    n_users = max([s.idle if "idle" in todo else 0, s.logins if "logins" in todo else 0,
                   2 * max(s.msg_pairs) if "messages" in todo else 0, 1])
    users = [f"u{i}" for i in range(n_users)]
    fan_users = [f"f{i}" for i in range(s.fanout_contacts)] if "fanout" in todo else []
    extra = (["fan"] if "fanout" in todo else []) + (["osnd", "orcv"] if "offline" in todo else [])
    accounts = await _guard("register", server, scenarios.ensure_accounts(server, users + fan_users + extra),
                            600, log)
    out["register"] = accounts
    if "error" in accounts:
        return out
    def fresh() -> None:
        # a fresh server process per workload, on the same accounts (see Server.restart)
        server.restart()
        log(f"  (restarted, RSS {server.rss() / 1024:.0f} MiB)")

    if "idle" in todo:
        fresh()
        out["idle"] = await _guard("idle", server, scenarios.idle(server, s, users), 600, log)
    if "logins" in todo:
        for tls in (True, False):
            fresh()
            key = "logins_tls" if tls else "logins_plain"
            out[key] = await _guard(key, server, scenarios.logins(server, s, tls, users), 300, log)
    if "messages" in todo:
        for pairs in s.msg_pairs:
            fresh()
            key = f"messages_{pairs}"
            out[key] = await _guard(key, server, scenarios.messages(server, s, pairs, users),
                                    s.msg_duration + s.msg_warmup + 120, log)
    if "fanout" in todo:
        fresh()
        out["fanout"] = await _guard("fanout", server, scenarios.fanout(server, s, "fan", fan_users),
                                     600, log)
    if "offline" in todo:
        fresh()
        out["offline"] = await _guard("offline", server, scenarios.offline(server, s, "osnd", "orcv"),
                                      400, log)
    return out


def _run_loop(coro: Coroutine[Any, Any, dict[str, Any]], loop_kind: str) -> dict[str, Any]:
    if loop_kind == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def _value(results: dict[str, Any], server: str, key: str, field: str) -> float | None:
    v = results.get(server, {}).get("workloads", {}).get(key, {}).get(field)
    return float(v) if isinstance(v, int | float) and not math.isnan(float(v)) else None


def table(results: dict[str, Any], servers: list[str]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per figure, one column per server, then xmppim ÷ each other server."""
    def ran(name: str) -> bool:
        return any(isinstance(v, dict) and "error" not in v
                   for v in results.get(name, {}).get("workloads", {}).values())

    ours = [s for s in servers if s.startswith("xmppim") and ran(s)]
    refs = [s for s in servers if s in ("prosody", "ejabberd") and ran(s)]
    header = ["figure", *servers] + [f"{o} ÷ {r}" for o in ours for r in refs]
    rows = []
    for key, field, label, higher in TABLE:
        vals = {s: _value(results, s, key, field) for s in servers}
        if all(v is None for v in vals.values()):
            continue
        row = [f"{label} ({'↑' if higher else '↓'})"]
        row += [_fmt(vals[s]) if vals[s] is not None else "—" for s in servers]
        for o in ours:
            for r in refs:
                a, b = vals[o], vals[r]
                if field in NO_RATIO:
                    row.append("")
                else:
                    row.append(f"{a / b:.2f}×" if a is not None and b else "—")
        rows.append(row)
    return header, rows


def markdown(header: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain aligned table for the terminal."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: list[str]) -> str:
        cells = zip(r, widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([fmt(header), "  ".join("-" * w for w in widths), *map(fmt, rows)])


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(prog="python -m bench.run", description="xmppim vs Prosody vs ejabberd")
    ap.add_argument("--servers", default=",".join(ALL_SERVERS),
                    help=f"comma-separated, from {','.join(ALL_SERVERS)},echo-uvloop,xmppim-O,xmppim-uvloop-O")
    ap.add_argument("--only", default=",".join(ALL_WORKLOADS),
                    help=f"workloads from {','.join(ALL_WORKLOADS)}")
    ap.add_argument("--quick", action="store_true",
                    help="short run (5 s message windows, fewer logins/conns)")
    ap.add_argument("--duration", type=float, help="seconds per message measurement (default 20, quick 5)")
    ap.add_argument("--window", type=int, help="in-flight messages per sender (default 10)")
    ap.add_argument("--logins", type=int, help="logins per login measurement (default 500, quick 200)")
    ap.add_argument("--idle", type=int, help="idle connections (default 2000, quick 500)")
    ap.add_argument("--no-msg-tls", action="store_true", help="message workloads over plain TCP")
    ap.add_argument("--gen-loop", choices=("uvloop", "asyncio"), default="uvloop",
                    help="event loop of the load generator (default uvloop)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory for latest.json / latest.md")
    ap.add_argument("--keep", action="store_true", help="keep the servers' temp dirs (logs, data)")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only re-render the table and latest.md from a results JSON file")
    args = ap.parse_args(argv)
    if args.render:
        data = json.loads(args.render.read_text())
        data["meta"].setdefault("quick", False)
        render(data["meta"], data["results"], args.out)
        return 0

    s = Settings.quick() if args.quick else Settings()
    if args.duration:
        s.msg_duration = args.duration
    if args.window:
        s.msg_window = args.window
    if args.logins:
        s.logins = args.logins
    if args.idle:
        s.idle = args.idle
    s.msg_tls = not args.no_msg_tls
    servers = [x.strip() for x in args.servers.split(",") if x.strip()]
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = only - set(ALL_WORKLOADS)
    if unknown:
        ap.error(f"unknown workloads {sorted(unknown)}")
    if args.gen_loop == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            args.gen_loop = "asyncio"
    nofile = raise_nofile()

    def log(msg: str) -> None:
        print(msg, flush=True)

    started = datetime.datetime.now(datetime.UTC)
    results: dict[str, Any] = {}
    log(f"bench: servers={servers} workloads={sorted(only)} quick={args.quick} nofile={nofile} "
        f"generator loop={args.gen_loop}")
    for i, name in enumerate(servers):
        try:
            server = make_server(name, BASE_PORT + 100 * i, keep=args.keep)
        except ValueError as exc:
            ap.error(str(exc))
        entry: dict[str, Any] = {"port": server.port, "notes": server.notes}
        results[name] = entry
        log(f"== {name} on {server.host}:{server.port}")
        t0 = time.monotonic()
        try:
            entry["version"] = server.version()
            server.start()
        except ServerError as exc:
            entry["error"] = f"could not start: {exc}"
            log(f"  {name} could not start: {exc}")
            continue
        try:
            entry["rss_at_start_kib"] = server.rss()
            entry["workloads"] = {}
            _run_loop(run_server(server, s, only, log, entry["workloads"]), args.gen_loop)
        except Exception as exc:  # noqa: BLE001
            entry["error"] = f"{type(exc).__name__}: {exc}"
            log(f"  {name} failed: {exc}")
        finally:
            if args.keep:
                log(f"  data and logs kept in {server.dir}")
            server.stop()
        entry["total_s"] = time.monotonic() - t0

    mach = machine()
    meta: dict[str, Any] = {
        "started": started.isoformat(timespec="seconds"), "machine": mach, "settings": vars(s),
        "generator": {"loop": args.gen_loop, "processes": 1, "nofile": nofile},
        "quick": args.quick, "servers": servers, "workloads": sorted(only),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(
        json.dumps({"meta": meta, "results": results}, indent=2, default=str))
    # non-zero when a server could not start or a workload failed, so `make bench` shows it
    return 1 if render(meta, results, args.out) else 0


def render(meta: dict[str, Any], results: dict[str, Any], out: Path) -> list[str]:
    """Print the table and write ``latest.md`` from a run's meta data and results; returns failures."""
    servers: list[str] = meta["servers"]
    header, rows = table(results, servers)
    m, st, gen = meta["machine"], meta["settings"], meta["generator"]
    versions = "; ".join(f"{n} {results[n].get('version', '?')}" for n in servers)
    failed = [f"- **{n}**: {results[n]['error']}" for n in servers if "error" in results[n]]
    for n in servers:
        for k, v in results[n].get("workloads", {}).items():
            if isinstance(v, dict) and "error" in v:
                logged = v.get("server_log_errors") or []
                hint = f" (server log: `{logged[-1][:160]}`)" if logged else ""
                failed.append(f"- **{n}** {k}: {v['error']}{hint}")
    md = [
        f"Run {meta['started']} on {m['cpu_model']}, {m['cores']} cores, {m['memory']} RAM, "
        f"Linux {m['kernel']}, Python {m['python']}; generator: {gen['processes']} process, "
        f"{gen['loop']} loop; {'quick' if meta.get('quick') else 'full'} run ({st['msg_duration']:g} s "
        f"message windows, {st['msg_window']} in flight per sender, messages "
        f"{'over TLS' if st['msg_tls'] else 'plain TCP'}, {st['logins']} logins, {st['idle']} idle "
        f"connections).",
        "", f"Versions: {versions}.", "", markdown(header, rows), "",
        "↑ higher is better, ↓ lower is better; a ratio is xmppim's figure divided by the other server's.",
    ]
    if failed:
        md += ["", "Failures:", *failed]
    (out / "latest.md").write_text("\n".join(md) + "\n")
    print()
    print(text_table(header, rows))
    if failed:
        print("\n".join(["", "Failures:", *failed]))
    print(f"\nwrote {out / 'latest.json'} and {out / 'latest.md'}")
    return failed


if __name__ == "__main__":
    sys.exit(main())
