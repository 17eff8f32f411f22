"""Self-signed certificates for the servers under test (STARTTLS on loopback, RFC 6120 section 5)."""

from __future__ import annotations

from pathlib import Path


def make_cert(directory: Path, domain: str) -> tuple[Path, Path, Path]:
    """Write ``cert.pem``, ``key.pem`` and ``combined.pem`` (ejabberd wants both in one file).

    P-256 keys: every server here negotiates ECDHE-ECDSA, so the handshake cost is the same for all.
    """
    from xmppim.transports.tls import generate_self_signed

    directory.mkdir(parents=True, exist_ok=True)
    generate_self_signed([domain], directory / "cert.pem", directory / "key.pem")
    cert_pem = (directory / "cert.pem").read_bytes()
    key_pem = (directory / "key.pem").read_bytes()
    paths = directory / "cert.pem", directory / "key.pem", directory / "combined.pem"
    paths[2].write_bytes(cert_pem + key_pem)
    for p in paths:
        p.chmod(0o644)
    return paths
