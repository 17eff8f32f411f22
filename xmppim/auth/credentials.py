"""Password storage as SCRAM keys (RFC 5802 / RFC 7677), computed by ``scramp``.

We keep, per account, one salt and iteration count plus StoredKey/ServerKey for SHA-1 and SHA-256. That
is enough to run SCRAM-SHA-1(-PLUS), SCRAM-SHA-256(-PLUS) and to verify SASL PLAIN, and nothing in it can
be turned back into the password.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from scramp import ScramMechanism

ITERATIONS = 4096
"""RFC 7677 §4's minimum for SHA-256; clients pay the PBKDF2 cost, the server only HMACs per login."""

_SHA1 = ScramMechanism("SCRAM-SHA-1")
_SHA256 = ScramMechanism("SCRAM-SHA-256")


@dataclass(frozen=True, slots=True)
class ScramKeys:
    salt: bytes
    iterations: int
    sha1_stored_key: bytes
    sha1_server_key: bytes
    sha256_stored_key: bytes
    sha256_server_key: bytes

    def for_hash(self, hash_name: str) -> tuple[bytes, bytes, bytes, int]:
        """(salt, stored_key, server_key, iterations) in the shape scramp's ``auth_fn`` returns."""
        if hash_name == "sha1":
            return self.salt, self.sha1_stored_key, self.sha1_server_key, self.iterations
        return self.salt, self.sha256_stored_key, self.sha256_server_key, self.iterations


def derive_keys(password: str, salt: bytes | None = None, iterations: int = ITERATIONS) -> ScramKeys:
    salt = salt or secrets.token_bytes(16)
    s1, st1, sv1, i = _SHA1.make_auth_info(password, iteration_count=iterations, salt=salt)
    s2, st2, sv2, _ = _SHA256.make_auth_info(password, iteration_count=iterations, salt=salt)
    assert s1 == s2 == salt
    return ScramKeys(salt, i, st1, sv1, st2, sv2)


def verify_password(keys: ScramKeys, password: str) -> bool:
    """Check a SASL PLAIN password against the stored SHA-256 StoredKey in constant time."""
    fresh = _SHA256.make_auth_info(password, iteration_count=keys.iterations, salt=keys.salt)
    return hmac.compare_digest(fresh[1], keys.sha256_stored_key)


def decoy_keys(server_secret: bytes, username: str) -> ScramKeys:
    """Keys for an account that does not exist (security.md, RFC 6120 §13.11).

    The salt is derived from the username and a server secret, so every try sees the same challenge, and
    the keys are random, so the proof always fails with ``not-authorized`` — revealing nothing.
    """
    salt = hmac.new(server_secret, b"salt\0" + username.encode(), hashlib.sha256).digest()[:16]
    junk = hmac.new(server_secret, b"keys\0" + username.encode(), hashlib.sha256).digest()
    return ScramKeys(salt, ITERATIONS, junk[:20], junk[:20], junk, junk)
