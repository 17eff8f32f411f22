"""XEP-0054 vcard-temp: users store their own vCard on the server, and anyone may read it.

Done (XEP-0054 1.3.0):

* §3.1 get own vCard (no 'to', or to one's own bare JID); none stored → an empty ``<vCard/>``.
* §3.2 set own vCard (the whole vCard replaces the old one; an empty one deletes it). A set addressed to
  anyone else → ``forbidden``; a vCard larger than ``max_bytes`` (serialized) → ``not-acceptable``, so that
  one account cannot fill the database.
* §3.3 get another user's vCard from their bare JID, answered by the server (never forwarded). No vCard
  and no such user give the *same* error, ``service-unavailable`` (§3.3: no directory harvesting).
* disco#info feature ``vcard-temp`` on the server (§4).

Not done: XEP-0153 avatar hashes in presence, and vCards of the server itself (``service-unavailable``).
vCards live in the private-XML table under namespace ``vcard-temp`` (XEP-0049 reserves it, so private
storage cannot overwrite them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, fromstring

from ..plugins.api import Plugin, StanzaEvent, Xep, error_reply, iq_result
from ..storage.repositories.private import SQLPrivateStore
from ..xml.serialize import serialize

NS = "vcard-temp"
VCARD = f"{{{NS}}}vCard"


@dataclass
class VCardConfig:
    max_bytes: int = 65536
    """Largest vCard accepted, in bytes of its XML (photos are base64 inside, so keep room for one)."""


class VCardModule(Plugin):
    name = "vcard"
    builtin = True
    xeps = (Xep(54, "1.3.0"),)
    Config = VCardConfig
    description = "XEP-0054 vcard-temp storage"

    async def start(self) -> None:
        cfg: VCardConfig = self.ctx.config
        self.max_bytes = cfg.max_bytes
        self.store = SQLPrivateStore(self.ctx.db)
        self.ctx.add_feature(NS)
        self.ctx.iq_handler("get", NS, self.on_get)
        self.ctx.iq_handler("set", NS, self.on_set)
        self.ctx.hook("user/deleted", self.on_user_deleted)

    def _own(self, ev: StanzaEvent) -> bool:
        return ev.origin.kind == "c2s" and ev.bare_to == str(ev.origin.bare_jid)

    def on_get(self, ev: StanzaEvent) -> Any:
        if ev.stanza[0].tag != VCARD:
            return error_reply(ev.stanza, "bad-request", "Expected <vCard xmlns='vcard-temp'/>")
        if not ev.node:
            return error_reply(ev.stanza, "service-unavailable")  # the server has no vCard
        return self._get(ev, self._own(ev))

    async def _get(self, ev: StanzaEvent, own: bool) -> Element:
        xml = await self.store.get(ev.bare_to, NS)
        if xml is None:
            if own:
                return iq_result(ev.stanza, Element(VCARD))
            return error_reply(ev.stanza, "service-unavailable")
        return iq_result(ev.stanza, fromstring(xml))

    def on_set(self, ev: StanzaEvent) -> Any:
        if not self._own(ev):
            return error_reply(ev.stanza, "forbidden", "You may only change your own vCard")
        vcard = ev.stanza[0]
        if vcard.tag != VCARD:
            return error_reply(ev.stanza, "bad-request", "Expected <vCard xmlns='vcard-temp'/>")
        try:
            data = serialize(vcard)
        except (ValueError, TypeError):
            return error_reply(ev.stanza, "bad-request", "The vCard cannot be stored as XML")
        if len(data) > self.max_bytes:
            return error_reply(ev.stanza, "not-acceptable", f"A vCard may be at most {self.max_bytes} bytes")
        return self._set(ev, data.decode(), empty=len(vcard) == 0 and not (vcard.text or "").strip())

    async def _set(self, ev: StanzaEvent, xml: str, empty: bool) -> Element:
        if empty:
            await self.store.delete(ev.bare_to, NS)
        else:
            await self.store.put(ev.bare_to, NS, xml)
        return iq_result(ev.stanza)

    async def on_user_deleted(self, bare: str) -> None:
        await self.store.delete(bare, NS)
