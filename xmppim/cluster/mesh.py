"""The links between the worker processes of one server: a full mesh of Unix-socket connections.

Each worker listens on ``<data_dir>/cluster/w<index>.sock`` and opens one outbound link to every other
worker; a link carries frames in one direction only, so the order of what worker A sends to worker B is the
order B handles it (the property subscription handshakes and session announcements rely on).

Why a mesh and not an external broker process (Redis and the like): on one machine a broker adds a process,
a second socket hop and a copy per routed stanza, and one more thing to install and keep alive; the mesh is
the same publish/deliver pattern with the broker's routing table folded into each worker (the session
directory, :mod:`xmppim.cluster.node`). A broker earns its keep across machines — that is where one would be
added, behind this same :class:`Mesh` interface.

A frame is ``length (4 bytes, big-endian) · type (1 byte) · payload``. While a peer is down, frames for it
are dropped: its sessions are gone with it, and it announces its own state afresh when it comes back.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

log = logging.getLogger("xmppim.cluster")

HEADER = struct.Struct(">IB")
MAX_FRAME = 16 << 20

HELLO = 1
"""payload: the sender's worker index (ASCII). First frame of every link."""
SESSION = 2
"""JSON: a session of the sender was bound or changed presence."""
GONE = 3
"""JSON: a session of the sender ended."""
DELIVER = 4
"""``full JID \\0 hops \\0 stanza bytes``: write this stanza to that local session."""
CLOSE = 5
"""JSON: close that local session (resource conflict)."""
ROUTE = 6
"""``sender full JID \\0 stanza``: route this stanza as if the sender's session were local."""
DISPATCH = 7
"""``stanza``: run the destination side of routing for this stanza here."""
NOTIFY = 8
"""JSON ``{"topic", "data"}``: a plugin's cluster broadcast."""
COMPONENT = 9
"""JSON: an external component connected to (or left) the sender."""
TO_COMPONENT = 10
"""``domain \\0 stanza``: hand this stanza to the component connected here."""
IQ_RESPONSE = 11
"""``stanza``: an IQ answer nobody waited for at its receiver; resolve it if we sent the request."""

OnFrame = Callable[[int, int, bytes], Any]
"""``(peer index, frame type, payload)``; may return an awaitable, awaited before the next frame."""


def socket_path(directory: Path, index: int) -> Path:
    return directory / f"w{index}.sock"


class _Inbound(asyncio.Protocol):
    """The receiving end of one peer's link: splits frames and hands them over in order."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.buf = bytearray()
        self.peer = -1
        self.transport: asyncio.Transport | None = None
        self.backlog: deque[tuple[int, bytes]] = deque()
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        n = len(buf)
        while n - pos >= 5:
            length, ftype = HEADER.unpack_from(buf, pos)
            if length > MAX_FRAME:
                log.error("cluster link from worker %s sent an oversize frame; closing it", self.peer)
                assert self.transport is not None
                self.transport.close()
                return
            end = pos + 5 + length
            if end > n:
                break
            payload = bytes(buf[pos + 5 : end])
            pos = end
            if self.busy:
                self.backlog.append((ftype, payload))
            else:
                self._handle(ftype, payload)
        del buf[:pos]

    def _handle(self, ftype: int, payload: bytes) -> None:
        if ftype == HELLO:
            self.peer = int(payload)
            self.mesh.inbound[self.peer] = self
        if self.peer < 0:
            return
        try:
            r = self.mesh.on_frame(self.peer, ftype, payload)
        except Exception:
            log.exception("cluster frame %d from worker %d failed", ftype, self.peer)
            return
        if r is not None and hasattr(r, "__await__"):
            self.busy = True
            assert self.transport is not None
            self.transport.pause_reading()
            task = asyncio.ensure_future(self._drain(r))
            self.mesh.tasks.add(task)
            task.add_done_callback(self.mesh.tasks.discard)

    async def _drain(self, first: Any) -> None:
        """Await an async frame, then the frames that queued up behind it, one at a time, in order."""
        pending: Any = first
        while True:
            if pending is not None:
                try:
                    await pending
                except Exception:
                    log.exception("cluster frame from worker %d failed", self.peer)
            if not self.backlog:
                break
            ftype, payload = self.backlog.popleft()
            try:
                pending = self.mesh.on_frame(self.peer, ftype, payload)
            except Exception:
                log.exception("cluster frame %d from worker %d failed", ftype, self.peer)
                pending = None
            if pending is not None and not hasattr(pending, "__await__"):
                pending = None
        self.busy = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.peer >= 0 and self.mesh.inbound.get(self.peer) is self:
            del self.mesh.inbound[self.peer]
            self.mesh.on_peer_lost(self.peer)


class _Outbound(asyncio.Protocol):
    def __init__(self) -> None:
        self.lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)


class Mesh:
    """Worker ``index`` of ``size``: one listener and an outbound link per peer, reconnected when it drops."""

    def __init__(
        self,
        directory: Path,
        index: int,
        size: int,
        on_frame: OnFrame,
        on_peer_lost: Callable[[int], None],
        on_peer_connected: Callable[[int], None],
    ) -> None:
        self.directory = directory
        self.index = index
        self.size = size
        self.on_frame = on_frame
        self.on_peer_lost = on_peer_lost
        self.on_peer_connected = on_peer_connected
        self.outbound: dict[int, asyncio.Transport] = {}
        self.inbound: dict[int, _Inbound] = {}
        self.tasks: set[asyncio.Future[Any]] = set()
        self._server: asyncio.base_events.Server | None = None
        self._closing = False
        self._pending: dict[int, list[bytes]] = {}
        self._flush_scheduled = False
        self.connected = asyncio.Event()
        if size == 1:
            self.connected.set()

    @property
    def peers(self) -> list[int]:
        return [i for i in range(self.size) if i != self.index]

    async def start(self) -> None:
        # Owner only: whoever can connect to these sockets can route stanzas as any session.
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        path = socket_path(self.directory, self.index)
        path.unlink(missing_ok=True)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_unix_server(lambda: _Inbound(self), str(path))
        for peer in self.peers:
            task = asyncio.ensure_future(self._keep_link(peer))
            self.tasks.add(task)

    async def _keep_link(self, peer: int) -> None:
        """Connect to ``peer`` and stay connected: retry while it is (re)starting."""
        loop = asyncio.get_running_loop()
        path = str(socket_path(self.directory, peer))
        delay = 0.02
        while not self._closing:
            try:
                transport, proto = await loop.create_unix_connection(_Outbound, path)
            except OSError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            delay = 0.02
            self.outbound[peer] = transport
            transport.write(HEADER.pack(len(str(self.index)), HELLO) + str(self.index).encode())
            if len(self.outbound) == len(self.peers):
                self.connected.set()
            self.on_peer_connected(peer)
            await proto.lost
            if self.outbound.get(peer) is transport:
                del self.outbound[peer]
            self.connected.clear()
            if not self._closing:
                log.warning("cluster link to worker %d dropped; reconnecting", peer)

    def send(self, peer: int, ftype: int, payload: bytes) -> bool:
        t = self.outbound.get(peer)
        if t is None or t.is_closing():
            return False
        self._queue(peer, HEADER.pack(len(payload), ftype) + payload)
        return True

    def broadcast(self, ftype: int, payload: bytes) -> None:
        frame = HEADER.pack(len(payload), ftype) + payload
        for peer, t in self.outbound.items():
            if not t.is_closing():
                self._queue(peer, frame)

    def _queue(self, peer: int, frame: bytes) -> None:
        """Frames written in one turn of the event loop leave in one write per peer at its end: under load
        that is one system call for many routed stanzas instead of one each; alone, no added wait."""
        pending = self._pending.get(peer)
        if pending is None:
            self._pending[peer] = [frame]
        else:
            pending.append(frame)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        pending, self._pending = self._pending, {}
        for peer, frames in pending.items():
            t = self.outbound.get(peer)
            if t is not None and not t.is_closing():
                t.write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def stop(self) -> None:
        self._closing = True
        for t in list(self.outbound.values()):
            t.close()
        for task in list(self.tasks):
            task.cancel()
        if self._server is not None:
            self._server.close()
        for inb in list(self.inbound.values()):
            if inb.transport is not None:
                inb.transport.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        socket_path(self.directory, self.index).unlink(missing_ok=True)
