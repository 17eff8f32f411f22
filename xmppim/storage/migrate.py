"""Running alembic from the server and the CLI: the core trunk plus every plugin's branch.

Alembic's ``env.py`` runs its async engine in its own event loop, so callers run :func:`upgrade` in a
thread (``asyncio.to_thread``) when a loop is already running.
"""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config as AlembicConfig

from alembic import command

from ..config import Config

ROOT = Path(__file__).resolve().parent.parent.parent


def alembic_config(cfg: Config) -> AlembicConfig:
    ini = ROOT / "alembic.ini"
    acfg = AlembicConfig(str(ini))
    acfg.set_main_option("script_location", str(ROOT / "alembic"))
    acfg.set_main_option("sqlalchemy.url", cfg.storage_url.replace("%", "%%"))
    locations = [str(ROOT / "alembic" / "versions")]
    for path in plugin_migration_dirs(cfg):
        locations.append(str(path))
    acfg.set_main_option("version_locations", " ".join(locations))
    acfg.set_main_option("path_separator", "space")
    acfg.attributes["xmppim_config"] = cfg
    return acfg


def plugin_migration_dirs(cfg: Config) -> list[Path]:
    """Version directories of every installed plugin that has migrations (enabled or not)."""
    from ..plugins.loader import discover, load_class

    dirs = []
    for ep in discover().values():
        try:
            cls = load_class(ep)
        except Exception:
            continue
        p = cls.migrations_path()
        if p is not None and p.is_dir():
            dirs.append(p)
    return sorted(set(dirs))


def upgrade(cfg: Config) -> None:
    cfg.data_path.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(cfg), "heads")
