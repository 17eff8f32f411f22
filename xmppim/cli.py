"""The ``xmppim`` command line. Command names and options are a contract: add, never rename."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from . import __version__
from . import jid as jidlib
from .config import Config, ConfigError, load_config


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)


def run(coro: Coroutine[Any, Any, int]) -> int:
    if os.environ.get("XMPPIM_LOOP") == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


# ----------------------------------------------------------------- serve
async def _serve(cfg: Config, worker: int | None = None) -> int:
    from .server import Server

    if worker is None:
        server = Server(cfg)
    else:
        from .cluster.supervisor import READY, inherited_sockets

        server = Server(cfg, worker_index=worker, sockets=inherited_sockets())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start(migrate=worker is None)
    if worker is None:
        ports = ", ".join(f"{k} {v}" for k, v in sorted(server.ports.items()))
        print(f"xmppim {__version__} serving {', '.join(cfg.server.domains)} ({ports})", flush=True)
    else:
        assert server.cluster is not None
        if not await server.cluster.wait_connected(30):
            logging.getLogger("xmppim").warning("worker %d: not every peer is reachable yet", worker)
        sys.stdout.buffer.write(READY)
        sys.stdout.flush()
    await stop.wait()
    logging.getLogger("xmppim").info("shutting down")
    await server.stop()
    return 0


def cmd_serve(args: argparse.Namespace, cfg: Config) -> int:
    """One process, or (``[server] workers`` / ``--workers`` > 1) a supervisor and its worker processes."""
    if args.workers is not None:
        if not 1 <= args.workers <= 64:
            print("--workers must be from 1 to 64", file=sys.stderr)
            return 2
        cfg.server.workers = args.workers
    if args.worker is not None:
        return run(_serve(cfg, args.worker))
    if cfg.server.workers > 1:
        from .cluster.supervisor import Supervisor

        return run(Supervisor(cfg, args.config or os.environ.get("XMPPIM_CONFIG"), args.log_level).run())
    return run(_serve(cfg))


def cmd_migrate(args: argparse.Namespace, cfg: Config) -> int:
    from .storage.migrate import upgrade

    upgrade(cfg)
    print("database is at the newest schema")
    return 0


# ------------------------------------------------------------------ users
def _split_user(cfg: Config, jid: str) -> tuple[str, str]:
    try:
        node, domain, res = jidlib.split(jid)
    except jidlib.InvalidJID as e:
        raise ConfigError(f"{jid!r} is not a valid JID: {e}") from None
    if not node or res:
        raise ConfigError(f"{jid!r} must be a bare JID like alice@{cfg.server.domains[0]}")
    if domain not in cfg.server.domains:
        raise ConfigError(f"{domain} is not served here (domains: {', '.join(cfg.server.domains)})")
    return node, domain


def _password(args: argparse.Namespace) -> str:
    if args.password is not None:
        return str(args.password)
    pw = getpass.getpass("Password: ")
    if pw != getpass.getpass("Again: "):
        raise ConfigError("the passwords differ")
    if not pw:
        raise ConfigError("the password is empty")
    return pw


async def _with_accounts(cfg: Config, fn: Callable[[Any], Coroutine[Any, Any, int]]) -> int:
    from .storage.db import create_engine
    from .storage.migrate import upgrade
    from .storage.repositories.accounts import SQLAccountStore

    await asyncio.to_thread(upgrade, cfg)
    engine = create_engine(cfg.storage_url)
    try:
        return await fn(SQLAccountStore(engine))
    finally:
        await engine.dispose()


def cmd_user(args: argparse.Namespace, cfg: Config) -> int:
    from .storage.repositories.accounts import AccountExists

    if args.user_cmd == "list":

        async def do_list(store: Any) -> int:
            for j in await store.list(args.domain):
                print(j)
            return 0

        return run(_with_accounts(cfg, do_list))
    node, domain = _split_user(cfg, args.jid)
    if args.user_cmd == "add":
        pw = _password(args)

        async def do_add(store: Any) -> int:
            try:
                await store.create(node, domain, pw)
            except AccountExists:
                print(f"{node}@{domain} already exists", file=sys.stderr)
                return 1
            print(f"created {node}@{domain}")
            return 0

        return run(_with_accounts(cfg, do_add))
    if args.user_cmd == "del":

        async def do_del(store: Any) -> int:
            if not await store.delete(node, domain):
                print(f"{node}@{domain} does not exist", file=sys.stderr)
                return 1
            print(f"deleted {node}@{domain}")
            return 0

        return run(_with_accounts(cfg, do_del))
    if args.user_cmd == "passwd":
        pw = _password(args)

        async def do_pw(store: Any) -> int:
            if not await store.set_password(node, domain, pw):
                print(f"{node}@{domain} does not exist", file=sys.stderr)
                return 1
            print(f"password of {node}@{domain} changed")
            return 0

        return run(_with_accounts(cfg, do_pw))
    raise AssertionError(args.user_cmd)


# ------------------------------------------------------------- cert, check
def cmd_cert(args: argparse.Namespace, cfg: Config) -> int:
    from .transports.tls import default_paths, generate_self_signed

    cert, key = default_paths(cfg.data_path)
    generate_self_signed(sorted(cfg.server.domains), cert, key)
    print(f"wrote {cert} and {key} for {', '.join(cfg.server.domains)} (and their subdomains)")
    return 0


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def cmd_check(args: argparse.Namespace, cfg: Config) -> int:
    """Validate everything an operator can get wrong before ``serve``, and say it in plain words."""
    from sqlalchemy import text

    from .storage.db import create_engine
    from .transports.tls import cert_domains, covers, default_paths

    problems: list[str] = []
    print(f"config: {cfg.source or 'built-in defaults'} — OK")

    async def db() -> None:
        engine = create_engine(cfg.storage_url)
        try:
            async with engine.connect() as c:
                await c.execute(text("SELECT 1"))
        finally:
            await engine.dispose()

    try:
        asyncio.run(db())
        print(f"database: {cfg.storage_url} — reachable")
    except Exception as e:
        problems.append(f"database {cfg.storage_url} is not reachable: {e}")
    from pathlib import Path

    cert = Path(cfg.tls.cert) if cfg.tls.cert else default_paths(cfg.data_path)[0]
    if cert.exists():
        try:
            names = cert_domains(cert)
            missing = [d for d in cfg.server.domains if not covers(names, d)]
            if missing:
                problems.append(f"certificate {cert} does not cover {', '.join(missing)} (it names {', '.join(names)})")
            else:
                print(f"certificate: {cert} covers {', '.join(cfg.server.domains)}")
        except Exception as e:
            problems.append(f"certificate {cert} cannot be read: {e}")
    elif cfg.tls.cert:
        problems.append(f"certificate {cert} does not exist")
    else:
        print("certificate: none yet; a self-signed one is made on first start")
    for section in ("c2s", "component", "http"):
        sec = getattr(cfg, section)
        if sec.port and not _port_free(sec.bind, sec.port):
            problems.append(f"[{section}] port {sec.port} on {sec.bind} is in use (is another server running?)")
    if cfg.c2s.direct_tls_port and not _port_free(cfg.c2s.bind, cfg.c2s.direct_tls_port):
        problems.append(f"[c2s] direct_tls_port {cfg.c2s.direct_tls_port} on {cfg.c2s.bind} is in use")
    try:
        from .plugins.loader import discover, resolve_order, wanted

        avail = discover()
        names = wanted(avail, cfg.plugins.enabled, cfg.plugins.disabled)
        from .plugins.loader import load_class

        resolve_order(names, {n: load_class(avail[n]) for n in names})
        print(f"plugins: {', '.join(names)}")
    except Exception as e:
        problems.append(str(e))
    for p in problems:
        print(f"PROBLEM: {p}")
    if problems:
        return 1
    print("all checks passed")
    return 0


# --------------------------------------------------------------- plugins
def cmd_plugins(args: argparse.Namespace, cfg: Config) -> int:
    from .plugins.loader import discover, load_class, wanted

    avail = discover()
    enabled = set(wanted(avail, cfg.plugins.enabled, cfg.plugins.disabled))
    registrations: dict[str, list[str]] = {}
    if args.registrations:
        registrations = asyncio.run(_registrations(cfg))
    rows: list[dict[str, Any]] = []
    for name, ep in sorted(avail.items()):
        try:
            cls = load_class(ep)
        except Exception as e:
            print(f"xmppim: plugin {name} cannot be loaded: {e}", file=sys.stderr)
            continue
        rows.append(
            {
                "name": name,
                "version": cls.version,
                "builtin": cls.builtin,
                "enabled": name in enabled,
                "xeps": [f"XEP-{x.number:04d} {x.version} ({x.status})" for x in cls.xeps],
                "depends": list(cls.dependencies),
                "registers": registrations.get(name, []),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        flag = "enabled " if r["enabled"] else "disabled"
        kind = "built-in" if r["builtin"] else "plugin"
        print(f"{r['name']:<16} {r['version']:<8} {flag} {kind:<8} {', '.join(r['xeps'])}")
        for reg in r["registers"]:
            print(f"    {reg}")
    return 0


async def _registrations(cfg: Config) -> dict[str, list[str]]:
    from .server import Server

    server = Server(cfg)
    await server.start(listen=False)
    out = {n: list(p.ctx.registrations) for n, p in server.plugins.loaded.items()}
    await server.stop()
    return out


def cmd_component(args: argparse.Namespace, cfg: Config) -> int:
    from .plugins.external import run_external

    host, _, port = args.server.rpartition(":")
    return run(run_external(cfg, args.plugin, host or "127.0.0.1", int(port), args.secret, args.domain))


def cmd_interop(args: argparse.Namespace, cfg: Config) -> int:
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sys.path.insert(0, str(root))
    try:
        from tests.interop.cli import main as interop_main
    except ImportError as e:
        print(f"the interop tier lives in the source tree (tests/interop): {e}", file=sys.stderr)
        return 2
    return int(interop_main(args.rest))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xmppim", description="xmppim: an XMPP server with value-added-service plugins")
    p.add_argument("--config", "-c", help="TOML config file (default: $XMPPIM_CONFIG, else built-in defaults)")
    p.add_argument(
        "--log-level", default=os.environ.get("XMPPIM_LOG_LEVEL", "info"), choices=["debug", "info", "warning", "error"]
    )
    p.add_argument("--version", action="version", version=f"xmppim {__version__}")
    sub = p.add_subparsers(dest="cmd", required=True)
    sv = sub.add_parser("serve", help="run the server")
    sv.add_argument("--workers", type=int, help="worker processes (overrides [server] workers)")
    sv.add_argument("--worker", type=int, help=argparse.SUPPRESS)  # set by the supervisor for its workers
    sv.set_defaults(fn=cmd_serve)
    sub.add_parser("migrate", help="bring the database schema up to date (alembic upgrade heads)").set_defaults(
        fn=cmd_migrate
    )
    u = sub.add_parser("user", help="manage accounts").add_subparsers(dest="user_cmd", required=True)
    ua = u.add_parser("add", help="create an account")
    ua.add_argument("jid")
    ua.add_argument("--password", help="the password (prompted for when absent)")
    ud = u.add_parser("del", help="delete an account")
    ud.add_argument("jid")
    up = u.add_parser("passwd", help="change a password")
    up.add_argument("jid")
    up.add_argument("--password")
    ul = u.add_parser("list", help="list accounts")
    ul.add_argument("domain", nargs="?")
    for x in (ua, ud, up, ul):
        x.set_defaults(fn=cmd_user)
    c = sub.add_parser("cert", help="certificates").add_subparsers(dest="cert_cmd", required=True)
    c.add_parser("generate", help="(re)make the self-signed certificate for every domain").set_defaults(fn=cmd_cert)
    sub.add_parser("check", help="validate config, database, certificate and ports").set_defaults(fn=cmd_check)
    pl = sub.add_parser("plugins", help="plugins").add_subparsers(dest="plugins_cmd", required=True)
    pll = pl.add_parser("list", help="installed plugins, whether enabled, version, what each registers")
    pll.add_argument("--json", action="store_true")
    pll.add_argument("--registrations", action="store_true", help="load them to show what each registers")
    pll.set_defaults(fn=cmd_plugins)
    comp = sub.add_parser("component", help="run a plugin's component").add_subparsers(dest="comp_cmd", required=True)
    cr = comp.add_parser("run", help="run PLUGIN as an external XEP-0114 component of any server")
    cr.add_argument("plugin")
    cr.add_argument("--server", required=True, help="HOST:PORT of the server's component port")
    cr.add_argument("--secret", required=True)
    cr.add_argument("--domain", help="component domain (default: the plugin's own choice)")
    cr.set_defaults(fn=cmd_component)
    io = sub.add_parser("interop", help="run the interoperability tier (against xmppim or any server)")
    io.add_argument("rest", nargs=argparse.REMAINDER)
    io.set_defaults(fn=cmd_interop)
    try:
        from plugins.wallet.cli import add_wallet_commands
    except ImportError:
        pass
    else:
        add_wallet_commands(sub)
        sub.choices["wallet"].set_defaults(fn=cmd_wallet)
    return p


def cmd_wallet(args: argparse.Namespace, cfg: Config) -> int:
    """``xmppim wallet ...``: the ledger's own CLI, on this server's database, data_dir and settings."""
    from plugins.wallet.cli import run as wallet_run
    from plugins.wallet.ledger import Ledger
    from plugins.wallet.plugin import WalletSettings

    from .config import build_dataclass
    from .storage.db import create_engine
    from .storage.migrate import upgrade
    from .storage.repositories.accounts import SQLAccountStore

    settings = build_dataclass(WalletSettings, cfg.plugins.settings.get("wallet", {}), "plugins.wallet")
    wcfg = settings.ledger_config(cfg.server.admins)

    async def go() -> int:
        await asyncio.to_thread(upgrade, cfg)
        engine = create_engine(cfg.storage_url, cfg.storage.sqlite_synchronous)
        accounts = SQLAccountStore(engine)

        async def user_exists(bare: str) -> bool:
            node, _, domain = bare.partition("@")
            return domain in cfg.server.domains and await accounts.exists(node, domain)

        try:
            await Ledger(engine, wcfg, user_exists=user_exists, data_dir=cfg.data_path).init()
            return await wallet_run(args, engine, cfg.data_path, config=wcfg, user_exists=user_exists)
        finally:
            await engine.dispose()

    return run(go())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "interop" in argv:
        # Everything after `interop` belongs to the interop tier's own parser (--host, --account, ...).
        i = argv.index("interop")
        head, rest = argv[:i], argv[i + 1 :]
        if not any(a in head for a in ("-h", "--help")):
            parser = build_parser()
            args = parser.parse_args([*head, "interop"])
            args.rest = rest
            setup_logging(args.log_level)
            return int(args.fn(args, load_config(args.config)))
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        cfg = load_config(args.config)
        return int(args.fn(args, cfg))
    except ConfigError as e:
        print(f"xmppim: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
