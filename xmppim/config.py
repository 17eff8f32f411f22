"""Configuration: one TOML file, typed sections, every key documented in the README.

The key names under ``[server]``, ``[storage]``, ``[c2s]``, ``[s2s]``, ``[component]``, ``[http]``, ``[tls]``,
``[registration]``, ``[limits]``, ``[plugins]`` and ``[components."DOMAIN"]`` are a contract other tools
rely on: add keys, never rename them. Unknown keys are refused with a message naming them, so a typo
never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem, phrased for the operator."""


@dataclass
class ServerConfig:
    domains: list[str] = field(default_factory=lambda: ["localhost"])
    data_dir: str = "./var"
    admins: list[str] = field(default_factory=list)
    """Bare JIDs with administrative rights (ad-hoc admin commands, wallet minting)."""
    workers: int = 1
    """Worker processes sharing the listening sockets (``xmppim/cluster/``); 1 runs everything in one."""


@dataclass
class StorageConfig:
    url: str = ""
    """SQLAlchemy URL; empty means ``sqlite+aiosqlite:///<data_dir>/xmppim.db``."""
    sqlite_synchronous: str = "normal"
    """SQLite only: 'normal' survives a server crash, 'full' also a power loss (slower); see storage/db.py."""


@dataclass
class C2SConfig:
    bind: str = "127.0.0.1"
    port: int = 5222
    direct_tls_port: int = 5223
    require_encryption: bool = True
    auth_timeout: float = 30.0
    """Seconds an unauthenticated connection may take to bind (RFC 6120 §13.12 limits)."""
    max_unauthenticated_per_ip: int = 100


@dataclass
class S2SConfig:
    port: int = 5269
    bind: str = "127.0.0.1"


@dataclass
class ComponentListenerConfig:
    port: int = 5347
    bind: str = "127.0.0.1"


@dataclass
class HTTPConfig:
    port: int = 5280
    bind: str = "127.0.0.1"


@dataclass
class TLSConfig:
    cert: str = ""
    key: str = ""


@dataclass
class RegistrationConfig:
    allow: bool = False


@dataclass
class LimitsConfig:
    max_stanza_bytes: int = 262144
    offline_quota: int = 1000
    """Messages kept offline per user before bouncing with resource-constraint (XEP-0160)."""
    max_offline_delivery: int = 1000
    c2s_bytes_per_second: int = 262144
    """Input rate per client connection (token bucket, 4 s burst); a faster sender is slowed by TCP
    backpressure, not disconnected. 0 turns flood control off (benchmarks)."""


@dataclass
class PluginsConfig:
    enabled: list[str] = field(default_factory=lambda: ["wallet"])
    """Plugins (entry points in group ``xmppim.plugins``) to load besides the built-in modules."""
    disabled: list[str] = field(default_factory=list)
    """Built-in modules to leave out."""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each plugin's own ``[plugins.NAME]`` table, validated by the plugin's config dataclass."""


@dataclass
class ComponentSecret:
    secret: str


@dataclass
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    c2s: C2SConfig = field(default_factory=C2SConfig)
    s2s: S2SConfig = field(default_factory=S2SConfig)
    component: ComponentListenerConfig = field(default_factory=ComponentListenerConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)
    components: dict[str, ComponentSecret] = field(default_factory=dict)
    source: str | None = None

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir)

    @property
    def storage_url(self) -> str:
        if self.storage.url:
            return self.storage.url
        return f"sqlite+aiosqlite:///{self.data_path / 'xmppim.db'}"

    def is_admin(self, bare_jid: str) -> bool:
        return bare_jid in self.server.admins


def build_dataclass(cls: type[Any], data: dict[str, Any], where: str) -> Any:
    """Build dataclass ``cls`` from a TOML table, refusing unknown keys and wrong types by name.

    Public so plugins' config dataclasses are validated the same way as the core's.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"[{where}] must be a table")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} in [{where}]; "
            f"known keys: {', '.join(sorted(names))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        kwargs[name] = _check_type(hints[name], value, f"{where}.{name}")
    return cls(**kwargs)


def _check_type(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return build_dataclass(hint, value, where)
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool):
        if type(value) is not hint:
            raise ConfigError(f"{where} must be {hint.__name__}, not {type(value).__name__} ({value!r})")
        return value
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be a list")
        return [_check_type(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _k, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table")
        return {k: _check_type(item, v, f"{where}.{k}") for k, v in value.items()}
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(a, value, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where} has the wrong type ({value!r})")
    return value


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """Load the TOML file at ``path`` (or ``$XMPPIM_CONFIG``); no file at all gives the embedded defaults."""
    path = path or os.environ.get("XMPPIM_CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path} is not valid TOML: {e}") from None
    return config_from_dict(data, source=str(path) if path else None)


def config_from_dict(data: dict[str, Any], source: str | None = None) -> Config:
    data = dict(data)
    plugins = dict(data.pop("plugins", {}) or {})
    settings = {k: v for k, v in plugins.items() if isinstance(v, dict)}
    for k in settings:
        plugins.pop(k)
    components = data.pop("components", {}) or {}
    cfg = build_dataclass(Config, data, "config")
    cfg.plugins = build_dataclass(PluginsConfig, plugins, "plugins")
    cfg.plugins.settings = settings
    cfg.components = {dom: build_dataclass(ComponentSecret, v, f'components."{dom}"') for dom, v in components.items()}
    cfg.source = source
    validate(cfg)
    assert isinstance(cfg, Config)
    return cfg


def validate(cfg: Config) -> None:
    if not cfg.server.domains:
        raise ConfigError("[server] domains must name at least one domain")
    from slixmpp.jid import JID, InvalidJID

    for d in cfg.server.domains + list(cfg.components):
        try:
            j = JID(d)
        except InvalidJID as e:
            raise ConfigError(f"{d!r} is not a valid domain: {e}") from None
        if j.user or j.resource:
            raise ConfigError(f"{d!r} must be a bare domain")
    if not 1 <= cfg.server.workers <= 64:
        raise ConfigError("[server] workers must be from 1 to 64")
    if cfg.limits.max_stanza_bytes < 10000:
        raise ConfigError("[limits] max_stanza_bytes must be at least 10000 (RFC 6120 §13.12)")
    for section in ("c2s", "s2s", "component", "http"):
        port = getattr(cfg, section).port
        if not 0 <= port <= 65535:
            raise ConfigError(f"[{section}] port {port} is out of range")
