"""JID parsing for the hot path: RFC 7622 validation by slixmpp, cached as plain string tuples.

slixmpp's ``JID`` objects are fine at the edges; on the routing path we only need the normalised
(local, domain, resource) triple, so we cache that per address string.
"""

from __future__ import annotations

from functools import lru_cache

from slixmpp.jid import JID, InvalidJID

__all__ = ["InvalidJID", "bare", "parse", "split", "JIDParts"]

JIDParts = tuple[str, str, str]
"""(localpart, domainpart, resourcepart) — empty strings where a part is absent."""


@lru_cache(maxsize=65536)
def split(jid: str) -> JIDParts:
    """Normalise and split ``jid``; raises :class:`InvalidJID` (→ ``jid-malformed``) when it is not valid."""
    if not jid or len(jid) > 3071:
        raise InvalidJID("JID is empty or too long")
    j = JID(jid)
    if not j.domain:
        raise InvalidJID("JID has no domain")
    return j.user or "", j.domain, j.resource or ""


def parse(jid: str) -> str:
    """The normalised string form of ``jid``."""
    node, domain, res = split(jid)
    return join(node, domain, res)


def join(node: str, domain: str, resource: str = "") -> str:
    s = f"{node}@{domain}" if node else domain
    return f"{s}/{resource}" if resource else s


def bare(jid: str) -> str:
    node, domain, _ = split(jid)
    return f"{node}@{domain}" if node else domain
