"""XEP-0115 Entity Capabilities of the server, offered as a stream feature after authentication (§6.3).

A client that sees ``<c hash='sha-1' node=... ver=.../>`` among the stream features can skip a disco#info
query to the server whenever it has that ``ver`` cached. ``ver`` is the §5.1 verification string over what
disco#info on the server's JID answers right now: identities, features and XEP-0128 extension forms from
the item registries (the same ones the disco module answers from), so it changes whenever a plugin is
loaded or unloaded. disco#info on ``node#ver`` (§6.2: a client verifying the hash asks exactly that) is
answered here with the same identities, features and forms and the ``node`` attribute echoed.

Not done: caching *clients'* capabilities (what a PEP service needs for ``+notify``); that belongs to PEP.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from ..plugins.api import Plugin, StanzaEvent, Xep, iq_result

NS = "http://jabber.org/protocol/caps"
INFO = "http://jabber.org/protocol/disco#info"
XDATA = "jabber:x:data"


@dataclass
class CapsConfig:
    node: str = "https://xmppim.example/caps"
    """The ``node`` URI naming this software (§4: identifies the software, not the deployment)."""


def verification_string(
    identities: Iterable[tuple[str, str, str, str]], features: Iterable[str], forms: Iterable[Element]
) -> str:
    """XEP-0115 §5.1: the string to hash. Identities are (category, type, xml:lang, name)."""
    s: list[str] = []
    for cat, typ, lang, name in sorted(identities):
        s.append(f"{cat}/{typ}/{lang}/{name}<")
    for f in sorted(features):
        s.append(f"{f}<")
    typed: list[tuple[str, list[tuple[str, list[str]]]]] = []
    for form in forms:
        fields: list[tuple[str, list[str]]] = []
        form_type = None
        for field in form.iter(f"{{{XDATA}}}field"):
            var = field.get("var", "")
            values = [v.text or "" for v in field.iter(f"{{{XDATA}}}value")]
            if var == "FORM_TYPE":
                form_type = values[0] if values else ""
            else:
                fields.append((var, sorted(values)))
        if form_type is not None:  # §5.4 3.6: forms without FORM_TYPE are ignored
            typed.append((form_type, sorted(fields)))
    for form_type, fields in sorted(typed):
        s.append(f"{form_type}<")
        for var, values in fields:
            s.append(f"{var}<")
            s.extend(f"{v}<" for v in values)
    return "".join(s)


def ver_hash(verification: str) -> str:
    """§5.1 steps 8-9: SHA-1 over the UTF-8 string, Base64-encoded."""
    return base64.b64encode(hashlib.sha1(verification.encode("utf-8")).digest()).decode()


class CapsModule(Plugin):
    name = "caps"
    builtin = True
    dependencies = ("disco",)
    xeps = (Xep(115, "1.6.0", "partial"),)
    Config = CapsConfig
    description = "XEP-0115 entity capabilities of the server"

    async def start(self) -> None:
        cfg: CapsConfig = self.ctx.config
        self.node = cfg.node
        self._cache: tuple[Any, str] | None = None
        self.ctx.stream_feature("bound", self.feature)
        self.ctx.iq_handler("get", INFO, self.on_info)

    def info(self) -> tuple[list[tuple[str, str, str]], list[str], list[Element]]:
        """What disco#info on the server answers: identities, features, extension forms."""
        identities, features = self.ctx.service("disco").server_info()
        forms = [make() for make in self.ctx.registry("disco/extension")]
        return list(identities), list(features), forms

    def ver(self) -> str:
        identities, features, forms = self.info()
        key = (tuple(identities), tuple(features), tuple(_form_key(f) for f in forms))
        if self._cache is None or self._cache[0] != key:
            ids = [(c, t, "", n) for c, t, n in identities]
            self._cache = (key, ver_hash(verification_string(ids, features, forms)))
        return self._cache[1]

    def feature(self, _conn: Any) -> Element:
        return Element(f"{{{NS}}}c", {"hash": "sha-1", "node": self.node, "ver": self.ver()})

    def on_info(self, ev: StanzaEvent) -> Any:
        """§6.2: disco#info on ``node#ver`` is the server's own disco#info."""
        node = ev.stanza[0].get("node")
        if ev.node or not node or node != f"{self.node}#{self.ver()}":
            return None
        identities, features, forms = self.info()
        q = Element(f"{{{INFO}}}query", {"node": node})
        for cat, typ, name in identities:
            attrs = {"category": cat, "type": typ}
            if name:
                attrs["name"] = name
            SubElement(q, f"{{{INFO}}}identity", attrs)
        for f in features:
            SubElement(q, f"{{{INFO}}}feature", {"var": f})
        q.extend(forms)
        return iq_result(ev.stanza, q)


def _form_key(form: Element) -> tuple[tuple[str, tuple[str, ...]], ...]:
    return tuple(
        (f.get("var", ""), tuple(v.text or "" for v in f.iter(f"{{{XDATA}}}value")))
        for f in form.iter(f"{{{XDATA}}}field")
    )
