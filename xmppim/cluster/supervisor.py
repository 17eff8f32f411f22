"""``xmppim serve`` with ``[server] workers = N``: one supervisor process and N worker processes.

The supervisor does what must happen once (schema migrations, the installation secret, the self-signed
certificate), opens the listening sockets — N sockets per listener, all bound to the same address with
``SO_REUSEPORT`` so the kernel spreads new connections evenly over the workers — and starts the workers,
handing each its own sockets. Workers are full servers that route between each other over the cluster mesh
(:mod:`xmppim.cluster.node`). A worker that dies is restarted on the same sockets; SIGTERM/SIGINT stop all
of them with ``system-shutdown``. Nothing here handles client traffic: the supervisor stays idle.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys

from ..config import Config

log = logging.getLogger("xmppim.supervisor")

SOCKETS_ENV = "XMPPIM_WORKER_SOCKETS"
READY = b"xmppim-worker-ready\n"
RESTART_DELAY = 1.0


def listener_specs(cfg: Config) -> list[tuple[str, str, int]]:
    """(name, host, port) of the listeners a worker runs; port 0 means "any free port" (tests)."""
    specs = [("c2s", cfg.c2s.bind, cfg.c2s.port)]
    if cfg.c2s.direct_tls_port:
        specs.append(("c2s_direct_tls", cfg.c2s.bind, cfg.c2s.direct_tls_port))
    if cfg.component.port:
        specs.append(("component", cfg.component.bind, cfg.component.port))
    if cfg.http.port:
        specs.append(("http", cfg.http.bind, cfg.http.port))
    return specs


def open_listeners(cfg: Config, workers: int) -> dict[str, list[socket.socket]]:
    """``workers`` listening sockets per listener, sharing one port through SO_REUSEPORT."""
    out: dict[str, list[socket.socket]] = {}
    for name, host, port in listener_specs(cfg):
        socks: list[socket.socket] = []
        for _ in range(workers):
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(family, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            s.bind((host, port))
            port = s.getsockname()[1]
            s.listen(1024)
            s.set_inheritable(True)
            socks.append(s)
        out[name] = socks
    return out


def inherited_sockets() -> dict[str, socket.socket]:
    """In a worker: the listening sockets the supervisor handed over (``name=fd,...``)."""
    spec = os.environ.get(SOCKETS_ENV, "")
    out: dict[str, socket.socket] = {}
    for part in filter(None, spec.split(",")):
        name, _, fd = part.partition("=")
        out[name] = socket.socket(fileno=int(fd))
    return out


def prepare(cfg: Config) -> None:
    """What must happen once, before any worker starts: schema, secret, certificate."""
    from ..server import load_secret, raise_nofile_limit
    from ..storage.migrate import upgrade
    from ..transports.tls import load_tls

    raise_nofile_limit()
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    upgrade(cfg)
    load_secret(cfg.data_path)
    load_tls(cfg.tls.cert, cfg.tls.key, cfg.data_path, sorted(cfg.server.domains))
    (cfg.data_path / "cluster").mkdir(mode=0o700, exist_ok=True)


class Supervisor:
    def __init__(self, cfg: Config, config_path: str | None, log_level: str) -> None:
        self.cfg = cfg
        self.n = cfg.server.workers
        self.config_path = config_path
        self.log_level = log_level
        self.sockets: dict[str, list[socket.socket]] = {}
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self.stopping = False
        self._drains: set[asyncio.Task[None]] = set()

    def _argv(self, index: int) -> list[str]:
        argv = [sys.executable, "-m", "xmppim"]
        if self.config_path:
            argv += ["--config", self.config_path]
        return argv + ["--log-level", self.log_level, "serve", "--workers", str(self.n), "--worker", str(index)]

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        fds = {name: socks[index].fileno() for name, socks in self.sockets.items()}
        env = dict(os.environ)
        env[SOCKETS_ENV] = ",".join(f"{k}={v}" for k, v in fds.items())
        proc = await asyncio.create_subprocess_exec(
            *self._argv(index), pass_fds=tuple(fds.values()), env=env, stdout=asyncio.subprocess.PIPE
        )
        self.procs[index] = proc
        return proc

    async def _wait_ready(self, index: int, proc: asyncio.subprocess.Process, timeout: float) -> bool:
        assert proc.stdout is not None
        try:
            while True:
                line = await asyncio.wait_for(proc.stdout.readline(), timeout)
                if not line:
                    return False
                if line == READY:
                    task = asyncio.ensure_future(self._drain(proc))
                    self._drains.add(task)  # asyncio keeps only a weak reference to a task
                    task.add_done_callback(self._drains.discard)
                    return True
                sys.stdout.buffer.write(line)
        except TimeoutError:
            return False

    @staticmethod
    async def _drain(proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        while await proc.stdout.readline():
            pass

    async def run(self) -> int:
        from .. import __version__

        await asyncio.to_thread(prepare, self.cfg)
        self.sockets = open_listeners(self.cfg, self.n)
        procs = [await self._spawn(i) for i in range(self.n)]
        ready = await asyncio.gather(*(self._wait_ready(i, p, 60) for i, p in enumerate(procs)))
        if not all(ready):
            log.error("workers %s did not start", [i for i, ok in enumerate(ready) if not ok])
            await self._stop_all()
            return 1
        ports = ", ".join(f"{name} {socks[0].getsockname()[1]}" for name, socks in sorted(self.sockets.items()))
        domains = ", ".join(self.cfg.server.domains)
        print(f"xmppim {__version__} serving {domains} ({ports}) with {self.n} workers", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        watchers = [asyncio.ensure_future(self._watch(i)) for i in range(self.n)]
        await stop.wait()
        self.stopping = True
        await self._stop_all()
        for w in watchers:
            w.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        return 0

    async def _watch(self, index: int) -> None:
        """Restart a worker that exits on its own; its sockets stay open here meanwhile."""
        while True:
            proc = self.procs[index]
            code = await proc.wait()
            if self.stopping:
                return
            log.error("worker %d exited with %s; restarting it", index, code)
            await asyncio.sleep(RESTART_DELAY)
            if self.stopping:
                return
            new = await self._spawn(index)
            if not await self._wait_ready(index, new, 60):
                log.error("worker %d did not come back", index)

    async def _stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
