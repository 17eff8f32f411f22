"""The HTTP side (aiohttp): plugin routes under ``/plugins/NAME/`` now; WebSocket, BOSH and the admin
API join here next.

Routes are looked up in our own table on each request rather than added to aiohttp's router, because
aiohttp freezes its router at start and plugins must be able to unload (and their routes vanish).
"""

from __future__ import annotations

import re
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PARAMS: web.RequestKey[dict[str, str]] = web.RequestKey("xmppim_params", dict)
"""Where a plugin route's ``{var}`` segments land: ``request[PARAMS]``."""


class HTTPService:
    def __init__(self) -> None:
        self.routes: list[tuple[str, str, re.Pattern[str], Handler]] = []
        self.app = web.Application(client_max_size=1024 * 1024)
        self.app.router.add_route("*", "/plugins/{plugin}/{tail:.*}", self._dispatch)
        self.app.router.add_get("/", self._index)
        self.runner: web.AppRunner | None = None

    def add_route(self, plugin: str, method: str, path: str, handler: Handler) -> Callable[[], None]:
        pattern = re.escape(path.lstrip("/"))
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", pattern)
        entry = (plugin, method.upper(), re.compile(f"^{pattern}$"), handler)
        self.routes.append(entry)
        return lambda: self.routes.remove(entry) if entry in self.routes else None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        plugin = request.match_info["plugin"]
        tail = request.match_info["tail"]
        allowed: list[str] = []
        for name, method, rx, handler in self.routes:
            if name != plugin:
                continue
            m = rx.match(tail)
            if not m:
                continue
            if method != request.method:
                allowed.append(method)
                continue
            request[PARAMS] = m.groupdict()
            return await handler(request)
        if allowed:
            raise web.HTTPMethodNotAllowed(request.method, allowed)
        raise web.HTTPNotFound()

    async def _index(self, _request: web.Request) -> web.Response:
        return web.Response(text="xmppim\n")

    async def start(self, host: str, port: int) -> None:
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()

    async def start_on(self, sock: socket.socket) -> None:
        """Serve on a listening socket handed over by the multi-process supervisor."""
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, sock).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    def __repr__(self) -> str:
        return f"<HTTPService {len(self.routes)} routes>"


def json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


__all__ = ["HTTPService", "json_error", "Any"]
