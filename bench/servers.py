"""Launchers for the servers under test: xmppim, Prosody 0.12, ejabberd 23.01 and the echo server.

Each one runs from its own temporary directory on its own loopback port with rate limits and shapers
disabled, so that the benchmark measures the server and not its protection against abuse. The
settings that differ from defaults are listed in ``notes`` and end up in the results.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.certs import make_cert

HOST = "127.0.0.1"
DOMAIN = "bench.localhost"
PASSWORD = "benchpw"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class ServerError(Exception):
    """The server could not be started (missing binary, port taken, no answer in time)."""


def port_free(port: int) -> bool:
    """True if nothing listens on HOST:port."""
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex((HOST, port)) != 0


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until HOST:port accepts connections; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ServerError(f"process exited with code {proc.returncode}")
        if not port_free(port):
            return
        time.sleep(0.1)
    raise ServerError(f"port {port} not open after {timeout:.0f} s")


def descendants(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/*/stat parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime of these processes (/proc/PID/stat fields 14 and 15), in seconds."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / _CLK_TCK


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS over these processes, in KiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total


def deb_version(package: str) -> str:
    """Installed Debian package version, or '' if not installed."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


class Server:
    """Base launcher: ``start()``, ``stop()``, process-tree CPU and RSS."""

    name = "server"
    #: workloads the server cannot run (e.g. the echo server has no rosters or offline storage)
    unsupported: frozenset[str] = frozenset()

    def __init__(self, port: int, workdir: Path | None = None, keep: bool = False) -> None:
        self.port = port
        self.domain = DOMAIN
        self.host = HOST
        self.keep = keep
        self._own_dir = workdir is None
        self.dir = workdir or Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self.notes: list[str] = []
        self.log_path = self.dir / "server.log"
        self._log: object | None = None

    def version(self) -> str:
        """Version string for the results."""
        return ""

    def command(self) -> tuple[list[str], dict[str, str]]:
        """Command line and environment additions; subclasses write their config first."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Write configuration files into ``self.dir``."""

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until the c2s port accepts connections."""
        if not port_free(self.port):
            raise ServerError(f"port {self.port} already in use")
        self.prepare()
        cmd, env_add = self.command()
        env = dict(os.environ)
        env.update(env_add)
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log = log
        try:
            self.proc = subprocess.Popen(cmd, cwd=self.dir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            raise ServerError(f"cannot run {cmd[0]}: {exc}") from exc
        try:
            wait_port(self.port, timeout, self.proc)
            self.after_start()
        except ServerError as exc:
            tail = self.log_tail()
            self.stop_process()
            raise ServerError(f"{self.name}: {exc}\n--- log tail ---\n{tail}") from exc

    def after_start(self) -> None:
        """Hook run once the port is open."""

    def log_tail(self, lines: int = 25) -> str:
        """Last lines of the server's log (stdout/stderr)."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def log_errors(self, lines: int = 6) -> list[str]:
        """The last error-looking lines of the server's log, to explain a failed workload."""
        words = ("error", "traceback", "exception", "crash")
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        return [ln[:300] for ln in text if any(w in ln.lower() for w in words)][-lines:]

    def pids(self) -> list[int]:
        """The server's process tree."""
        return descendants(self.proc.pid) if self.proc is not None and self.proc.poll() is None else []

    def cpu(self) -> float:
        """CPU seconds used so far by the process tree."""
        return cpu_seconds(self.pids())

    def rss(self) -> int:
        """Resident memory of the process tree in KiB."""
        return rss_kib(self.pids())

    def alive(self) -> bool:
        """Is the main process still running?"""
        return self.proc is not None and self.proc.poll() is None

    def restart(self, timeout: float = 60.0) -> None:
        """Stop and start again on the same data (accounts, rosters): each workload gets a fresh
        process, so one workload's leftovers (heap growth, GC debt, closing sessions) do not bias the next."""
        self.stop_process()
        self.start(timeout)

    def stop(self) -> None:
        """Stop the server and remove its temp dir (unless ``keep``)."""
        self.stop_process()
        if self._own_dir and not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def stop_process(self) -> None:
        """SIGTERM the process tree (by PID), then SIGKILL what is left after 10 s."""
        if self.proc is not None:
            pids = self.pids()
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and any(_exists(p) for p in pids):
                self.proc.poll()
                time.sleep(0.1)
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            self.proc.wait(timeout=5)
            self.proc = None
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def _exists(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class EchoServer(Server):
    """``bench/echo_server.py`` in its own process (so its CPU is not the generator's)."""

    name = "echo"
    unsupported = frozenset({"fanout", "offline", "idle"})

    def __init__(self, port: int, workdir: Path | None = None, keep: bool = False,
                 uvloop: bool = False) -> None:
        super().__init__(port, workdir, keep)
        self.uvloop = uvloop

    def version(self) -> str:
        return f"Python {sys.version.split()[0]}" + (" + uvloop" if self.uvloop else "")

    def command(self) -> tuple[list[str], dict[str, str]]:
        cert, key, _ = make_cert(self.dir / "certs", self.domain)
        cmd = [sys.executable, "-m", "bench.echo_server", "--port", str(self.port), "--domain", self.domain,
               "--cert", str(cert), "--key", str(key)]
        if self.uvloop:
            cmd.append("--uvloop")
        root = str(Path(__file__).resolve().parent.parent)
        return cmd, {"PYTHONPATH": root}


class XmppimServer(Server):
    """xmppim started as ``xmppim serve --config FILE`` (optionally with ``XMPPIM_LOOP=uvloop``)."""

    name = "xmppim"

    def __init__(self, port: int, workdir: Path | None = None, keep: bool = False,
                 uvloop: bool = False, optimize: bool = False, workers: int = 1) -> None:
        super().__init__(port, workdir, keep)
        self.uvloop = uvloop
        self.optimize = optimize
        self.workers = workers
        self.name = ("xmppim" + ("-uvloop" if uvloop else "") + ("-O" if optimize else "")
                     + (f"-{workers}w" if workers > 1 else ""))
        self.notes = [
            "sqlite (aiosqlite) storage in a temp dir",
            "require_encryption = false (for the no-TLS login figure); registration open",
            "max_unauthenticated_per_ip 100000, offline_quota 5000, log level warning",
        ] + (["XMPPIM_LOOP=uvloop"] if uvloop else ["default asyncio loop"]) + (
            ["python -O (asserts stripped)"] if optimize else []) + (
            [f"[server] workers = {workers}: a supervisor and {workers} worker processes sharing the port "
             "(SO_REUSEPORT), routing between them over the cluster mesh"] if workers > 1 else [])

    @staticmethod
    def executable() -> Path:
        """The venv's ``xmppim`` script (next to the running interpreter)."""
        return Path(sys.executable).parent / "xmppim"

    def version(self) -> str:
        try:
            from importlib.metadata import version

            v = version("xmppim")
        except Exception:
            v = "?"
        root = str(Path(__file__).resolve().parent.parent)
        rev = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--", "xmppim"],
                               capture_output=True, text=True).stdout.strip()
        return f"{v} (git {rev or 'none'}{' + uncommitted changes' if dirty else ''})"

    def prepare(self) -> None:
        p = self.port
        (self.dir / "data").mkdir(exist_ok=True)
        cert, key, _ = make_cert(self.dir / "certs", self.domain)
        (self.dir / "xmppim.toml").write_text(f"""\
[server]
domains = ["{self.domain}"]
data_dir = "{self.dir / 'data'}"
workers = {self.workers}
[storage]
url = "sqlite+aiosqlite:///{self.dir / 'data' / 'xmppim.db'}"
[c2s]
bind = "{self.host}"
port = {p}
direct_tls_port = {p + 1}
require_encryption = false
max_unauthenticated_per_ip = 100000
[s2s]
bind = "{self.host}"
port = {p + 2}
[component]
bind = "{self.host}"
port = {p + 3}
[http]
bind = "{self.host}"
port = {p + 4}
[tls]
cert = "{cert}"
key = "{key}"
[registration]
allow = true
[limits]
max_stanza_bytes = 262144
offline_quota = 5000
max_offline_delivery = 5000
c2s_bytes_per_second = 0     # flood control off, like Prosody without mod_limits and ejabberd shaper none
[plugins]
enabled = []
""")


    def after_start(self) -> None:
        """With workers, the supervisor's sockets accept before the workers run: wait for its ready line."""
        if self.workers <= 1:
            return
        deadline = time.monotonic() + 60
        while f"with {self.workers} workers" not in self.log_path.read_text(errors="replace"):
            if time.monotonic() > deadline or not self.alive():
                raise ServerError("the workers did not start")
            time.sleep(0.1)

    def command(self) -> tuple[list[str], dict[str, str]]:
        exe = self.executable()
        if not exe.exists():
            raise ServerError(f"{exe} not found (xmppim not installed in the venv yet)")
        env = {"XMPPIM_LOOP": "uvloop"} if self.uvloop else {"XMPPIM_LOOP": "asyncio"}
        if self.optimize:
            cmd = [sys.executable, "-O", "-m", "xmppim", "--config", str(self.dir / "xmppim.toml"),
                   "--log-level", "warning", "serve"]
            return cmd, env
        return [str(exe), "--config", str(self.dir / "xmppim.toml"), "--log-level", "warning", "serve"], env


class ProsodyServer(Server):
    """Prosody 0.12 from Debian with its own config, run in the foreground as root (``run_as_root``)."""

    name = "prosody"

    def __init__(self, port: int, workdir: Path | None = None, keep: bool = False) -> None:
        super().__init__(port, workdir, keep)
        self.notes = [
            "modules: roster, saslauth, tls, disco, register, offline, ping (no s2s, no mod_limits)",
            "authentication internal_hashed, storage internal (files)",
            "c2s_require_encryption = false; registration open, throttle off (registration_throttle_max "
            "unset, 127.0.0.1 whitelisted by default)",
            "network_backend epoll (0.12 default)",
        ]

    def version(self) -> str:
        return deb_version("prosody")

    def prepare(self) -> None:
        if shutil.which("prosody") is None:
            raise ServerError("prosody not installed (scripts/install-debs.sh prosody)")
        cert, key, _ = make_cert(self.dir / "certs", self.domain)
        data = self.dir / "data"
        data.mkdir(exist_ok=True)
        (self.dir / "prosody.cfg.lua").write_text(f"""\
run_as_root = true
daemonize = false
pidfile = "{self.dir / 'prosody.pid'}"
data_path = "{data}"
log = {{ {{ levels = {{ min = "warn" }}, to = "console" }} }}
modules_enabled = {{ "roster", "saslauth", "tls", "disco", "register", "offline", "ping" }}
modules_disabled = {{ "s2s", "s2s_auth_certs" }}
c2s_ports = {{ {self.port} }}
c2s_interfaces = {{ "{self.host}" }}
c2s_direct_tls_ports = {{ }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
c2s_require_encryption = false
s2s_require_encryption = false
allow_registration = true
min_seconds_between_registrations = 0
authentication = "internal_hashed"
storage = "internal"
c2s_stanza_size_limit = 262144
ssl = {{ certificate = "{cert}"; key = "{key}"; }}
VirtualHost "{self.domain}"
""")

    def command(self) -> tuple[list[str], dict[str, str]]:
        return ["prosody", "--config", str(self.dir / "prosody.cfg.lua"), "-F"], {}


class EjabberdServer(Server):
    """ejabberd 23.01 from Debian, run as the ejabberd user via setpriv (not su: PAM would cut nofile)."""

    name = "ejabberd"

    def __init__(self, port: int, workdir: Path | None = None, keep: bool = False) -> None:
        super().__init__(port, workdir, keep)
        self.node = f"bench{port}@localhost"
        self.notes = [
            "modules: roster, offline, disco, ping, register (mnesia)",
            "c2s shaper none, shaper_rules c2s_shaper none, backlog 1024, max_fsm_queue default",
            "registration open, registration_timeout infinity",
            "auth_password_format scram (stored keys, like Prosody's internal_hashed)",
            "max_user_offline_messages 5000",
        ]

    def version(self) -> str:
        return deb_version("ejabberd")

    def prepare(self) -> None:
        if shutil.which("ejabberdctl") is None:
            raise ServerError("ejabberd not installed (scripts/install-debs.sh ejabberd)")
        if shutil.which("setpriv") is None:
            raise ServerError("setpriv missing (util-linux)")
        _, _, combined = make_cert(self.dir / "certs", self.domain)
        for sub in ("spool", "logs", "conf"):
            (self.dir / sub).mkdir(exist_ok=True)
        conf = self.dir / "conf"
        (conf / "ejabberd.yml").write_text(f"""\
hosts: ["{self.domain}"]
loglevel: warning
hide_sensitive_log_data: true
certfiles: ["{combined}"]
define_macro: {{}}
listen:
  - port: {self.port}
    ip: "{self.host}"
    module: ejabberd_c2s
    starttls: true
    shaper: none
    access: c2s
    max_stanza_size: 262144
    backlog: 1024
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
registration_timeout: infinity
acl:
  local:
    user_regexp: ""
  loopback:
    ip: ["127.0.0.0/8"]
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  register:
    allow: all
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: 5000
  c2s_shaper: none
  s2s_shaper: none
modules:
  mod_disco: {{}}
  mod_offline:
    access_max_user_messages: max_user_offline_messages
  mod_ping: {{}}
  mod_register:
    access: register
    ip_access: all
    password_strength: 0
  mod_roster: {{}}
""")
        (conf / "ejabberdctl.cfg").write_text(
            f'ERL_OPTIONS="-env ERL_CRASH_DUMP_BYTES 0"\nEJABBERD_PID_PATH={self.dir}/ejabberd.pid\n'
            f'CONTRIB_MODULES_CONF_DIR={conf}/modules.d\n')
        (conf / "inetrc").write_text("{lookup, [file, native]}.\n")
        pw = pwd.getpwnam("ejabberd")
        for root, dirs, files in os.walk(self.dir):
            os.chown(root, pw.pw_uid, pw.pw_gid)
            for n in dirs + files:
                os.chown(os.path.join(root, n), pw.pw_uid, pw.pw_gid)

    def command(self) -> tuple[list[str], dict[str, str]]:
        d = self.dir
        cmd = ["setpriv", "--reuid=ejabberd", "--regid=ejabberd", "--init-groups",
               "ejabberdctl", "--config-dir", str(d / "conf"), "--spool", str(d / "spool"),
               "--logs", str(d / "logs"), "--node", self.node, "foreground"]
        return cmd, {"HOME": pwd.getpwnam("ejabberd").pw_dir}

    def log_tail(self, lines: int = 25) -> str:
        out = super().log_tail(lines)
        try:
            out += "\n" + "\n".join((self.dir / "logs" / "ejabberd.log").read_text(
                errors="replace").splitlines()[-lines:])
        except OSError:
            pass
        return out


def make_server(name: str, port: int, keep: bool = False) -> Server:
    """Server launcher by name: xmppim[-uvloop][-O], prosody, ejabberd, echo, echo-uvloop."""
    m = re.fullmatch(r"xmppim(-uvloop)?(-O)?(?:-(\d+)w)?", name)
    if m:
        # -O variants run ``python -O -m xmppim`` (asserts stripped); -Nw runs N worker processes
        return XmppimServer(port, keep=keep, uvloop=bool(m.group(1)), optimize=bool(m.group(2)),
                            workers=int(m.group(3) or 1))
    if name == "prosody":
        return ProsodyServer(port, keep=keep)
    if name == "ejabberd":
        return EjabberdServer(port, keep=keep)
    if name == "echo":
        return EchoServer(port, keep=keep)
    if name == "echo-uvloop":
        s = EchoServer(port, keep=keep, uvloop=True)
        s.name = "echo-uvloop"
        return s
    raise ValueError(f"unknown server {name!r}")
