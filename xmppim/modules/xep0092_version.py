"""XEP-0092 Software Version of the server (not of users: their resources answer for themselves)."""

from __future__ import annotations

import platform
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from .. import __version__
from ..plugins.api import Plugin, StanzaEvent, Xep, iq_result

NS = "jabber:iq:version"


class VersionModule(Plugin):
    name = "version"
    builtin = True
    xeps = (Xep(92, "1.1"),)

    async def start(self) -> None:
        self.ctx.add_feature(NS)
        self.ctx.iq_handler("get", NS, self.answer)

    def answer(self, ev: StanzaEvent) -> Any:
        if ev.node:
            return None  # a user's bare JID: nobody answers for them (service-unavailable)
        q = Element(f"{{{NS}}}query")
        SubElement(q, f"{{{NS}}}name").text = "xmppim"
        SubElement(q, f"{{{NS}}}version").text = __version__
        SubElement(q, f"{{{NS}}}os").text = platform.system()
        return iq_result(ev.stanza, q)
