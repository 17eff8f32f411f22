"""XEP-0030 Service Discovery for the server and for user accounts, answered from the item registries.

disco#info on a served domain lists the ``server/im`` identity plus every feature a module or plugin
registered; disco#items lists components (each of which answers disco#info itself — aioxmpp aborts its
set-up otherwise). On a user's bare JID the server answers for the account (``account/registered``).
Nodes are left to other modules: they hook the same event at a higher priority and answer their node.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, SubElement

from ..plugins.api import PRIORITY_DEFAULT_ACTION, Plugin, StanzaEvent, Xep, error_reply, iq_result

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"


class DiscoModule(Plugin):
    name = "disco"
    builtin = True
    xeps = (Xep(30, "2.5rc3"),)

    async def start(self) -> None:
        self.ctx.add_feature(INFO)
        self.ctx.add_feature(ITEMS)
        self.ctx.add_identity("server", "im", "xmppim")
        self.ctx.iq_handler("get", INFO, self.info, PRIORITY_DEFAULT_ACTION)
        self.ctx.iq_handler("get", ITEMS, self.items, PRIORITY_DEFAULT_ACTION)
        self.ctx.provide("disco", self)

    def server_info(self) -> tuple[list[tuple[str, str, str]], list[str]]:
        return self.ctx.registry("disco/identity"), sorted(set(self.ctx.registry("disco/feature")))

    def info(self, ev: StanzaEvent) -> Any:
        node = ev.stanza[0].get("node")
        if node:
            return error_reply(ev.stanza, "item-not-found")
        q = Element(f"{{{INFO}}}query")
        if ev.node:
            identities = [("account", "registered", "")]
            features = sorted({INFO, ITEMS, *self.ctx.registry("disco/account-feature")})
        else:
            identities, features = self.server_info()
        for cat, typ, name in identities:
            attrs = {"category": cat, "type": typ}
            if name:
                attrs["name"] = name
            SubElement(q, f"{{{INFO}}}identity", attrs)
        for f in features:
            SubElement(q, f"{{{INFO}}}feature", {"var": f})
        for form in self.ctx.registry("disco/extension" if not ev.node else "disco/account-extension"):
            q.append(form())
        return iq_result(ev.stanza, q)

    def items(self, ev: StanzaEvent) -> Any:
        node = ev.stanza[0].get("node")
        if node:
            return error_reply(ev.stanza, "item-not-found")
        q = Element(f"{{{ITEMS}}}query")
        if not ev.node:
            # Only components that answer now: every listed item must answer disco#info.
            names = dict(self.ctx.registry("disco/item"))
            for domain in self.ctx.connected_components():
                attrs = {"jid": domain}
                if names.get(domain):
                    attrs["name"] = names[domain]
                SubElement(q, f"{{{ITEMS}}}item", attrs)
        return iq_result(ev.stanza, q)
