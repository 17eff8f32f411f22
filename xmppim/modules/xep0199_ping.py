"""XEP-0199 XMPP Ping: the server answers pings to itself and to its users' bare JIDs."""

from __future__ import annotations

from typing import Any

from ..plugins.api import Plugin, StanzaEvent, Xep, iq_result

NS = "urn:xmpp:ping"


class PingModule(Plugin):
    name = "ping"
    builtin = True
    xeps = (Xep(199, "2.0.1"),)

    async def start(self) -> None:
        self.ctx.add_feature(NS)
        self.ctx.iq_handler("get", NS, self.pong)

    def pong(self, ev: StanzaEvent) -> Any:
        return iq_result(ev.stanza)
