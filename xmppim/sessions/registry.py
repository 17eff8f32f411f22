"""The session registry: which resources of which users are connected right now.

Plain dicts keyed by normalised JID strings; plugins reach it as ``ctx.sessions`` (typed), never through
globals. A c2s session's presence state (priority, last available presence, directed presence) lives on
the session object itself, like Prosody keeps it on its session tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol
from xml.etree.ElementTree import Element


class Deliverable(Protocol):
    """Anything the router can hand a stanza to: a client session, a component, a plugin's component."""

    def deliver(self, stanza: Element) -> None: ...


class ClientSession(Protocol):
    """What the rest of the server may rely on about a bound client session."""

    kind: str
    full_jid: str
    bare_jid: str
    username: str
    domain: str
    resource: str
    priority: int
    presence: Element | None
    """The last available presence broadcast by this resource, ``None`` until initial presence."""
    interested: bool
    """Requested the roster (RFC 6121 §2.1.6 "interested resource"): gets roster pushes."""
    directed: set[str]
    """JIDs this resource sent directed presence to (RFC 6121 §4.6), told when it goes offline."""
    meta: dict[str, Any]
    """Per-session state owned by plugins (e.g. carbons on/off), keyed by plugin-chosen names."""

    def deliver(self, stanza: Element) -> None: ...
    def close(self, condition: str | None = None, text: str | None = None) -> None: ...


class SessionRegistry:
    def __init__(self) -> None:
        self._by_bare: dict[str, dict[str, ClientSession]] = {}
        self._by_full: dict[str, ClientSession] = {}

    def add(self, s: ClientSession) -> ClientSession | None:
        """Register a bound session; returns the session it replaces on the same full JID (RFC 6120 §7.7.2.2)."""
        old = self._by_full.get(s.full_jid)
        self._by_full[s.full_jid] = s
        self._by_bare.setdefault(s.bare_jid, {})[s.resource] = s
        return old

    def remove(self, s: ClientSession) -> bool:
        if self._by_full.get(s.full_jid) is not s:
            return False
        del self._by_full[s.full_jid]
        res = self._by_bare.get(s.bare_jid)
        if res is not None:
            res.pop(s.resource, None)
            if not res:
                del self._by_bare[s.bare_jid]
        return True

    def get(self, full_jid: str) -> ClientSession | None:
        return self._by_full.get(full_jid)

    def resources(self, bare_jid: str) -> list[ClientSession]:
        r = self._by_bare.get(bare_jid)
        return list(r.values()) if r else []

    def available(self, bare_jid: str) -> list[ClientSession]:
        """Resources that sent available presence (RFC 6121 §4.2 "available resource")."""
        r = self._by_bare.get(bare_jid)
        return [s for s in r.values() if s.presence is not None] if r else []

    def is_online(self, bare_jid: str) -> bool:
        return bare_jid in self._by_bare

    def __iter__(self) -> Iterator[ClientSession]:
        return iter(list(self._by_full.values()))

    def __len__(self) -> int:
        return len(self._by_full)
