"""Named events with priorities: the messaging bus every stanza and plugin goes through.

Order: handlers run **highest priority first**, and among equal priorities in registration order (the
Prosody convention; ejabberd's is the reverse, we document ours once here). The sorted tuple for an event
is rebuilt only when someone hooks or unhooks, so firing costs one dict lookup plus the calls.

A handler's return value decides the chain (Prosody ``util/events.lua``):

* ``None`` — go on to the next handler;
* anything else — stop; ``fire`` returns that value. By convention ``True`` means "handled", and an
  ``Element`` (from stanza events) is a reply the router sends on (an IQ result, an error). A handler
  that must do I/O returns an *awaitable*: the chain stops and the caller awaits it before it processes the
  next stanza from the same stream, which keeps stanza order and lets durable writes finish first.

A handler that raises is logged with its owner's name and counted (ejabberd ``safe_apply``). ``fire``
then stops with a :class:`HandlerFailed` value so that the router can answer that stanza alone with
``internal-server-error``; ``notify`` (for observation events such as ``session/bound``) goes on.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("xmppim.bus")

Handler = Callable[[Any], Any]

PRIORITY_FIRST = 1000
"""Guards that must see everything first (spoofing checks, blocking, size accounting)."""
PRIORITY_EARLY = 500
PRIORITY_NORMAL = 0
PRIORITY_LATE = -500
PRIORITY_DEFAULT_ACTION = -1000
"""The built-in default behaviour of an event (delivery, offline storage); anything above overrides it."""


@dataclass(frozen=True, slots=True)
class HandlerFailed:
    """Returned by ``fire`` when a handler raised; carries who failed, for the error reply and the log."""

    owner: str
    event: str
    error: BaseException


@dataclass(frozen=True, slots=True)
class _Entry:
    priority: int
    seq: int
    handler: Handler
    owner: str


class EventBus:
    def __init__(self) -> None:
        self._entries: dict[str, list[_Entry]] = {}
        self._chains: dict[str, tuple[_Entry, ...]] = {}
        self._seq = itertools.count()
        self.failures: dict[str, int] = {}
        """Handler exceptions counted per owner (plugin name), for ``xmppim plugins list`` and metrics."""

    def hook(
        self, name: str, handler: Handler, priority: int = PRIORITY_NORMAL, owner: str = "core"
    ) -> Callable[[], None]:
        """Register ``handler`` for event ``name``; returns a function that unhooks exactly this entry."""
        entry = _Entry(priority, next(self._seq), handler, owner)
        self._entries.setdefault(name, []).append(entry)
        self._rebuild(name)

        def unhook() -> None:
            entries = self._entries.get(name, [])
            if entry in entries:
                entries.remove(entry)
                self._rebuild(name)

        return unhook

    def _rebuild(self, name: str) -> None:
        entries = self._entries.get(name)
        if not entries:
            self._chains.pop(name, None)
            self._entries.pop(name, None)
            return
        self._chains[name] = tuple(sorted(entries, key=lambda e: (-e.priority, e.seq)))

    def has(self, name: str) -> bool:
        return name in self._chains

    def handlers(self, name: str) -> list[tuple[int, str]]:
        """(priority, owner) of each handler in firing order — for introspection and tests."""
        return [(e.priority, e.owner) for e in self._chains.get(name, ())]

    def fire(self, name: str, payload: Any) -> Any:
        """Run the chain until a handler returns non-``None``; return that value (or ``None``)."""
        chain = self._chains.get(name)
        if chain is None:
            return None
        for e in chain:
            try:
                r = e.handler(payload)
            except Exception as exc:
                self._failed(e, name, exc)
                return HandlerFailed(e.owner, name, exc)
            if r is not None:
                if hasattr(r, "__await__"):
                    return self._owned(r, e.owner, name)
                return r
        return None

    async def _owned(self, aw: Any, owner: str, name: str) -> Any:
        """Await a handler's awaitable so that a late failure is still counted against its owner."""
        try:
            return await aw
        except Exception as exc:
            self.count_failure(owner, name, exc)
            raise

    def notify(self, name: str, payload: Any) -> list[Any]:
        """Run every handler regardless of results (observers); returns awaitables they handed back."""
        pending: list[Any] = []
        for e in self._chains.get(name, ()):
            try:
                r = e.handler(payload)
            except Exception as exc:
                self._failed(e, name, exc)
                continue
            if r is not None and hasattr(r, "__await__"):
                pending.append(r)
        return pending

    def _failed(self, e: _Entry, name: str, exc: BaseException) -> None:
        self.failures[e.owner] = self.failures.get(e.owner, 0) + 1
        log.error("handler of %s for event %s raised %r", e.owner, name, exc, exc_info=exc)

    def count_failure(self, owner: str, name: str, exc: BaseException) -> None:
        """Record a failure that surfaced later, in an awaitable a handler returned."""
        self.failures[owner] = self.failures.get(owner, 0) + 1
        log.error("async handler of %s for event %s raised %r", owner, name, exc, exc_info=exc)
