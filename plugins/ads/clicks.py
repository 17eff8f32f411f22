"""Signed, expiring click tokens for ``GET /plugins/ads/c/{token}``.

A token is ``CAMPAIGN.EXPIRES.NONCE.SIG`` where ``SIG`` is the first 128 bits of
HMAC-SHA256(key, ``CAMPAIGN.EXPIRES.NONCE``), base64url.  The key is 32 random bytes made once and kept in
``data_dir/ads_click.key`` (mode 0600), so tokens survive restarts and never reveal the server's other
secrets.  A forged token (bad signature or shape) is refused with 403, an expired one with 410; neither is
charged.  Each nonce is charged at most once (a reloaded click page redirects again for free).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

KEY_FILE = "ads_click.key"


def load_or_create_key(data_dir: Path) -> bytes:
    """The click-signing key from ``data_dir`` (created on first use, readable by the owner only)."""
    path = Path(data_dir) / KEY_FILE
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes()
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key


@dataclass(frozen=True)
class Click:
    campaign_id: int
    expires: int
    nonce: str


class TokenError(Exception):
    """``status`` is the HTTP answer: 403 forged, 410 expired."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


class ClickSigner:
    def __init__(self, key: bytes) -> None:
        if len(key) < 16:
            raise ValueError("click key too short")
        self._key = key

    def _sig(self, payload: str) -> str:
        mac = hmac.new(self._key, payload.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(mac).decode().rstrip("=")

    def make(self, campaign_id: int, expires: int, nonce: str | None = None) -> str:
        payload = f"{campaign_id}.{expires}.{nonce or secrets.token_urlsafe(9)}"
        return f"{payload}.{self._sig(payload)}"

    def check(self, token: str, now: float) -> Click:
        """The click a token stands for; :class:`TokenError` if forged (403) or expired (410)."""
        parts = token.split(".")
        if len(parts) != 4 or len(token) > 200:
            raise TokenError(403, "malformed token")
        cid, exp, nonce, sig = parts
        if not hmac.compare_digest(self._sig(f"{cid}.{exp}.{nonce}"), sig):
            raise TokenError(403, "bad signature")
        if not (cid.isdigit() and exp.isdigit()):
            raise TokenError(403, "malformed token")
        if int(exp) <= now:
            raise TokenError(410, "expired")
        return Click(int(cid), int(exp), nonce)
