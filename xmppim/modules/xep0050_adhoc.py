"""XEP-0050 Ad-Hoc Commands on the server's own JID (plugins add commands with ``ctx.adhoc_command``).

Components run their own commands (``Component.command``); this module serves the commands registered
for the server JID, such as administrative ones, through the same :class:`CommandRegistry`.
"""

from __future__ import annotations

from typing import Any

from ..plugins.adhoc import NS
from ..plugins.api import PRIORITY_EARLY, CommandRequest, CommandResponse, Plugin, StanzaEvent, Xep, error_reply

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"


class AdhocModule(Plugin):
    name = "adhoc"
    builtin = True
    dependencies = ("disco",)
    xeps = (Xep(50, "1.3.0"),)

    async def start(self) -> None:
        self.registry = self.ctx.server_commands
        self.ctx.add_feature(NS)
        self.ctx.iq_handler("set", NS, self.execute)
        self.ctx.iq_handler("get", DISCO_ITEMS, self.items, PRIORITY_EARLY)
        self.ctx.iq_handler("get", DISCO_INFO, self.info, PRIORITY_EARLY)
        # Like Prosody's mod_adhoc: one command every user may run, so clients can see the feature work.
        self.ctx.adhoc_command("ping", "Ping", self.ping)

    async def ping(self, req: CommandRequest) -> CommandResponse:
        return CommandResponse(note="Pong")

    def execute(self, ev: StanzaEvent) -> Any:
        if ev.node:
            return error_reply(ev.stanza, "service-unavailable")
        return self.registry.execute(ev.stanza)

    def items(self, ev: StanzaEvent) -> Any:
        if ev.node or ev.stanza[0].get("node") != NS:
            return None
        return self.registry.disco_items(ev.stanza)

    def info(self, ev: StanzaEvent) -> Any:
        node = ev.stanza[0].get("node")
        if ev.node or not node:
            return None
        return self.registry.disco_info(ev.stanza, node)
