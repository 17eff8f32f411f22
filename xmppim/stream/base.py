"""What every XML stream connection shares: feeding the parser, ordered processing, closing.

Stanzas from one stream are processed strictly in order. A handler that needs I/O (a database write, a
TLS upgrade) hands back an awaitable; the connection then pauses reading and parks the events it already
parsed until that finishes. So an offline message is committed before the sender's next stanza is looked
at, and nothing is processed out of order — while the common case stays a plain synchronous call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any
from xml.etree.ElementTree import Element

from ..xml.parser import Event, StreamClosed, StreamFault, StreamParser
from ..xml.serialize import STREAM_CLOSE, serialize, stream_error
from .errors import STREAM_CONDITIONS

log = logging.getLogger("xmppim.stream")

_TASKS: set[asyncio.Task[Any]] = set()
"""Strong references to the connections' running tasks (asyncio keeps only weak ones): one set for all
connections rather than an empty set per connection (216 bytes each, most never used)."""

WRITE_BUFFER_CAP = 8 * 1024 * 1024
BURST_SECONDS = 4.0
"""A throttled connection may send this many seconds' worth of its rate at once."""
"""A peer that stops reading is cut off once this much output is queued for it (RFC 6120 §13.12)."""


class XMLStreamConnection(asyncio.Protocol):
    content_ns = "jabber:client"

    # Slots, not an instance dict: with more than 30 attributes a c2s connection's dict stops sharing its
    # keys and costs ~1.5 KB per connection (tracemalloc over 1,000 idle clients). "__dict__" stays, so
    # plugins and subclasses may still add attributes of their own; it is made only when one does.
    __slots__ = (
        "parser",
        "transport",
        "closed",
        "_busy",
        "_throttled",
        "_rate",
        "_burst",
        "_tokens",
        "_last",
        "_backlog",
        "_closing_sent",
        "peer",
        "recent",
        "__dict__",
        "__weakref__",
    )

    def __init__(self, max_stanza_bytes: int, bytes_per_second: int = 0) -> None:
        self.parser = StreamParser(max_stanza_bytes=max_stanza_bytes, content_ns=self.content_ns)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._busy = False
        self._throttled = False
        self._rate = float(bytes_per_second)
        self._burst = self._rate * BURST_SECONDS
        self._tokens = self._burst
        self._last = 0.0
        self._backlog: deque[Event] | None = None
        """Events parsed while a handler was busy; made when first needed (an empty deque is 760 bytes)."""
        self._closing_sent = False
        self.peer = ""
        self.recent = False
        """Set whenever data arrives; an idle sweep clears it and lets the parser hibernate (c2s)."""

    # -------------------------------------------------------------- asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses; they quack the same.
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self._rate:
            self._charge(len(data))
        self.recent = True
        events = self.parser.feed(data)
        if events:
            self._process(events)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._backlog = None
        self.on_lost()

    # ------------------------------------------------------------ flood control
    def _charge(self, n: int) -> None:
        """Token bucket on input bytes (RFC 6120 §13.12; Prosody's mod_limits idea): a peer that sends faster
        than the configured rate is not cut off — its socket is simply not read until it is within budget
        again, so TCP backpressure slows it down and everybody else keeps being served."""
        now = asyncio.get_running_loop().time()
        if self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        self._tokens -= n
        if self._tokens < 0 and not self._throttled and self.transport is not None:
            self._throttled = True
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(-self._tokens / self._rate, self._unthrottle)

    def _unthrottle(self) -> None:
        self._throttled = False
        self._resume()

    def _resume(self) -> None:
        if self._busy or self._throttled or self.closed or self.transport is None or self.transport.is_closing():
            return
        try:
            self.transport.resume_reading()
        except (RuntimeError, AttributeError):
            pass

    # ------------------------------------------------------------ ordering
    def _process(self, events: list[Event]) -> None:
        if self._busy:
            if self._backlog is None:
                self._backlog = deque(events)
            else:
                self._backlog.extend(events)
            return
        for i, ev in enumerate(events):
            if self.closed:
                return
            r = self._dispatch(ev)
            if r is not None:
                self._busy = True
                if i + 1 < len(events):
                    if self._backlog is None:
                        self._backlog = deque()
                    self._backlog.extend(events[i + 1 :])
                if self.transport is not None:
                    self.transport.pause_reading()
                self.spawn(self._drain(r))
                return

    async def _drain(self, aw: Any) -> None:
        try:
            await aw
            while self._backlog and not self.closed:
                r = self._dispatch(self._backlog.popleft())
                if r is not None:
                    await r
        except Exception:
            log.exception("error while processing a stanza from %s", self.peer)
            self.close("internal-server-error")
        finally:
            self._busy = False
            if not self._backlog:
                self._backlog = None
            self._resume()

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        _TASKS.add(task)
        task.add_done_callback(_TASKS.discard)
        return task

    def _dispatch(self, ev: Event) -> Any:
        if isinstance(ev, StreamFault):
            self.close(ev.condition, ev.text)
            return None
        if isinstance(ev, StreamClosed):
            self.on_stream_closed()
            return None
        return self.on_event(ev)

    # ------------------------------------------------------------- output
    def write(self, data: bytes) -> None:
        t = self.transport
        if t is None or self.closed or t.is_closing():
            return
        t.write(data)
        if t.get_write_buffer_size() > WRITE_BUFFER_CAP:
            log.warning("closing %s: peer is not reading (%d bytes queued)", self.peer, t.get_write_buffer_size())
            t.abort()

    def send(self, el: Element) -> None:
        """Serialize and write one element. An element that cannot be XML (a plugin put a control character
        or a bad name in it) is dropped and logged: writing it would break the peer's stream."""
        try:
            data = serialize(el, self.content_ns)
        except (ValueError, TypeError) as e:
            log.error("not sending an unserializable %s to %s: %s", el.tag, self.peer, e)
            return
        self.write(data)

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """Close the stream, with a stream error first when ``condition`` is given (RFC 6120 §4.9)."""
        if self.closed or self.transport is None:
            return
        if not self._header_sent():
            self.write(self.opening_header_for_error())
        if condition:
            assert condition in STREAM_CONDITIONS, condition
            log.info("stream error %s to %s: %s", condition, self.peer, text or "")
            self.write(stream_error(condition, text))
        if not self._closing_sent:
            self._closing_sent = True
            self.write(STREAM_CLOSE)
        self.closed = True
        self.transport.close()

    def on_stream_closed(self) -> None:
        """The peer sent ``</stream:stream>``: answer in kind and close (RFC 6120 §4.4)."""
        self.close()

    # ------------------------------------------------------------ subclass
    def _header_sent(self) -> bool:
        return True

    def opening_header_for_error(self) -> bytes:
        return b""

    def on_event(self, ev: Event) -> Any:
        raise NotImplementedError

    def on_lost(self) -> None:
        pass

