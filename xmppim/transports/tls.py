"""TLS: the configured certificate, or a self-signed one made on first start for every served domain.

The self-signed certificate covers each domain and ``*.domain`` (components such as ``wallet.localhost``
live on subdomains), uses ECDSA P-256 and SHA-256, and is reused on later starts while it still covers the
configured domains. Its DER digest is the ``tls-server-end-point`` channel binding (RFC 5929 §4) that
SCRAM-*-PLUS uses: Python's ``ssl`` offers neither tls-exporter nor tls-unique for TLS 1.3.
"""

from __future__ import annotations

import asyncio.sslproto
import datetime as dt
import hashlib
import logging
import ssl
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

TLS_READ_BUFFER = 4 * 1024
"""Per-connection TLS read buffer. asyncio's SSLProtocol allocates 256 KiB per connection for it (a fresh,
zero-filled bytearray that glibc serves from the heap once its mmap threshold has risen), which made an idle
TLS client cost ~300 KiB of RSS here. It bounds one socket read and one decrypted chunk handed to the
stream, not a stanza's size; what clients send is mostly small stanzas, and a big one takes a few more
reads. 8 KiB (Prosody's read size) → 4 KiB: RSS per idle TLS client 44 → 34 KiB over 2,000 connections,
server CPU per message unchanged within noise (28-29 µs at 100 and 5 pairs, issue-12 bench).
(uvloop has its own compiled SSL protocol with a fixed buffer: it uses more memory per idle connection.)

OpenSSL's own record buffers are already released while a connection is idle: CPython sets
``SSL_MODE_RELEASE_BUFFERS`` on every ``SSLContext`` (read back from the ``SSL_CTX`` in
``tests/unit/perf_login/test_tls_mode.py``), so there is nothing to gain from setting it again."""
asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER

log = logging.getLogger("xmppim.tls")
_THREAD_BUFFERS = threading.local()


def _share_read_buffer() -> bool:
    """Let every asyncio TLS connection of a thread read through one buffer instead of one each (4 KiB per
    connection less, the largest Python-level cost of an idle TLS client that was left).

    Safe because the buffer only ever holds data between two synchronous steps: the transport asks
    ``SSLProtocol.get_buffer()``, ``recv_into()`` fills it and ``buffer_updated()`` at once copies it into the
    connection's incoming ``MemoryBIO`` (asyncio/selector_events.py ``_read_ready__get_buffer``) — nothing
    else runs in between on that thread, and each thread (each event loop) has its own buffer. Only done if
    asyncio's SSLProtocol still looks the way this relies on (3.11-3.13); otherwise it stays as it is.
    """
    cls: Any = asyncio.sslproto.SSLProtocol
    if getattr(cls, "_xmppim_shared_buffer", False):
        return True
    if not all(hasattr(cls, a) for a in ("get_buffer", "buffer_updated", "__init__")):
        log.debug("asyncio SSLProtocol changed: TLS read buffers stay per connection")
        return False
    original_init = cls.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        view = getattr(_THREAD_BUFFERS, "view", None)
        if view is None or len(view) < self.max_size:
            view = _THREAD_BUFFERS.view = memoryview(bytearray(self.max_size))
        if isinstance(getattr(self, "_ssl_buffer_view", None), memoryview):
            self._ssl_buffer = view.obj
            self._ssl_buffer_view = view

    cls.__init__ = __init__
    cls._xmppim_shared_buffer = True
    return True


SHARED_READ_BUFFER = _share_read_buffer()


@dataclass(frozen=True)
class TLSMaterial:
    cert_path: Path
    key_path: Path
    context: ssl.SSLContext
    end_point_binding: bytes
    """tls-server-end-point channel binding data: hash of our certificate's DER (RFC 5929 §4.1)."""


def default_paths(data_dir: Path) -> tuple[Path, Path]:
    return data_dir / "certs" / "server.crt", data_dir / "certs" / "server.key"


def generate_self_signed(domains: list[str], cert_path: Path, key_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
    sans: list[x509.GeneralName] = []
    for d in domains:
        sans += [x509.DNSName(d), x509.DNSName(f"*.{d}")]
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def cert_domains(cert_path: Path) -> list[str]:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(x509.DNSName))


def covers(names: list[str], domain: str) -> bool:
    for n in names:
        if n == domain or (n.startswith("*.") and domain.split(".", 1)[-1] == n[2:] and "." in domain):
            return True
    return False


def load_tls(cert: str, key: str, data_dir: Path, domains: list[str]) -> TLSMaterial:
    """Load the configured certificate or make/reuse the self-signed one for ``domains``."""
    if cert:
        cert_path, key_path = Path(cert), Path(key or cert)
    else:
        cert_path, key_path = default_paths(data_dir)
        if not (cert_path.exists() and key_path.exists()) or not all(
            covers(cert_domains(cert_path), d) for d in domains
        ):
            generate_self_signed(domains, cert_path, key_path)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert_path), str(key_path))
    ctx.set_alpn_protocols(["xmpp-client"])
    der = x509.load_pem_x509_certificate(cert_path.read_bytes())
    algo = der.signature_hash_algorithm
    hname = algo.name if algo is not None and algo.name not in ("md5", "sha1") else "sha256"
    binding = hashlib.new(hname, der.public_bytes(serialization.Encoding.DER)).digest()
    return TLSMaterial(cert_path, key_path, ctx, binding)
