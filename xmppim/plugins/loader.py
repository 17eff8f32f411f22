"""Finding, ordering, loading and unloading plugins.

Plugins are entry points in the ``xmppim.plugins`` group (built-in modules register there too, in
``pyproject.toml``). Dependencies load first; unloading a plugin first unloads everything that depends on
it (slixmpp ``PluginManager``). A plugin whose ``start`` raises is unloaded again and the server refuses to
start, naming it — a half-loaded plugin would be worse than none.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from ..config import ConfigError, build_dataclass
from .api import Plugin, PluginContext

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("xmppim.plugins")
GROUP = "xmppim.plugins"


class PluginError(Exception):
    pass


@dataclass
class LoadedPlugin:
    cls: type[Plugin]
    instance: Plugin
    ctx: PluginContext


def discover() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def load_class(ep: EntryPoint) -> type[Plugin]:
    cls = ep.load()
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise PluginError(f"entry point {ep.name} ({ep.value}) is not a Plugin subclass")
    if cls.name != ep.name:
        raise PluginError(f"entry point {ep.name} names plugin class {cls.__name__} whose name is {cls.name!r}")
    return cls


def wanted(available: dict[str, EntryPoint], enabled: list[str], disabled: list[str]) -> list[str]:
    """Names to load: built-ins not disabled, plus enabled ones; unknown names are an error."""
    for n in enabled:
        if n not in available:
            raise ConfigError(
                f"[plugins] enabled names {n!r}, but no installed plugin has that name "
                f"(installed: {', '.join(sorted(available))})"
            )
    names: list[str] = []
    for name, ep in sorted(available.items()):
        # Only our own package's modules are loaded to ask whether they are built-in: a broken
        # third-party plugin that is installed but not enabled must not stop the server.
        if name in enabled or (is_own(ep) and load_class(ep).builtin and name not in disabled):
            names.append(name)
    return names


def is_own(ep: EntryPoint) -> bool:
    return ep.value.startswith("xmppim.")


def resolve_order(names: list[str], classes: dict[str, type[Plugin]]) -> list[str]:
    """Topological order with dependencies first; a missing or circular dependency is an error."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, chain: tuple[str, ...]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise PluginError(f"circular plugin dependency: {' -> '.join(chain + (n,))}")
        if n not in classes:
            raise PluginError(f"plugin {chain[-1]} depends on {n!r}, which is not installed")
        state[n] = 1
        for d in classes[n].dependencies:
            visit(d, chain + (n,))
        state[n] = 2
        order.append(n)

    for n in names:
        visit(n, ())
    return order


class PluginManager:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.loaded: dict[str, LoadedPlugin] = {}
        self.available = discover()

    def classes(self, names: list[str] | None = None) -> dict[str, type[Plugin]]:
        """Plugin classes by name: the wanted ones and, transitively, their dependencies."""
        out: dict[str, type[Plugin]] = {}
        todo = list(names if names is not None else self.available)
        while todo:
            n = todo.pop()
            if n in out or n not in self.available:
                continue
            out[n] = load_class(self.available[n])
            todo.extend(out[n].dependencies)
        return out

    def plan(self) -> list[str]:
        cfg = self.server.config.plugins
        names = wanted(self.available, cfg.enabled, cfg.disabled)
        for n in cfg.settings:
            if n not in self.available:
                raise ConfigError(f"[plugins.{n}] configures a plugin that is not installed")
        return resolve_order(names, self.classes(names))

    def config_for(self, cls: type[Plugin]) -> Any:
        return build_dataclass(cls.Config, self.server.config.plugins.settings.get(cls.name, {}), f"plugins.{cls.name}")

    async def load_all(self) -> None:
        order = self.plan()
        classes = self.classes(order)
        for name in order:
            await self.load(classes[name])

    async def load(self, cls: type[Plugin]) -> None:
        if cls.name in self.loaded:
            return
        ctx = PluginContext(self.server, cls.name, self.config_for(cls))
        instance = cls(ctx)
        try:
            await instance.start()
        except Exception as e:
            await ctx._unload()
            raise PluginError(f"plugin {cls.name} failed to start: {e!r}") from e
        self.loaded[cls.name] = LoadedPlugin(cls, instance, ctx)
        log.info("loaded plugin %s %s", cls.name, cls.version)

    async def unload(self, name: str) -> None:
        lp = self.loaded.get(name)
        if lp is None:
            return
        for other in [n for n, p in self.loaded.items() if name in p.cls.dependencies]:
            await self.unload(other)
        try:
            await lp.instance.stop()
        except Exception:
            log.exception("plugin %s failed to stop", name)
        await lp.ctx._unload()
        del self.loaded[name]
        log.info("unloaded plugin %s", name)

    async def unload_all(self) -> None:
        for name in reversed(list(self.loaded)):
            await self.unload(name)
