"""Targets (servers under test) for the interoperability tier (issue 11).

A :class:`Target` describes where a client connects and hands out accounts.  Managed targets
(``xmppim``, ``prosody``) are started here on loopback with their own temporary config, data dir,
self-signed certificate and free ports, so several copies (other helpers, CI) never collide.
The ``external`` target only points at a server somebody else runs, with a fixed account pool.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import importlib.metadata
import itertools
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"


@dataclass(frozen=True)
class Account:
    """One XMPP account a scenario may log in with."""

    jid: str  # bare JID, e.g. "alice-3f2a@localhost"
    password: str

    @property
    def local(self) -> str:
        """Localpart of the JID (RFC 7622 §3.3)."""
        return self.jid.split("@", 1)[0]


class AccountPoolExhausted(RuntimeError):
    """An external target has fewer accounts than a scenario needs (the scenario is then skipped)."""


@dataclass
class Target:
    """A server under test as seen by the clients.

    ``new_account`` returns a fresh account on managed servers; on an external server it hands out the
    ``--account`` pool in order, starting again for every test (so scenarios must leave rosters clean).
    """

    name: str  # "xmppim" | "prosody" | "external"
    host: str  # "127.0.0.1"
    port: int  # c2s STARTTLS port (RFC 6120 §5)
    direct_tls_port: int | None  # XEP-0368 direct TLS
    domain: str  # e.g. "localhost"
    websocket_url: str | None  # RFC 7395, e.g. "ws://127.0.0.1:5280/xmpp-websocket"
    bosh_url: str | None  # XEP-0206
    _make_account: Callable[[str], Account] = field(repr=False, default=lambda prefix: _no_accounts())
    _version: Callable[[], str] = field(repr=False, default=lambda: "unknown")
    pool: tuple[Account, ...] = ()
    _cursor: int = field(default=0, repr=False)
    _version_cache: str | None = field(default=None, repr=False)

    def new_account(self, prefix: str = "user") -> Account:
        """A fresh account (managed) or the next unused one of the pool (external)."""
        if self.pool:
            if self._cursor >= len(self.pool):
                import pytest  # only tests ask for accounts; a short pool skips, it does not fail

                pytest.skip(f"scenario needs more than the {len(self.pool)} --account(s) of {self.name}")
            acc = self.pool[self._cursor]
            self._cursor += 1
            return acc
        return self._make_account(prefix)

    def begin_test(self) -> None:
        """Reset the external pool cursor: each test starts again with the first account."""
        self._cursor = 0

    def versions(self) -> str:
        """Server name and version for the matrix header."""
        if self._version_cache is None:
            try:
                self._version_cache = self._version()
            except Exception as exc:  # a version probe must never fail a run
                self._version_cache = f"{self.name} (version unknown: {exc})"
        return self._version_cache


def _no_accounts() -> Account:
    raise AccountPoolExhausted("this target has no way to create accounts")


# ---------------------------------------------------------------------------------------------------
# helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A currently free TCP port on ``host`` (the kernel picks; small race accepted on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``host:port`` accepts TCP connections, failing early if ``proc`` died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server process exited with {proc.returncode} before opening port {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{host}:{port} did not open within {timeout:.0f}s")


def deb_version(pkg: str) -> str:
    """Installed Debian package version, or "not installed"."""
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "not installed"


def py_version(dist: str) -> str:
    """Installed PyPI distribution version, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def unique_local(prefix: str) -> str:
    """A localpart that never collides between runs (scenarios may share a long-lived server)."""
    return f"{prefix}-{secrets.token_hex(3)}"


def write_self_signed(directory: Path, names: list[str]) -> tuple[Path, Path]:
    """Write a self-signed certificate + key for ``names`` (clients disable verification)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = _dt.datetime.now(_dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _dt.timedelta(days=1))
        .not_valid_after(now + _dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .sign(key, hashes.SHA256())
    )
    crt_path = directory / f"{names[0]}.crt"
    key_path = directory / f"{names[0]}.key"
    crt_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return crt_path, key_path


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGTERM to the server if the test process dies (Linux prctl)."""
    import ctypes

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    """SIGTERM our own server process (by PID only), SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(5)


def log_tail(path: Path, lines: int = 30) -> str:
    """Last lines of a server log, for readable start-up failures."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class RegistrationFailed(RuntimeError):
    """In-band registration did not create the account."""


def register_in_band(host: str, port: int, domain: str, local: str, password: str, timeout: float = 10.0) -> None:
    """Create an account over c2s with XEP-0077 (STARTTLS first, RFC 6120 §5), synchronously.

    Much faster than a CLI process per account on a loaded machine; the harness falls back to the
    CLI when the server refuses. Certificates are not verified (self-signed everywhere in this tier).
    """
    from xml.etree.ElementTree import Element, XMLPullParser

    def stream_open() -> bytes:
        return (
            f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' xml:lang='en'"
            " xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
        ).encode()

    depth = [0]  # element depth inside the current stream; survives between calls

    def read_child(sock: socket.socket | ssl.SSLSocket, parser: XMLPullParser[Element]) -> Element:
        """Next top-level child of the stream (features, proceed, iq, stream error)."""
        while True:
            events: list[tuple[str, Element]] = list(parser.read_events())  # type: ignore[arg-type]
            for ev, el in events:
                if ev == "start":
                    depth[0] += 1
                elif ev == "end":
                    depth[0] -= 1
                    if depth[0] == 1:
                        return el
            data = sock.recv(65536)
            if not data:
                raise RegistrationFailed("server closed the stream during registration")
            parser.feed(data)

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    raw = socket.create_connection((host, port), timeout=timeout)
    sock: socket.socket | ssl.SSLSocket = raw
    try:
        sock.sendall(stream_open())
        depth[0] = 0
        parser: XMLPullParser[Element] = XMLPullParser(events=("start", "end"))
        feats = read_child(sock, parser)
        if feats.find("{urn:ietf:params:xml:ns:xmpp-tls}starttls") is None:
            raise RegistrationFailed("server offers no STARTTLS")
        sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        if not str(read_child(sock, parser).tag).endswith("proceed"):
            raise RegistrationFailed("STARTTLS refused")
        sock = ctx.wrap_socket(raw, server_hostname=domain)
        sock.sendall(stream_open())
        depth[0] = 0
        parser = XMLPullParser(events=("start", "end"))
        read_child(sock, parser)  # features after TLS
        sock.sendall(
            (
                "<iq type='set' id='reg1'><query xmlns='jabber:iq:register'>"
                f"<username>{local}</username><password>{password}</password></query></iq>"
            ).encode()
        )
        answer = read_child(sock, parser)
        if answer.get("type") != "result":
            cond = next((str(c.tag).split("}")[-1] for c in answer.iter() if "xmpp-stanzas" in str(c.tag)), "?")
            raise RegistrationFailed(f"registration of {local}@{domain} answered {answer.get('type')}/{cond}")
        with contextlib.suppress(OSError):
            sock.sendall(b"</stream:stream>")
    finally:
        sock.close()


# ---------------------------------------------------------------------------------------------------
# Prosody (Debian 0.12.3) as a reference target


PROSODY_CONFIG = """\
-- generated by tests/interop/harness.py: a private Prosody on loopback for the interop tier
run_as_root = true
daemonize = false
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ {{ levels = {{ min = "info" }}, to = "file", filename = "{dir}/prosody.log" }} }}
interfaces = {{ "127.0.0.1" }}
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s} }}
c2s_direct_tls_ports = {{ {c2s_tls} }}
component_interfaces = {{ "127.0.0.1" }}
component_ports = {{ {component} }}
http_interfaces = {{ "127.0.0.1" }}
http_ports = {{ {http} }}
https_ports = {{ }}
http_default_host = "{domain}"
certificates = "{dir}/certs"
ssl = {{ certificate = "{crt}"; key = "{key}" }}
c2s_require_encryption = true
consider_websocket_secure = true
consider_bosh_secure = true
cross_domain_websocket = true
cross_domain_bosh = true
http_cors_override = {{ bosh = {{ enabled = true }}, websocket = {{ enabled = true }} }}
allow_registration = false
authentication = "internal_hashed"
storage = "internal"
modules_enabled = {{
  "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "version"; "uptime"; "time";
  "register"; "adhoc"; "carbons"; "private"; "vcard_legacy"; "blocklist"; "posix"; "offline";
  "websocket"; "bosh"; "http";
}}
modules_disabled = {{ "s2s" }}
VirtualHost "{domain}"
{extra}
"""


class ManagedProsody:
    """One private Prosody instance (own dir, ports, pid) for the duration of a test session."""

    def __init__(self, domain: str = "localhost", extra_config: str = "") -> None:
        """``extra_config`` is appended after the VirtualHost, e.g. a XEP-0114 component for other tests::

        ManagedProsody(extra_config='Component "echo.localhost"\\n  component_secret = "s"')
        # then connect the component to 127.0.0.1:<instance>.component
        """
        self.domain = domain
        self.extra_config = extra_config
        self.dir = Path(tempfile.mkdtemp(prefix="xmppim-interop-prosody-"))
        self.c2s = free_port()
        self.c2s_tls = free_port()
        self.http = free_port()
        self.component = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = self.dir / "prosody.cfg.lua"

    def start(self) -> Target:
        """Write the config and start Prosody in the foreground (``-F``), then wait for c2s."""
        if shutil.which("prosody") is None:
            raise RuntimeError("prosody is not installed (scripts/install-debs.sh prosody lua-unbound)")
        (self.dir / "data").mkdir()
        (self.dir / "certs").mkdir()
        crt, key = write_self_signed(self.dir / "certs", [self.domain])
        self.config.write_text(
            PROSODY_CONFIG.format(
                dir=self.dir,
                c2s=self.c2s,
                c2s_tls=self.c2s_tls,
                http=self.http,
                component=self.component,
                extra=self.extra_config,
                domain=self.domain,
                crt=crt,
                key=key,
            )
        )
        log = open(self.dir / "stdout.log", "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            ["prosody", "--config", str(self.config), "-F"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            wait_port("127.0.0.1", self.c2s, 20, self.proc)
            wait_port("127.0.0.1", self.http, 10, self.proc)
        except Exception as exc:
            self.stop()
            tail = log_tail(self.dir / "prosody.log")
            raise RuntimeError(f"prosody failed to start: {exc}\n{tail}") from exc
        return Target(
            name="prosody",
            host="127.0.0.1",
            port=self.c2s,
            direct_tls_port=self.c2s_tls,
            domain=self.domain,
            websocket_url=f"ws://127.0.0.1:{self.http}/xmpp-websocket",
            bosh_url=f"http://127.0.0.1:{self.http}/http-bind",
            _make_account=self.register,
            _version=lambda: f"Prosody {deb_version('prosody')}",
        )

    def register(self, prefix: str) -> Account:
        """Create an account with ``prosodyctl register`` (works while the server runs)."""
        acc = Account(f"{unique_local(prefix)}@{self.domain}", "pw-" + secrets.token_urlsafe(12))
        out = subprocess.run(
            ["prosodyctl", "--config", str(self.config), "register", acc.local, self.domain, acc.password],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if out.returncode != 0:
            raise RuntimeError(f"prosodyctl register {acc.jid} failed: {out.stdout} {out.stderr}")
        return acc

    def stop(self) -> None:
        """Stop our Prosody by PID and remove its directory."""
        if self.proc is not None:
            stop_process(self.proc)
        if not os.environ.get("INTEROP_KEEP_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# xmppim itself


XMPPIM_CONFIG = """\
# generated by tests/interop/harness.py: a private xmppim on loopback for the interop tier
[server]
domains = ["{domain}"]
data_dir = "{dir}/data"
workers = {workers}

[storage]
url = "sqlite+aiosqlite:///{dir}/data/xmppim.db"

[c2s]
bind = "127.0.0.1"
port = {c2s}
direct_tls_port = {c2s_tls}
require_encryption = true

[s2s]
bind = "127.0.0.1"
port = {s2s}

[component]
bind = "127.0.0.1"
port = {component}

[http]
bind = "127.0.0.1"
port = {http}

[tls]
cert = "{crt}"
key = "{key}"

[registration]
allow = {ibr}
"""


def xmppim_command() -> list[str]:
    """How to run the xmppim CLI: the venv entry point if installed, else ``python -m xmppim.cli``."""
    exe = VENV_BIN / "xmppim"
    if exe.exists():
        return [str(exe)]
    python = VENV_BIN / "python"
    return [str(python) if python.exists() else sys.executable, "-m", "xmppim.cli"]


class ManagedXmppim:
    """One private xmppim server (own dir/ports) started from this checkout."""

    def __init__(self, domain: str = "localhost", fault: str | None = None, workers: int = 1) -> None:
        self.domain = domain
        self.fault = fault
        self.workers = workers
        self.name = "xmppim" if workers == 1 else f"xmppim-{workers}w"
        self.dir = Path(tempfile.mkdtemp(prefix="xmppim-interop-xmppim-"))
        self.ports = {k: free_port() for k in ("c2s", "c2s_tls", "s2s", "component", "http")}
        self.proc: subprocess.Popen[bytes] | None = None
        self.config = self.dir / "xmppim.toml"
        self.env = dict(os.environ, PYTHONPATH=str(REPO))
        if fault:
            self.env["XMPPIM_FAULT"] = fault
        self._names = itertools.count()
        # Accounts via XEP-0077 (fast) unless INTEROP_ACCOUNTS=cli; the CLI stays the fallback.
        self.ibr = os.environ.get("INTEROP_ACCOUNTS", "ibr") != "cli"

    def start(self) -> Target:
        """Write the TOML config, start ``xmppim serve`` and wait for the c2s port."""
        if not (REPO / "xmppim" / "cli.py").exists():
            raise RuntimeError("xmppim/cli.py does not exist yet in this checkout")
        (self.dir / "data").mkdir()
        crt, key = write_self_signed(self.dir, [self.domain])
        self.config.write_text(
            XMPPIM_CONFIG.format(
                dir=self.dir,
                domain=self.domain,
                crt=crt,
                key=key,
                ibr=str(self.ibr).lower(),
                workers=self.workers,
                **self.ports,
            )
        )
        self.log_path = self.dir / "xmppim.log"
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [*xmppim_command(), "--config", str(self.config), *self.log_level_args(), "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=REPO,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        try:
            wait_port("127.0.0.1", self.ports["c2s"], 30, self.proc)
            if self.workers > 1:
                self._wait_workers(60)
        except Exception as exc:
            self.stop(keep=True)
            raise RuntimeError(f"xmppim failed to start: {exc}\n{log_tail(self.log_path)}") from exc
        ws, bosh = self._probe_http()
        return Target(
            name=self.name,
            host="127.0.0.1",
            port=self.ports["c2s"],
            direct_tls_port=self.ports["c2s_tls"] if self._port_open(self.ports["c2s_tls"]) else None,
            domain=self.domain,
            websocket_url=ws,
            bosh_url=bosh,
            _make_account=self.add_user,
            _version=self._version,
        )

    def _wait_workers(self, timeout: float) -> None:
        """With workers the supervisor's sockets accept before the workers run: wait for its ready line."""
        deadline = time.monotonic() + timeout
        while f"with {self.workers} workers" not in self.log_path.read_text(errors="replace"):
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"supervisor exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise RuntimeError("the workers did not start")
            time.sleep(0.1)

    @staticmethod
    def log_level_args() -> list[str]:
        """``INTEROP_XMPPIM_LOG_LEVEL=debug`` (with INTEROP_KEEP_DIRS=1) for a server log to debug with."""
        level = os.environ.get("INTEROP_XMPPIM_LOG_LEVEL")
        return ["--log-level", level] if level else []

    def _port_open(self, port: int) -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
        return False

    def _probe_http(self) -> tuple[str | None, str | None]:
        """Find the WebSocket/BOSH endpoints if this xmppim build serves them (RFC 7395, XEP-0206)."""
        import urllib.error
        import urllib.request

        port = self.ports["http"]
        if not self._port_open(port):
            return None, None
        ws: str | None = None
        bosh: str | None = None
        base = f"http://127.0.0.1:{port}"
        # XEP-0156 §3: the server may announce its endpoints in host-meta.json; trust that first.
        try:
            with urllib.request.urlopen(base + "/.well-known/host-meta.json", timeout=2) as resp:
                links = json.loads(resp.read()).get("links", [])
            for link in links:
                if link.get("rel") == "urn:xmpp:alt-connections:websocket":
                    ws = ws or str(link.get("href"))
                elif link.get("rel") == "urn:xmpp:alt-connections:xbosh":
                    bosh = bosh or str(link.get("href"))
            if ws or bosh:
                return ws, bosh
        except (OSError, ValueError, AttributeError):
            pass
        for path in ("/xmpp-websocket", "/ws"):
            headers = {"Connection": "Upgrade", "Upgrade": "websocket"}
            req = urllib.request.Request(base + path, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=2):
                    pass
            except urllib.error.HTTPError as err:
                if err.code in (400, 426, 101):  # endpoint exists but wants a real handshake
                    ws = f"ws://127.0.0.1:{port}{path}"
                    break
            except OSError:
                pass
        for path in ("/http-bind", "/bosh"):
            try:
                with urllib.request.urlopen(base + path, timeout=2) as resp:
                    if resp.status == 200:
                        bosh = base + path
                        break
            except urllib.error.HTTPError as err:
                if err.code in (400, 405):
                    bosh = base + path
                    break
            except OSError:
                pass
        return ws, bosh

    def add_user(self, prefix: str) -> Account:
        """Create an account: in-band (XEP-0077) when enabled, else with ``xmppim user add``."""
        acc = Account(f"{unique_local(prefix)}@{self.domain}", "pw-" + secrets.token_urlsafe(12))
        if self.ibr:
            try:
                register_in_band("127.0.0.1", self.ports["c2s"], self.domain, acc.local, acc.password)
                return acc
            except (OSError, RegistrationFailed) as exc:
                sys.stderr.write(f"[interop] in-band registration failed ({exc}); using xmppim user add\n")
                self.ibr = False
        out = subprocess.run(
            [
                *xmppim_command(),
                "--config",
                str(self.config),
                "user",
                "add",
                acc.jid,
                f"--password={acc.password}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=self.env,
            cwd=REPO,
        )
        if out.returncode != 0:
            raise RuntimeError(f"xmppim user add {acc.jid} failed ({out.returncode}): {out.stdout} {out.stderr}")
        return acc

    def _version(self) -> str:
        out = subprocess.run(
            [*xmppim_command(), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            env=self.env,
            cwd=REPO,
        )
        text = (out.stdout or out.stderr).strip().splitlines()
        if out.returncode == 0 and text:
            return text[0] if "xmppim" in text[0].lower() else f"xmppim {text[0]}"
        return f"xmppim {py_version('xmppim')} (checkout)"

    def stop(self, keep: bool = False) -> None:
        """Stop our xmppim by PID; keep its dir on failure or when INTEROP_KEEP_DIRS is set."""
        if self.proc is not None:
            stop_process(self.proc)
        if not keep and not os.environ.get("INTEROP_KEEP_DIRS"):
            shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# external servers


def parse_account(spec: str) -> Account:
    """``jid:password`` (the password may contain ':')."""
    jid, sep, pw = spec.partition(":")
    if not sep or "@" not in jid or not pw:
        raise ValueError(f"--account wants JID:PASSWORD with a bare JID, got {spec!r}")
    return Account(jid, pw)


def external_target(
    host: str,
    port: int,
    domain: str,
    accounts: list[Account],
    *,
    direct_tls_port: int | None = None,
    websocket_url: str | None = None,
    bosh_url: str | None = None,
) -> Target:
    """A server somebody else runs; we only have its account pool."""
    return Target(
        name="external",
        host=host,
        port=port,
        direct_tls_port=direct_tls_port,
        domain=domain,
        websocket_url=websocket_url,
        bosh_url=bosh_url,
        pool=tuple(accounts),
        _version=lambda: f"external {domain} at {host}:{port}",
    )


@contextlib.contextmanager
def managed_target(name: str, fault: str | None = None) -> Iterator[Target]:
    """Start a managed target for the block and stop it afterwards."""
    server: ManagedProsody | ManagedXmppim
    if name == "prosody":
        server = ManagedProsody()
    elif name == "xmppim":
        server = ManagedXmppim(fault=fault)
    elif name == "xmppim-2w":
        server = ManagedXmppim(workers=2)
    else:
        raise ValueError(f"unknown managed target {name!r}")
    target = server.start()
    try:
        yield target
    finally:
        server.stop()
