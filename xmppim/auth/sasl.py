"""SASL (RFC 6120 §6) server side: SCRAM-SHA-1/-256 with and without -PLUS (via ``scramp``) and PLAIN.

Mechanism preference: SCRAM-SHA-256-PLUS, SCRAM-SHA-1-PLUS, SCRAM-SHA-256, SCRAM-SHA-1, PLAIN. PLAIN is
offered only on encrypted streams. The -PLUS variants bind to ``tls-server-end-point`` (RFC 5929):
Python's ``ssl`` has no keying-material exporter, and tls-unique is undefined for TLS 1.3.

Unknown users get a normal-looking SCRAM challenge built from :func:`decoy_keys` and fail at the proof
with ``not-authorized``, the same way and in about the same time as a wrong password (RFC 6120 §13.11).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from scramp import ScramException, ScramMechanism

from .. import jid as jidlib
from .credentials import ScramKeys, decoy_keys, verify_password

KeyLookup = Callable[[str], Awaitable[ScramKeys | None]]
"""Look up the SCRAM keys of a (normalised) localpart on this stream's domain."""

SCRAM_HASH = {
    "SCRAM-SHA-256-PLUS": "sha256",
    "SCRAM-SHA-1-PLUS": "sha1",
    "SCRAM-SHA-256": "sha256",
    "SCRAM-SHA-1": "sha1",
}


class SaslFailure(Exception):
    """Ends the exchange with ``<failure><CONDITION/></failure>`` (RFC 6120 §6.5)."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text


@dataclass
class Step:
    """What to send next: a challenge (more to come) or success (``username`` is set)."""

    data: bytes
    success: bool
    username: str = ""


def mechanisms(secure: bool, channel_binding: bool) -> list[str]:
    mechs = []
    if secure and channel_binding:
        mechs += ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS"]
    mechs += ["SCRAM-SHA-256", "SCRAM-SHA-1"]
    if secure:
        mechs.append("PLAIN")
    return mechs


def b64decode(text: str | None) -> bytes:
    """Decode SASL payload text; '=' means an empty response (RFC 6120 §6.4.2)."""
    text = (text or "").strip()
    if text in ("", "="):
        return b""
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SaslFailure("incorrect-encoding") from None


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode() if data else "="


def scram_username(client_first: str) -> str:
    """The ``n=`` username of a SCRAM client-first message, with RFC 5802 ``=2C``/``=3D`` unescaped."""
    parts = client_first.split(",")
    if len(parts) < 4:
        raise SaslFailure("malformed-request")
    for attr in parts[2:]:
        if attr.startswith("n="):
            return attr[2:].replace("=2C", ",").replace("=3D", "=")
    raise SaslFailure("malformed-request")


class SaslNegotiation:
    """One SASL exchange on one stream. Feed it ``<auth>`` then each ``<response>``."""

    def __init__(
        self,
        mechanism: str,
        *,
        domain: str,
        lookup: KeyLookup,
        server_secret: bytes,
        secure: bool,
        channel_binding: bytes | None,
    ) -> None:
        offered = mechanisms(secure, channel_binding is not None)
        if mechanism not in offered:
            raise SaslFailure("invalid-mechanism")
        self.mechanism = mechanism
        self.domain = domain
        self.lookup = lookup
        self.secret = server_secret
        self.secure = secure
        self.cb = channel_binding
        self._scram = None
        self._username = ""
        self._decoy = False

    async def start(self, initial: bytes) -> Step:
        if not initial:
            return Step(b"", False)  # empty challenge: the client sends its first message as a response
        return await self._first(initial)

    async def respond(self, data: bytes) -> Step:
        if self._scram is None and not self._username:
            return await self._first(data)
        if self._scram is None:
            raise SaslFailure("malformed-request")
        try:
            self._scram.set_client_final(data.decode("utf-8"))
            final = self._scram.get_server_final()
        except (ScramException, UnicodeDecodeError):
            raise SaslFailure("not-authorized") from None
        if self._decoy:  # cannot happen with random decoy keys, but never let a decoy log in
            raise SaslFailure("not-authorized")
        return Step(final.encode(), True, self._username)

    async def _first(self, data: bytes) -> Step:
        if self.mechanism == "PLAIN":
            return await self._plain(data)
        try:
            client_first = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslFailure("malformed-request") from None
        raw_user = scram_username(client_first)
        user = _normalise_user(raw_user, self.domain)
        keys = await self.lookup(user) if user else None
        if keys is None:
            keys = decoy_keys(self.secret, raw_user)
            self._decoy = True
        hash_name = SCRAM_HASH[self.mechanism]
        mech = ScramMechanism(self.mechanism)
        binding = ("tls-server-end-point", self.cb) if self.cb else None
        scram = mech.make_server(lambda _u: keys.for_hash(hash_name), channel_binding=binding)
        try:
            scram.set_client_first(client_first)
            server_first = scram.get_server_first()
        except ScramException:
            raise SaslFailure("not-authorized") from None
        self._scram = scram
        self._username = user
        return Step(server_first.encode(), False)

    async def _plain(self, data: bytes) -> Step:
        try:
            authzid, authcid, password = data.decode("utf-8").split("\0")
        except ValueError:
            raise SaslFailure("malformed-request") from None
        user = _normalise_user(authcid, self.domain)
        keys = await self.lookup(user) if user else None
        ok = await asyncio.to_thread(verify_password, keys or decoy_keys(self.secret, authcid), password)
        if keys is None or not ok:
            raise SaslFailure("not-authorized")
        if authzid and authzid not in (user, f"{user}@{self.domain}"):
            raise SaslFailure("invalid-authzid")
        return Step(b"", True, user)


def _normalise_user(raw: str, domain: str) -> str:
    """Nodeprep the username the way JIDs are normalised, or '' when it cannot be a localpart."""
    try:
        node, _d, _r = jidlib.split(f"{raw}@{domain}")
    except jidlib.InvalidJID:
        return ""
    return node if node else ""
