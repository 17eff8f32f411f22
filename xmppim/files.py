"""Files made once per installation (the server secret, the wallet's signing key), safely across processes.

Several processes may start at once — the worker processes of one server, the CLI beside a running server —
and each may find the file missing. ``create_once`` writes its candidate to a file of its own and publishes
it with ``link()``, which is atomic and fails if the name exists: every process ends up with the one content
that won, and nobody ever reads a half-written file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def create_once(path: Path, make: Callable[[], bytes], mode: int = 0o600) -> bytes:
    """The content of ``path``; if it does not exist yet, ``make()`` is published there (mode ``mode``)."""
    if path.exists():
        return path.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = make()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.link(tmp, path)
        return data
    except FileExistsError:
        return path.read_bytes()  # another process published first: use its content
    finally:
        tmp.unlink(missing_ok=True)
