"""Test-only fault injection: ``XMPPIM_FAULT=NAME[,NAME]`` makes the server misbehave on purpose.

The interoperability tier runs with a fault to prove it can fail with a readable reason (issue 11). Never
set this in production. Known faults:

* ``drop-roster-push`` — roster changes are stored but no push is sent (RFC 6121 §2.1.6 broken);
* ``drop-messages`` — chat/normal messages are accepted but never delivered to a session.
"""

from __future__ import annotations

import logging
import os

KNOWN = frozenset({"drop-roster-push", "drop-messages"})
_ACTIVE = frozenset(f.strip() for f in os.environ.get("XMPPIM_FAULT", "").split(",") if f.strip())

if _ACTIVE:
    logging.getLogger("xmppim.faults").warning("FAULT INJECTION ACTIVE: %s", ", ".join(sorted(_ACTIVE)))


def active(name: str) -> bool:
    assert name in KNOWN, name
    return name in _ACTIVE
