"""External mode: run a plugin's components attached to any XMPP server over XEP-0114.

``xmppim component run PLUGIN --server HOST:PORT --secret S [--domain D]`` loads the plugin class by its
entry-point name and hands it an :class:`ExternalContext` instead of a server's ``PluginContext``. Each
component the plugin adds gets its own ``jabber:component:accept`` connection (XEP-0114 §3: one stream
per component domain) made with slixmpp's ``ComponentXMPP``; the very same
:class:`~xmppim.plugins.component.Component` object then sends through that connection and is fed every
stanza that arrives on it, so a service behaves identically in-process, attached to xmppim, Prosody or
ejabberd.

What an external component cannot do: see the server's events. ``hook``, ``iq_handler``, ``add_feature``
and the other server registrations are accepted and do nothing (logged once), ``accounts``/``sessions``
raise, and ``user_exists`` answers True for every JID on the server's domain (there is no account store
to ask: the server itself bounces stanzas to users that do not exist).

Added in 0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from slixmpp import ComponentXMPP
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher.base import MatcherBase

from ..bus.events import PRIORITY_NORMAL, Handler
from ..bus.router import ServerOrigin, StanzaEvent
from ..config import Config, ConfigError, build_dataclass
from ..xml import ns
from ..xml.serialize import serialize
from .adhoc import CommandHandler, CommandRegistry
from .api import Plugin, PluginContext
from .component import Component
from .loader import PluginError, discover, load_class

if TYPE_CHECKING:
    from aiohttp import web
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ..sessions.registry import SessionRegistry
    from ..storage.repositories.accounts import AccountStore

log = logging.getLogger("xmppim.external")

_COMPONENT_PREFIX = "{" + ns.COMPONENT + "}"
_CLIENT_PREFIX = "{" + ns.CLIENT + "}"
_STANZA_NAMES = frozenset({"message", "presence", "iq"})
FATAL_STREAM_ERRORS = frozenset(
    {"not-authorized", "host-unknown", "invalid-namespace", "improper-addressing"}
)
"""Stream errors a retry cannot cure (XEP-0114 §3: a refused handshake is ``not-authorized``)."""
MAX_BACKOFF = 10.0
"""Longest wait between reconnection attempts (slixmpp's own back-off grows to 300 s)."""
MAX_QUEUED = 1000
"""Stanzas kept while a connection is down; beyond that the oldest are dropped (and logged)."""


def canonical(el: Element) -> Element:
    """A copy of ``el`` with ``jabber:component:accept`` tags renamed to the canonical ``jabber:client``.

    xmppim's handlers only know the ``{jabber:client}`` spelling (RFC 6120 §4.8.2 content namespaces),
    which is what the server's own parser produces for every stream kind.
    """
    tag = el.tag
    if isinstance(tag, str) and tag.startswith(_COMPONENT_PREFIX):
        tag = _CLIENT_PREFIX + tag[len(_COMPONENT_PREFIX) :]
    out = Element(tag, dict(el.attrib))
    out.text = el.text
    out.tail = el.tail
    for child in el:
        out.append(canonical(child))
    return out


class _AnyStanza(MatcherBase):
    """Matches every message, presence and IQ, so slixmpp never answers one itself (its default
    ``feature-not-implemented`` for unhandled IQs would race the component's own reply)."""

    def __init__(self) -> None:
        super().__init__(None)

    def match(self, xml: Any) -> bool:
        tag = getattr(getattr(xml, "xml", None), "tag", "")
        return isinstance(tag, str) and tag.rpartition("}")[2] in _STANZA_NAMES


class ComponentLink:
    """One XEP-0114 connection carrying one :class:`Component` (reconnects until stopped)."""

    def __init__(
        self, component: Component, secret: str, host: str, port: int, on_fatal: Callable[[str], None]
    ) -> None:
        self.component = component
        self.domain = component.domain
        self.host = host
        self.port = port
        self.established = asyncio.Event()
        self.fatal: str = ""
        self._on_fatal = on_fatal
        self._stopping = False
        self._queue: list[bytes] = []
        self._reconnect: asyncio.TimerHandle | None = None
        self.xmpp = ComponentXMPP(component.domain, secret, host, port)  # type: ignore[no-untyped-call]
        self.xmpp.register_handler(Callback("xmppim-external", _AnyStanza(), self._incoming))
        # The plugin decides about presence; slixmpp's roster would answer probes with 'unsubscribed'.
        self.xmpp.del_event_handler("presence_probe", self.xmpp._handle_probe)
        self.xmpp.add_event_handler("session_start", self._started)
        self.xmpp.add_event_handler("stream_error", self._stream_error)
        self.xmpp.add_event_handler("disconnected", self._disconnected)
        self.xmpp.add_event_handler("connection_failed", self._failed)
        self.xmpp.add_event_handler("reconnect_delay", self._cap_backoff)

    # ------------------------------------------------------------ lifecycle
    def connect(self) -> None:
        log.info("connecting component %s to %s:%d", self.domain, self.host, self.port)
        self.xmpp.connect(self.host, self.port)

    async def close(self, wait: float = 1.0) -> None:
        """Close the stream properly (``</stream:stream>``), bounded by ``wait`` seconds."""
        self._stopping = True
        if self._reconnect is not None:
            self._reconnect.cancel()
        self.xmpp.cancel_connection_attempt()
        if self.xmpp.transport is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.xmpp.disconnect(wait=wait), wait + 1.0)
            if self.xmpp.transport is not None:
                self.xmpp.abort()

    def _started(self, _event: Any) -> None:
        log.info("component %s connected to %s:%d", self.domain, self.host, self.port)
        self.established.set()
        queued, self._queue = self._queue, []
        for data in queued:
            self.xmpp.send_raw(data)

    def _stream_error(self, error: Any) -> None:
        condition = str(error["condition"])
        text = str(error["text"] or "")
        log.error("server closed the stream of %s: %s %s", self.domain, condition, text)
        if condition in FATAL_STREAM_ERRORS:
            self.fatal = f"{condition}{': ' + text if text else ''}"
            self._on_fatal(f"component {self.domain} refused by {self.host}:{self.port}: {self.fatal}")

    def _disconnected(self, _reason: Any) -> None:
        was_up = self.established.is_set()
        self.established.clear()
        if self._stopping or self.fatal:
            return
        if was_up:
            log.warning("component %s lost its connection; reconnecting", self.domain)
        loop = asyncio.get_running_loop()
        self._reconnect = loop.call_later(1.0 if was_up else MAX_BACKOFF, self.connect)

    def _failed(self, reason: Any) -> None:
        log.warning(
            "component %s cannot reach %s:%d (%s); retrying", self.domain, self.host, self.port, reason
        )

    def _cap_backoff(self, _delay: Any) -> None:
        # slixmpp reads this attribute right after the event; its own doubling reaches 300 s.
        if getattr(self.xmpp, "_connect_loop_wait", 0) > MAX_BACKOFF:
            self.xmpp._connect_loop_wait = MAX_BACKOFF

    # ------------------------------------------------------------- traffic
    def send(self, stanza: Element) -> None:
        """Write ``stanza`` now, or keep it until the handshake succeeds (bounded queue)."""
        data = serialize(stanza, ns.COMPONENT)
        if self.established.is_set() and self.xmpp.transport is not None:
            self.xmpp.send_raw(data)
            return
        if len(self._queue) >= MAX_QUEUED:
            self._queue.pop(0)
            log.warning("component %s is disconnected: dropped its oldest queued stanza", self.domain)
        self._queue.append(data)

    def _incoming(self, stanza: Any) -> None:
        self.component.deliver(canonical(stanza.xml))


class ExternalContext(PluginContext):
    """The :class:`PluginContext` of a plugin running as an external component (no server around).

    It deliberately skips ``PluginContext.__init__`` (which needs a server) and overrides every method
    that would reach one; ``tests/e2e/test_plugin_api.py`` checks that none is left out.
    """

    def __init__(
        self,
        cfg: Config,
        name: str,
        config: Any,
        *,
        host: str,
        port: int,
        secret: str,
        domain: str | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self.log = logging.getLogger(f"xmppim.plugin.{name}")
        self._undo: list[Callable[[], Any]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self.components: list[Component] = []
        self.registrations: list[str] = []
        self._cfg = cfg
        self._host = host
        self._port = port
        self._secret = secret
        self._domain_override = domain or ""
        self._services: dict[str, Any] = {}
        self._engine: AsyncEngine | None = None
        self._warned_server_only = False
        self._on_fatal = on_fatal or (lambda msg: log.error("%s", msg))
        self.links: list[ComponentLink] = []
        self.failures = 0
        """Background tasks of the plugin that raised (the server counts these in ``bus.failures``)."""
        hosts = list(cfg.server.domains)
        if self._domain_override and "." in self._domain_override:
            # --domain echo.example.org: the server this component serves is example.org.
            hosts.insert(0, self._domain_override.split(".", 1)[1])
        self._hosts = hosts

    # -------------------------------------------------- server-only no-ops
    def _server_only(self, what: str) -> None:
        if not self._warned_server_only:
            self._warned_server_only = True
            self.log.warning(
                "%s ignored: server events are not available to an external component (it registers "
                "nothing on the server; further such calls are logged at debug level)",
                what,
            )
        else:
            self.log.debug("%s ignored: server events are not available to an external component", what)

    def hook(self, event: str, handler: Handler, priority: int = PRIORITY_NORMAL) -> None:
        self._server_only(f"hook {event}")

    def iq_handler(
        self, type_: str, namespace: str, handler: Handler, priority: int = PRIORITY_NORMAL
    ) -> None:
        self._server_only(f"iq_handler {type_} {namespace}")

    def add_feature(self, var: str) -> None:
        self._server_only(f"add_feature {var}")

    def add_account_feature(self, var: str) -> None:
        self._server_only(f"add_account_feature {var}")

    def add_identity(self, category: str, type_: str, name: str = "") -> None:
        self._server_only(f"add_identity {category}/{type_}")

    def add_item(self, kind: str, item: Any) -> None:
        self._server_only(f"add_item {kind}")

    def stream_feature(self, stage: str, fn: Callable[[Any], Element | None]) -> None:
        self._server_only(f"stream_feature {stage}")

    def adhoc_command(
        self,
        node: str,
        name: str,
        handler: CommandHandler,
        *,
        admin_only: bool = False,
        allowed: Callable[[str], bool] | None = None,
    ) -> None:
        """Commands on the *server's* JID need the server; use ``Component.command`` instead."""
        self._server_only(f"adhoc_command {node}")

    def http_route(
        self, method: str, path: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> None:
        self._server_only(f"http_route {method} {path}")

    def notify(self, event: str, payload: Any) -> list[Any]:
        self._server_only(f"notify {event}")
        return []

    def fire(self, event: str, payload: Any) -> Any:
        self._server_only(f"fire {event}")
        return None

    def registry(self, kind: str) -> list[Any]:
        """The server's registries are not visible from outside: always empty."""
        return []

    def pin_to_user(self, side: str, kinds: tuple[str, ...], match: Callable[[StanzaEvent], bool]) -> None:
        """An external component is one process that sees only its own stanzas: nothing to pin."""

    def broadcast(self, topic: str, data: Any) -> None:
        """No server workers to tell: an external component is one process of its own."""

    @property
    def worker(self) -> int:
        return 0

    # ------------------------------------------------------------ services
    def provide(self, service: str, obj: Any) -> None:
        """Offer a service to the plugin's own code (only this process can reach it)."""
        self._services[service] = obj
        self._undo.append(lambda: self._services.pop(service, None))
        self.registrations.append(f"service {service}")

    def service(self, name: str) -> Any:
        try:
            return self._services[name]
        except KeyError:
            raise KeyError(
                f"plugin {self.name} needs service {name!r}, which is not available in external mode"
            ) from None

    # ---------------------------------------------------------- components
    def add_component(self, subdomain: str, name: str, *, domain: str = "", **identity: str) -> Component:
        """Host a component over its own XEP-0114 connection.

        ``--domain`` (if given) replaces the domain of the plugin's one component; a plugin that adds a
        second component then fails, since one process cannot guess a second domain the server expects.
        """
        if self._domain_override:
            if any(c.domain == self._domain_override for c in self.components):
                raise PluginError(
                    f"plugin {self.name} adds more than one component; run it without --domain "
                    "(each component then uses its own domain)"
                )
            domain = self._domain_override
        domain = domain or f"{subdomain}.{self.default_domain}"
        link: ComponentLink | None = None

        def send(stanza: Element) -> None:
            assert link is not None
            link.send(stanza)

        comp = Component(domain, name, send, **identity)
        link = ComponentLink(comp, self._secret, self._host, self._port, self._on_fatal)
        self.links.append(link)
        self.components.append(comp)
        self.registrations.append(f"component {domain}")
        return comp

    def connected_components(self) -> list[str]:
        """Domains of this plugin's components whose connection is established right now."""
        return sorted(link.domain for link in self.links if link.established.is_set())

    def _link_for(self, stanza: Element) -> ComponentLink:
        if not self.links:
            raise RuntimeError(f"plugin {self.name} has no component to send through in external mode")
        sender = stanza.get("from", "").split("/", 1)[0].rpartition("@")[2]
        for link in self.links:
            if link.domain == sender:
                return link
        return self.links[0]

    def send(self, stanza: Element) -> Any:
        """Send through the component whose domain is the stanza's ``from`` (else the first one)."""
        self._link_for(stanza).component.send(stanza)
        return None

    def route_as(self, origin: Any, stanza: Element) -> Any:
        """Send ``stanza`` (the origin is the server's business; a component sends as itself)."""
        return self.send(stanza)

    def dispatch(self, ev: StanzaEvent) -> Any:
        self._server_only("dispatch")
        return None

    def server_origin(self, name: str) -> Any:
        return ServerOrigin(name)

    async def send_iq(self, iq: Element, timeout: float = 30.0) -> Element:  # noqa: ASYNC109 (same API)
        return await self._link_for(iq).component.send_iq(iq, timeout)

    # ---------------------------------------------------------------- tasks
    def spawn(self, coro: Coroutine[Any, Any, Any] | Awaitable[Any]) -> asyncio.Task[Any]:
        """Run a background task, cancelled when the component stops; failures are logged and counted.

        The coroutine itself becomes the task (no wrapper coroutine), so cancelling a task that never
        ran still closes it cleanly instead of leaving a "never awaited" coroutine behind.
        """
        loop = asyncio.get_running_loop()
        task = loop.create_task(coro if asyncio.iscoroutine(coro) else _await(coro))
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.failures += 1
            self.log.error("background task of %s failed", self.name, exc_info=exc)

    # --------------------------------------------------------------- server
    @property
    def server_commands(self) -> CommandRegistry:
        raise RuntimeError("the server's ad-hoc commands are not available to an external component")

    @property
    def accounts(self) -> AccountStore:
        raise RuntimeError("the account store is not available to an external component")

    @property
    def sessions(self) -> SessionRegistry:
        raise RuntimeError("client sessions are not available to an external component")

    @property
    def server_config(self) -> Config:
        return self._cfg

    @property
    def db(self) -> AsyncEngine:
        """An engine for ``[storage] url`` (made on first use, disposed when the component stops)."""
        if self._engine is None:
            from ..storage.db import create_engine

            self._engine = create_engine(self._cfg.storage_url)
        return self._engine

    @property
    def hosts(self) -> set[str]:
        return set(self._hosts)

    @property
    def default_domain(self) -> str:
        return self._hosts[0]

    @property
    def data_dir(self) -> Path:
        return self._cfg.data_path

    def is_admin(self, bare_jid: str) -> bool:
        return self._cfg.is_admin(bare_jid)

    async def user_exists(self, bare_jid: str) -> bool:
        """True for any JID on the server's domain: an external component cannot see accounts.

        The server bounces stanzas to users that do not exist, so a plugin that checks first and then
        sends gets an error stanza back instead of a False here.
        """
        node, _, domain = bare_jid.partition("@")
        return bool(node) and domain in self._hosts

    # ---------------------------------------------------------------- unload
    async def _unload(self) -> None:
        await super()._unload()
        await asyncio.gather(*(link.close() for link in self.links), return_exceptions=True)
        if self._engine is not None:
            await self._engine.dispose()
            self._engine = None


async def _await(aw: Awaitable[Any]) -> Any:
    return await aw


def plugin_class(name: str) -> type[Plugin]:
    """The plugin class registered under entry point ``name`` (group ``xmppim.plugins``)."""
    available = discover()
    ep = available.get(name)
    if ep is None:
        installed = ", ".join(sorted(available))
        raise PluginError(f"no installed plugin is named {name!r} (installed: {installed})")
    return load_class(ep)


async def run_external(
    cfg: Config,
    plugin_name: str,
    host: str,
    port: int,
    secret: str,
    domain: str | None = None,
    *,
    stop: asyncio.Event | None = None,
) -> int:
    """Run plugin ``plugin_name``'s components against the XEP-0114 port ``host:port`` until stopped.

    Stops on SIGTERM/SIGINT (or when ``stop`` is set, for embedding and tests). Returns 0 after a
    normal stop, 1 when the server refuses a component for good (wrong secret, unknown domain), 2 when
    the plugin cannot be loaded or started.
    """
    try:
        cls = plugin_class(plugin_name)
        config = build_dataclass(cls.Config, cfg.plugins.settings.get(cls.name, {}), f"plugins.{cls.name}")
    except (PluginError, ConfigError) as e:
        log.error("%s", e)
        print(f"xmppim component: {e}", file=sys.stderr, flush=True)
        return 2
    if cls.migrations_path() is not None:
        from ..storage.migrate import upgrade

        await asyncio.to_thread(upgrade, cfg)

    stopping = stop or asyncio.Event()
    fatal: list[str] = []

    def on_fatal(message: str) -> None:
        fatal.append(message)
        stopping.set()

    ctx = ExternalContext(
        cfg, cls.name, config, host=host, port=port, secret=secret, domain=domain, on_fatal=on_fatal
    )
    instance = cls(ctx)
    try:
        await instance.start()
    except Exception as e:
        log.exception("plugin %s failed to start", cls.name)
        await ctx._unload()
        print(f"xmppim component: plugin {cls.name} failed to start: {e!r}", file=sys.stderr, flush=True)
        return 2
    if not ctx.links:
        log.error("plugin %s added no component: nothing to run externally", cls.name)
        print(f"xmppim component: plugin {cls.name} adds no component", file=sys.stderr, flush=True)
        await ctx._unload()
        return 2

    loop = asyncio.get_running_loop()
    signals: list[signal.Signals] = []
    if stop is None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stopping.set)
                signals.append(sig)
    try:
        for link in ctx.links:
            link.connect()
        await stopping.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        try:
            await instance.stop()
        except Exception:
            log.exception("plugin %s failed to stop", cls.name)
        await ctx._unload()
    if fatal:
        for message in fatal:
            print(f"xmppim component: {message}", file=sys.stderr, flush=True)
        return 1
    return 0


__all__ = ["ComponentLink", "ExternalContext", "canonical", "plugin_class", "run_external"]
