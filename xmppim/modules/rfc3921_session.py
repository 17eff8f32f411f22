"""Legacy session establishment (RFC 3921 §3): answered with success for old clients, a no-op today.

RFC 6120 dropped it; we advertise it as ``<optional/>`` (draft-cridland-xmpp-session) and answer the IQ.
"""

from __future__ import annotations

from typing import Any

from ..plugins.api import Plugin, StanzaEvent, iq_result

NS = "urn:ietf:params:xml:ns:xmpp-session"


class LegacySessionModule(Plugin):
    name = "legacy_session"
    builtin = True

    async def start(self) -> None:
        self.ctx.iq_handler("set", NS, self.session)

    def session(self, ev: StanzaEvent) -> Any:
        return iq_result(ev.stanza)
