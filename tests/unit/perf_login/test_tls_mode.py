"""The facts xmppim/transports/tls.py relies on for memory per idle TLS connection."""

from __future__ import annotations

import _ssl
import asyncio.sslproto
import ctypes
import ssl
from pathlib import Path

from xmppim.transports.tls import TLS_READ_BUFFER, load_tls

SSL_CTRL_MODE = 33
SSL_MODE_RELEASE_BUFFERS = 0x10


def ssl_ctx_mode(ctx: ssl.SSLContext) -> int:
    """SSL_CTX_get_mode() of ``ctx``'s SSL_CTX, read through the libssl that ``_ssl`` is linked with.

    The SSL_CTX pointer is the first field after PyObject_HEAD in CPython's PySSLContext; it is checked by
    comparing SSL_CTX_get_options() with ``ctx.options`` before the mode is read.
    """
    lib = ctypes.CDLL(_ssl.__file__)
    ctrl = lib.SSL_CTX_ctrl
    ctrl.restype = ctypes.c_long
    ctrl.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_long, ctypes.c_void_p]
    get_options = lib.SSL_CTX_get_options
    get_options.restype = ctypes.c_uint64
    get_options.argtypes = [ctypes.c_void_p]
    ptr = ctypes.c_void_p.from_address(id(ctx) + object.__basicsize__).value
    assert ptr
    assert get_options(ptr) == int(ctx.options)  # it is this context's SSL_CTX
    return int(ctrl(ptr, SSL_CTRL_MODE, 0, None))  # larg 0: read the mode without changing it


def test_openssl_releases_idle_record_buffers_on_the_server_context(tmp_path: Path) -> None:
    """SSL_MODE_RELEASE_BUFFERS: OpenSSL frees a connection's ~34 KB of record buffers while it is idle.
    CPython sets it on every context; this proves it for ours, so tls.py need not set it by hand."""
    tls = load_tls("", "", tmp_path, ["localhost"])
    assert ssl_ctx_mode(tls.context) & SSL_MODE_RELEASE_BUFFERS


def test_asyncio_tls_read_buffer_is_lowered() -> None:
    assert asyncio.sslproto.SSLProtocol.max_size == TLS_READ_BUFFER == 4096


def test_tls_connections_of_a_thread_share_one_read_buffer(tmp_path: Path) -> None:
    import threading

    from xmppim.transports import tls as tlsmod

    assert tlsmod.SHARED_READ_BUFFER
    material = load_tls("", "", tmp_path, ["localhost"])

    def two_protocols() -> list[memoryview]:
        loop = asyncio.new_event_loop()
        try:
            views = []
            for _ in range(2):
                p = asyncio.sslproto.SSLProtocol(loop, asyncio.Protocol(), material.context, None, server_side=True)
                views.append(p.get_buffer(-1))
            return views
        finally:
            loop.close()

    a, b = two_protocols()
    assert a.obj is b.obj and len(a) == TLS_READ_BUFFER
    other: list[memoryview] = []
    t = threading.Thread(target=lambda: other.extend(two_protocols()))
    t.start()
    t.join()
    assert other[0].obj is other[1].obj and other[0].obj is not a.obj  # one buffer per thread


async def test_concurrent_tls_streams_through_the_shared_buffer_stay_intact(tmp_path: Path) -> None:
    """20 TLS connections at once, each sending 256 KiB of its own random bytes in odd-sized writes: the
    server sees every byte of each stream, in order, and nothing of the others'."""
    import hashlib
    import os

    material = load_tls("", "", tmp_path, ["localhost"])
    n, size = 20, 256 * 1024
    received: dict[int, bytearray] = {}

    class Sink(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.buf: bytearray | None = None

        def data_received(self, data: bytes) -> None:
            if self.buf is None:  # the first byte names the stream
                self.buf = received[data[0]] = bytearray()
                data = data[1:]
            self.buf += data

    srv = await asyncio.get_running_loop().create_server(Sink, "127.0.0.1", 0, ssl=material.context)
    port = srv.sockets[0].getsockname()[1]
    client_ctx = ssl.create_default_context()
    client_ctx.check_hostname = False
    client_ctx.verify_mode = ssl.CERT_NONE
    payloads = {i: os.urandom(size) for i in range(n)}

    async def send(i: int) -> None:
        _r, w = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx)
        w.write(bytes([i]))
        data, pos, step = payloads[i], 0, 1000 + 37 * i
        while pos < size:
            w.write(data[pos : pos + step])
            pos += step
            await w.drain()
        w.close()
        await w.wait_closed()

    await asyncio.gather(*(send(i) for i in range(n)))
    for _ in range(250):
        if len(received) == n and all(len(b) == size for b in received.values()):
            break
        await asyncio.sleep(0.02)
    srv.close()
    await srv.wait_closed()
    assert sorted(received) == list(range(n))
    for i in range(n):
        assert hashlib.sha256(received[i]).digest() == hashlib.sha256(payloads[i]).digest(), f"stream {i} corrupted"
