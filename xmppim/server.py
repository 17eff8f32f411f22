"""The server object: wires config, storage, the bus, the router, plugins and listeners together.

It is the one place that knows everything; plugins see it only through ``PluginContext``.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import secrets
import socket
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .bus.events import EventBus
from .bus.items import Items
from .bus.router import Origin, Router, ServerOrigin
from .config import Config
from .files import create_once
from .plugins.adhoc import CommandRegistry
from .plugins.loader import PluginManager
from .sessions.registry import ClientSession, SessionRegistry
from .storage.db import create_engine
from .storage.repositories.accounts import SQLAccountStore
from .transports.http import HTTPService
from .transports.tls import TLSMaterial, load_tls

if TYPE_CHECKING:
    from .cluster.node import ClusterNode

log = logging.getLogger("xmppim.server")


class ComponentOrigin(Origin):
    kind = "component"

    def __init__(self, domain: str) -> None:
        self.name = domain
        self.domain = domain


def raise_nofile_limit() -> int:
    """Lift RLIMIT_NOFILE to the hard limit: every connection is a descriptor.

    When descriptors run out anyway, asyncio's accept loop already backs off: on EMFILE/ENFILE it stops
    accepting for a second instead of spinning (``asyncio.selector_events``, ACCEPT_RETRY_DELAY), so the
    server keeps serving the connections it has — the failure ejabberd shows here (100% CPU) cannot happen.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def load_secret(data_dir: Path) -> bytes:
    """A per-installation secret (decoy SCRAM salts, signed tokens), made once and kept in data_dir."""
    return create_once(data_dir / "server.secret", lambda: secrets.token_bytes(32))


class Server:
    def __init__(
        self,
        config: Config,
        *,
        worker_index: int | None = None,
        sockets: dict[str, socket.socket] | None = None,
    ) -> None:
        """``worker_index`` makes this process worker N of ``[server] workers`` (see ``xmppim/cluster/``);
        ``sockets`` are listening sockets handed over by the supervisor, by listener name."""
        self.config = config
        self.worker_index = worker_index
        self.inherited_sockets = sockets or {}
        self.cluster: ClusterNode | None = None
        self.hosts: set[str] = set(config.server.domains)
        self.default_domain = config.server.domains[0]
        self.bus = EventBus()
        self.items = Items()
        self.sessions = SessionRegistry()
        self.router = Router(self.bus, self.sessions, self.hosts)
        self.services: dict[str, Any] = {}
        self.server_commands = CommandRegistry(self.default_domain)
        self.http = HTTPService()
        self.c2s_connections: set[Any] = set()
        self.component_connections: set[Any] = set()
        self._unauth: Counter[str] = Counter()
        self._origins: dict[str, ServerOrigin] = {}
        self._listeners: list[asyncio.base_events.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.secret = b""
        self.tls: TLSMaterial
        self.engine: Any = None
        self.accounts: SQLAccountStore
        self.plugins = PluginManager(self)
        self.started = asyncio.Event()
        self.ports: dict[str, int] = {}

    # ------------------------------------------------------------ lifecycle
    async def start(self, *, listen: bool = True, migrate: bool = True) -> None:
        cfg = self.config
        cfg.data_path.mkdir(parents=True, exist_ok=True)
        raise_nofile_limit()
        self.secret = load_secret(cfg.data_path)
        from .storage.migrate import upgrade

        if migrate:
            await asyncio.to_thread(upgrade, cfg)
        self.engine = create_engine(cfg.storage_url, cfg.storage.sqlite_synchronous)
        self.accounts = SQLAccountStore(self.engine)
        self.tls = load_tls(cfg.tls.cert, cfg.tls.key, cfg.data_path, sorted(self.hosts))
        for domain in cfg.components:
            self.router.components.setdefault(domain, None)
        await self.plugins.load_all()
        if self.worker_index is not None and cfg.server.workers > 1:
            from .cluster.node import ClusterNode

            self.cluster = ClusterNode(self, self.worker_index, cfg.server.workers, cfg.data_path / "cluster")
            await self.cluster.start()
        if listen:
            await self._listen()
        self.started.set()
        log.info("xmppim serving %s", ", ".join(sorted(self.hosts)))

    async def _listen(self) -> None:
        from .stream.c2s import C2SConnection
        from .stream.component import ComponentConnection

        loop = asyncio.get_running_loop()
        cfg = self.config
        specs: list[tuple[str, str, int, Any, Any]] = [
            ("c2s", cfg.c2s.bind, cfg.c2s.port, lambda: C2SConnection(self), None),
            (
                "c2s_direct_tls",
                cfg.c2s.bind,
                cfg.c2s.direct_tls_port,
                lambda: C2SConnection(self, True),
                self.tls.context,
            ),
            ("component", cfg.component.bind, cfg.component.port, lambda: ComponentConnection(self), None),
        ]
        for name, host, port, factory, ssl in specs:
            inherited = self.inherited_sockets.get(name)
            if inherited is not None:
                srv = await loop.create_server(
                    factory, sock=inherited, ssl=ssl, backlog=1024, ssl_handshake_timeout=30 if ssl else None
                )
            elif port == 0 and name != "c2s":
                continue
            else:
                srv = await loop.create_server(
                    factory,
                    host,
                    port,
                    ssl=ssl,
                    backlog=1024,
                    reuse_address=True,
                    ssl_handshake_timeout=30 if ssl else None,
                )
            self._listeners.append(srv)
            sock: socket.socket = srv.sockets[0]
            self.ports[name] = sock.getsockname()[1]
        if "http" in self.inherited_sockets:
            await self.http.start_on(self.inherited_sockets["http"])
            self.ports["http"] = self.inherited_sockets["http"].getsockname()[1]
        elif cfg.http.port:
            await self.http.start(cfg.http.bind, cfg.http.port)
            self.ports["http"] = cfg.http.port

    async def stop(self) -> None:
        """Close every stream properly (RFC 6120 §4.4) with ``system-shutdown``, then release everything."""
        for srv in self._listeners:
            srv.close()
        for conn in list(self.c2s_connections) + list(self.component_connections):
            conn.close("system-shutdown", "The server is shutting down")
        # Let session/closed handlers (presence, last activity) run, give TCP a moment to flush.
        await asyncio.sleep(0.05)
        for srv in self._listeners:
            await srv.wait_closed()
        await self.http.stop()
        if self.cluster is not None:
            await self.cluster.stop()
        await self.plugins.unload_all()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.engine is not None:
            await self.engine.dispose()

    def spawn(self, aw: Any) -> None:
        task = asyncio.ensure_future(aw)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -------------------------------------------------------------- sessions
    def session_bound(self, session: ClientSession) -> Any:
        pending = self.bus.notify("session/bound", session)
        if not pending:
            return None
        return asyncio.gather(*pending)

    def session_closed(self, session: ClientSession) -> None:
        if getattr(session, "remote", False):
            return  # its own worker announces its end (xmppim/cluster/)
        for aw in self.bus.notify("session/closed", session):
            self.spawn(aw)

    def admit_unauthenticated(self, ip: str) -> bool:
        """RFC 6120 §13.12: cap unauthenticated connections per address so idle sockets can't starve others."""
        if self._unauth[ip] >= self.config.c2s.max_unauthenticated_per_ip:
            return False
        self._unauth[ip] += 1
        return True

    def release_unauthenticated(self, ip: str) -> None:
        if self._unauth[ip] > 0:
            self._unauth[ip] -= 1
            if not self._unauth[ip]:
                del self._unauth[ip]

    # --------------------------------------------------------------- origins
    def local_origin(self, name: str) -> ServerOrigin:
        o = self._origins.get(name)
        if o is None:
            o = self._origins[name] = ServerOrigin(name)
        return o

    def component_origin(self, from_: str) -> Origin:
        return ComponentOrigin(from_.split("@")[-1].split("/")[0])
