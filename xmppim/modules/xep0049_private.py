"""XEP-0049 Private XML Storage: a user keeps arbitrary namespaced XML on the server, for their eyes only.

Done (XEP-0049 1.2):

* set: every child of ``<query xmlns='jabber:iq:private'/>`` is stored under its namespace; several
  children in one namespace are kept together (§2), and a set replaces what that namespace held.
* get: exactly one child names the namespace; the stored fragment comes back, or the empty element the
  client sent when nothing is stored.
* only the account's own resources, with no 'to' or 'to' = their bare JID; anything else → ``forbidden``
  (§3: "MUST NOT allow any entity other than an authorized resource of the user").
* no child → ``not-acceptable`` (§2: "MUST respond with a Not Acceptable error"); more than one namespace
  in a get → ``bad-request`` ("MUST NOT query for more than one namespace").
* reserved namespaces (§3: ``jabber:*``, ``http://jabber.org/*``, ``vcard-temp``) → ``not-acceptable``;
  refusing ``vcard-temp`` also keeps private storage from overwriting the XEP-0054 vCard in the same table.
* limits: ``max_bytes`` per namespace and ``max_namespaces`` per account (``not-acceptable`` / a
  ``resource-constraint``), so one account cannot fill the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, fromstring

from ..plugins.api import Plugin, StanzaEvent, Xep, error_reply, iq_result
from ..storage.repositories.private import SQLPrivateStore
from ..xml.serialize import serialize

NS = "jabber:iq:private"
QUERY = f"{{{NS}}}query"
WRAP = "{urn:xmppim:private}fragment"
"""Stored fragments are one or more sibling elements, kept inside this wrapper element."""


@dataclass
class PrivateConfig:
    max_bytes: int = 65536
    """Largest fragment stored for one namespace, in bytes of XML."""
    max_namespaces: int = 64
    """How many namespaces one account may keep."""


def namespace_of(el: Element) -> str:
    return el.tag[1 : el.tag.index("}")] if el.tag.startswith("{") else ""


def reserved(namespace: str) -> bool:
    """XEP-0049 §3: namespaces beginning with 'jabber:' or 'http://jabber.org/', and 'vcard-temp'."""
    return namespace in ("", "vcard-temp") or namespace.startswith(("jabber:", "http://jabber.org/"))


class PrivateModule(Plugin):
    name = "private"
    builtin = True
    xeps = (Xep(49, "1.2"),)
    Config = PrivateConfig
    description = "XEP-0049 private XML storage"

    async def start(self) -> None:
        cfg: PrivateConfig = self.ctx.config
        self.max_bytes = cfg.max_bytes
        self.max_namespaces = cfg.max_namespaces
        self.store = SQLPrivateStore(self.ctx.db)
        self.ctx.add_feature(NS)
        self.ctx.iq_handler("get", NS, self.on_get)
        self.ctx.iq_handler("set", NS, self.on_set)
        self.ctx.hook("user/deleted", self.on_user_deleted)

    def _check(self, ev: StanzaEvent) -> Element | list[Element]:
        """The query's children, or the error to answer with."""
        if ev.origin.kind != "c2s" or ev.bare_to != ev.origin.bare_jid:
            return error_reply(ev.stanza, "forbidden", "Private XML belongs to its owner only")
        q = ev.stanza[0]
        if q.tag != QUERY:
            return error_reply(ev.stanza, "bad-request", "Expected <query xmlns='jabber:iq:private'/>")
        children = list(q)
        if not children:
            return error_reply(ev.stanza, "not-acceptable", "Name a namespace with a child element")
        for child in children:
            namespace = namespace_of(child)
            if reserved(namespace):
                return error_reply(ev.stanza, "not-acceptable", f"Namespace {namespace!r} is reserved")
        return children

    def on_get(self, ev: StanzaEvent) -> Any:
        children = self._check(ev)
        if isinstance(children, Element):
            return children
        if len(children) != 1:
            return error_reply(ev.stanza, "bad-request", "Ask for one namespace at a time")
        return self._get(ev, children[0])

    async def _get(self, ev: StanzaEvent, asked: Element) -> Element:
        xml = await self.store.get(ev.bare_to, namespace_of(asked))
        q = Element(QUERY)
        if xml is None:
            q.append(Element(asked.tag))
        else:
            q.extend(list(fromstring(xml)))
        return iq_result(ev.stanza, q)

    def on_set(self, ev: StanzaEvent) -> Any:
        children = self._check(ev)
        if isinstance(children, Element):
            return children
        groups: dict[str, list[Element]] = {}
        for child in children:
            groups.setdefault(namespace_of(child), []).append(child)
        fragments: dict[str, str] = {}
        for namespace, elements in groups.items():
            wrap = Element(WRAP)
            wrap.extend(elements)
            try:
                data = serialize(wrap)
            except (ValueError, TypeError):
                return error_reply(ev.stanza, "bad-request", "The data cannot be stored as XML")
            if len(data) > self.max_bytes:
                return error_reply(
                    ev.stanza, "not-acceptable", f"At most {self.max_bytes} bytes may be stored per namespace"
                )
            fragments[namespace] = data.decode()
        return self._set(ev, fragments)

    async def _set(self, ev: StanzaEvent, fragments: dict[str, str]) -> Element:
        owner = ev.bare_to
        new = [n for n in fragments if not await self.store.has(owner, n)]
        if new and await self.store.count(owner) + len(new) > self.max_namespaces:
            return error_reply(
                ev.stanza, "resource-constraint", f"At most {self.max_namespaces} namespaces may be stored"
            )
        for namespace, xml in fragments.items():
            await self.store.put(owner, namespace, xml)
        return iq_result(ev.stanza)

    async def on_user_deleted(self, bare: str) -> None:
        await self.store.delete_owner(bare)
