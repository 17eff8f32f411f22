"""Item registries that notify on add and remove: disco features, identities, ad-hoc commands, listeners.

Plugins add items through their context; unloading removes them again, and ``mod_disco``-like modules
answer from the registry rather than from their own lists (Prosody ``module:add_item``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Listener = Callable[[str, Any], None]


class Items:
    def __init__(self) -> None:
        self._items: dict[str, list[Any]] = {}
        self._listeners: dict[str, list[Listener]] = {}

    def add(self, kind: str, item: Any) -> Callable[[], None]:
        self._items.setdefault(kind, []).append(item)
        for fn in self._listeners.get(kind, []):
            fn("added", item)

        def remove() -> None:
            items = self._items.get(kind, [])
            for i, x in enumerate(items):
                if x is item:
                    del items[i]
                    for fn in self._listeners.get(kind, []):
                        fn("removed", item)
                    return

        return remove

    def get(self, kind: str) -> list[Any]:
        return list(self._items.get(kind, ()))

    def on_change(self, kind: str, listener: Listener) -> Callable[[], None]:
        self._listeners.setdefault(kind, []).append(listener)
        return lambda: self._listeners.get(kind, []).remove(listener)
