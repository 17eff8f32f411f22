"""The public plugin API of xmppim. Everything a plugin may use is exported here (``__all__``).

A plugin is a class deriving from :class:`Plugin`, found through the ``xmppim.plugins`` entry-point group
and enabled in ``[plugins] enabled``. It receives a :class:`PluginContext` that records every registration
(hooks, IQ handlers, disco features, components, commands, HTTP routes, timers, services) so that unloading
undoes them in reverse (Prosody ``moduleapi``). Built-in XEP modules use exactly this API.

Every name here was added in 0.1.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from xml.etree.ElementTree import Element

from aiohttp import web

from ..bus.events import (
    PRIORITY_DEFAULT_ACTION,
    PRIORITY_EARLY,
    PRIORITY_FIRST,
    PRIORITY_LATE,
    PRIORITY_NORMAL,
    Handler,
    HandlerFailed,
)
from ..bus.router import DeliverEvent, StanzaEvent
from ..sessions.registry import ClientSession, SessionRegistry
from ..stanza import error_reply, iq_result
from ..transports.http import PARAMS
from .adhoc import Command, CommandError, CommandHandler, CommandRegistry, CommandRequest, CommandResponse
from .component import Component
from .forms import Field, Form

if TYPE_CHECKING:
    from sqlalchemy import MetaData
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ..config import Config
    from ..server import Server
    from ..storage.repositories.accounts import AccountStore

__all__ = [
    "Plugin",
    "PluginContext",
    "Xep",
    "NoConfig",
    "StanzaEvent",
    "DeliverEvent",
    "ClientSession",
    "SessionRegistry",
    "Component",
    "CommandRequest",
    "CommandResponse",
    "CommandError",
    "Form",
    "Field",
    "HandlerFailed",
    "error_reply",
    "iq_result",
    "PRIORITY_FIRST",
    "PRIORITY_EARLY",
    "PRIORITY_NORMAL",
    "PRIORITY_LATE",
    "PRIORITY_DEFAULT_ACTION",
    "PARAMS",
]


@dataclass(frozen=True)
class Xep:
    """A protocol a plugin implements, with version and status (ejabberd's ``-protocol``)."""

    number: int
    version: str
    status: str = "complete"
    """'complete' or 'partial' (say what is missing in the plugin's docstring)."""


@dataclass
class NoConfig:
    """The config dataclass of plugins that take no options."""


class Plugin:
    """Base class of every plugin and built-in module."""

    name: ClassVar[str] = ""
    version: ClassVar[str] = "0.1.0"
    description: ClassVar[str] = ""
    dependencies: ClassVar[tuple[str, ...]] = ()
    """Names of plugins that must be loaded first (and whose unloading unloads this one)."""
    xeps: ClassVar[tuple[Xep, ...]] = ()
    Config: ClassVar[type] = NoConfig
    """A dataclass; ``[plugins.NAME]`` is validated against it at start, unknown keys refused by name."""
    builtin: ClassVar[bool] = False
    """Built-in modules load unless listed in ``[plugins] disabled``; others need ``[plugins] enabled``."""
    metadata: ClassVar[MetaData | None] = None
    """The plugin's own SQLAlchemy MetaData (its tables), if it has any."""
    migrations: ClassVar[str | None] = None
    """Directory of the plugin's alembic versions (its own branch, labelled with the plugin's name)."""

    def __init__(self, ctx: PluginContext) -> None:
        self.ctx = ctx

    async def start(self) -> None:
        """Register hooks, handlers and components. Runs once, in dependency order."""

    async def stop(self) -> None:
        """Release what ``start`` acquired beyond registrations (those are undone automatically)."""

    @classmethod
    def migrations_path(cls) -> Path | None:
        return Path(cls.migrations) if cls.migrations else None


Undo = Callable[[], Any]


class PluginContext:
    """What a plugin may do. Registration calls are meant for ``start``; each is undone on unload."""

    def __init__(self, server: Server, name: str, config: Any) -> None:
        self._server = server
        self.name = name
        self.config = config
        self.log = logging.getLogger(f"xmppim.plugin.{name}")
        self._undo: list[Undo] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.components: list[Component] = []
        self.registrations: list[str] = []
        """Human-readable list of what this plugin registered (for ``xmppim plugins list``)."""

    # ------------------------------------------------------------------ bus
    def hook(self, event: str, handler: Handler, priority: int = PRIORITY_NORMAL) -> None:
        """Run ``handler(payload)`` when ``event`` fires. See the README's events table for payloads."""
        self._undo.append(self._server.bus.hook(event, handler, priority, owner=self.name))
        self.registrations.append(f"hook {event} ({priority})")

    def iq_handler(self, type_: str, namespace: str, handler: Handler, priority: int = PRIORITY_NORMAL) -> None:
        """Handle IQ ``type_`` ('get'/'set') with payload ``namespace`` to the server or a local bare JID.

        ``handler(StanzaEvent)`` returns the reply element, an awaitable of one, True (handled) or None.
        """

        def adapter(ev: StanzaEvent) -> Any:
            r = handler(ev)
            if r is None or r is True:
                return r
            if isinstance(r, Element):
                self._server.router.route_reply(r)
                return True
            if hasattr(r, "__await__"):
                return self._await_reply(r)
            return r

        self.hook(f"iq/{type_}/{namespace}", adapter, priority)

    async def _await_reply(self, aw: Awaitable[Any]) -> Any:
        r = await aw
        if isinstance(r, Element):
            self._server.router.route_reply(r)
            return True
        return r

    # ---------------------------------------------------------------- items
    def add_feature(self, var: str) -> None:
        """Advertise ``var`` in the server's disco#info (XEP-0030)."""
        self._undo.append(self._server.items.add("disco/feature", var))
        self.registrations.append(f"feature {var}")

    def add_account_feature(self, var: str) -> None:
        """Advertise ``var`` in disco#info of user accounts (bare JIDs), e.g. PEP or blocking."""
        self._undo.append(self._server.items.add("disco/account-feature", var))

    def add_identity(self, category: str, type_: str, name: str = "") -> None:
        self._undo.append(self._server.items.add("disco/identity", (category, type_, name)))

    def add_item(self, kind: str, item: Any) -> None:
        """Add to any item registry (e.g. 'stream-feature/bound', 'disco/item')."""
        self._undo.append(self._server.items.add(kind, item))

    def stream_feature(self, stage: str, fn: Callable[[Any], Element | None]) -> None:
        """Offer a stream feature: stage 'unauthenticated' or 'bound'; ``fn(connection)`` may return None."""
        self.add_item(f"stream-feature/{stage}", fn)

    def registry(self, kind: str) -> list[Any]:
        """The current items of a registry (e.g. 'disco/feature', 'disco/identity', 'disco/item')."""
        return self._server.items.get(kind)

    def connected_components(self) -> list[str]:
        """Domains of components (in-process or external) that can take stanzas right now."""
        return sorted(d for d, c in self._server.router.components.items() if c is not None)

    def provide(self, service: str, obj: Any) -> None:
        """Offer a Python service other plugins reach with :meth:`service` (e.g. 'wallet')."""
        self._server.services[service] = obj
        self._undo.append(lambda: self._server.services.pop(service, None))
        self.registrations.append(f"service {service}")

    def service(self, name: str) -> Any:
        """A service another plugin provided; raises KeyError naming it if absent."""
        try:
            return self._server.services[name]
        except KeyError:
            raise KeyError(f"plugin {self.name} needs service {name!r}, which no loaded plugin provides") from None

    # ------------------------------------------------------------ components
    def add_component(self, subdomain: str, name: str, *, domain: str = "", **identity: str) -> Component:
        """Host an in-process component at ``subdomain.<first served domain>`` (or exactly ``domain``).

        It receives every stanza to that domain or any ``node@`` on it, and is listed in the server's
        disco#items. The same :class:`Component` object can run external (``xmppim component run``).
        """
        domain = domain or f"{subdomain}.{self._server.default_domain}"
        comp = Component(domain, name, self._route_from_component, **identity)
        self._server.router.components[domain] = comp

        def undo() -> None:
            if self._server.router.components.get(domain) is comp:
                del self._server.router.components[domain]

        self._undo.append(undo)
        self._undo.append(self._server.items.add("disco/item", (domain, name)))
        self.registrations.append(f"component {domain}")
        self.components.append(comp)
        return comp

    def _route_from_component(self, stanza: Element) -> None:
        r = self._server.router.route(self._server.component_origin(stanza.get("from", "")), stanza)
        if r is not None:
            self.spawn(r)

    def adhoc_command(
        self,
        node: str,
        name: str,
        handler: CommandHandler,
        *,
        admin_only: bool = False,
        allowed: Callable[[str], bool] | None = None,
    ) -> None:
        """An XEP-0050 command on the server's JID (use ``Component.command`` for a component's)."""
        check = allowed or (self._server.config.is_admin if admin_only else None)
        self._undo.append(self._server.server_commands.add(Command(node, name, handler, check)))
        self.registrations.append(f"command {node}")

    # ------------------------------------------------------------------ HTTP
    def http_route(
        self, method: str, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> None:
        """Serve ``method`` ``/plugins/NAME/<path>``; ``{var}`` segments land in ``request[PARAMS]``."""
        self._undo.append(self._server.http.add_route(self.name, method, path, handler))
        self.registrations.append(f"http {method} /plugins/{self.name}/{path.lstrip('/')}")

    # ---------------------------------------------------------------- tasks
    def spawn(self, coro: Coroutine[Any, Any, Any] | Awaitable[Any]) -> asyncio.Task[Any]:
        """Run a background task that is cancelled when the plugin unloads or the server stops.

        A failure is logged and counted against the plugin (``bus.failures``), never raised at the server.
        """
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._server.bus.count_failure(self.name, "background task", exc)

    def add_timer(self, interval: float, fn: Callable[[], Awaitable[Any]]) -> None:
        """Call ``fn`` every ``interval`` seconds until unload; a failing call is logged, not fatal."""

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await fn()
                except Exception:
                    self.log.exception("timer of %s failed", self.name)

        self.spawn(loop())
        self.registrations.append(f"timer every {interval}s")

    # --------------------------------------------------------------- workers
    def pin_to_user(self, side: str, kinds: tuple[str, ...], match: Callable[[StanzaEvent], bool]) -> None:
        """Declare stanzas that read-modify-write per-user state this plugin keeps in memory.

        When the server runs as several worker processes (``[server] workers``), a stanza of one of ``kinds``
        ('message', 'presence', 'iq') for which ``match(ev)`` is true is handled on the home worker of the
        user whose state it changes — the sender (``side='sender'``, checked at ``stanza/in`` for client
        stanzas) or the recipient (``side='recipient'``, checked at ``{kind}/bare`` and ``{kind}/full``; only
        'presence' is supported there so far) — so each user's state has one writer. Pair it with
        :meth:`broadcast` so other workers drop copies they cached. In one process this costs nothing.
        """
        if side not in ("sender", "recipient"):
            raise ValueError("side must be 'sender' or 'recipient'")
        if side == "recipient" and set(kinds) - {"presence"}:
            raise ValueError("recipient-side pinning covers presence only")
        self.add_item(f"cluster/pin-{side}", (kinds, match))

    def broadcast(self, topic: str, data: Any) -> None:
        """Tell the other worker processes something (JSON-serialisable ``data``); there, handlers of
        ``cluster/{topic}`` get ``data``. Nothing happens in a single-process server."""
        cluster = self._server.cluster
        if cluster is not None:
            cluster.broadcast(topic, data)

    @property
    def worker(self) -> int:
        """This process's worker index (0 in a single-process server)."""
        return self._server.cluster.index if self._server.cluster is not None else 0

    # ---------------------------------------------------------------- server
    def notify(self, event: str, payload: Any) -> list[Any]:
        """Fire an observation event (every handler runs); returns awaitables handlers handed back."""
        return self._server.bus.notify(event, payload)

    def fire(self, event: str, payload: Any) -> Any:
        """Fire a chain event (first non-None result wins) and return that result."""
        return self._server.bus.fire(event, payload)

    @property
    def server_commands(self) -> CommandRegistry:
        """The XEP-0050 commands of the server's own JID (the adhoc module serves them)."""
        return self._server.server_commands

    @property
    def accounts(self) -> AccountStore:
        return self._server.accounts

    @property
    def server_config(self) -> Config:
        """The server's whole configuration (read it; never change it)."""
        return self._server.config

    @property
    def sessions(self) -> SessionRegistry:
        return self._server.sessions

    @property
    def db(self) -> AsyncEngine:
        engine: AsyncEngine = self._server.engine
        return engine

    @property
    def hosts(self) -> set[str]:
        return self._server.hosts

    @property
    def default_domain(self) -> str:
        return self._server.default_domain

    @property
    def data_dir(self) -> Path:
        return self._server.config.data_path

    def is_admin(self, bare_jid: str) -> bool:
        return self._server.config.is_admin(bare_jid)

    async def user_exists(self, bare_jid: str) -> bool:
        node, _, domain = bare_jid.partition("@")
        if not domain or domain not in self._server.hosts:
            return False
        return await self._server.accounts.exists(node, domain)

    def send(self, stanza: Element) -> Any:
        """Route a stanza from the server (or this plugin's component); returns an awaitable or None."""
        return self._server.router.route(self._server.local_origin(self.name), stanza)

    def route_as(self, origin: Any, stanza: Element) -> Any:
        """Route ``stanza`` on behalf of ``origin`` (e.g. :meth:`server_origin`); awaitable or None."""
        return self._server.router.route(origin, stanza)

    def dispatch(self, ev: StanzaEvent) -> Any:
        """Continue routing a stanza a ``*/pre-route`` handler held back (after async work, say)."""
        return self._server.router.dispatch(ev)

    def server_origin(self, name: str) -> Any:
        """An origin of kind 'local' named ``name``: stanzas the server itself generates."""
        return self._server.local_origin(name)

    async def send_iq(self, iq: Element, timeout: float = 30.0) -> Element:
        return await self._server.router.send_iq(self._server.local_origin(self.name), iq, timeout)

    # ---------------------------------------------------------------- unload
    async def _unload(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._undo:
            try:
                self._undo.pop()()
            except Exception:
                self.log.exception("undoing a registration of %s failed", self.name)
