"""XEP-0077 In-Band Registration: sign-up (when ``[registration] allow``), password change, account removal.

Sign-up happens before authentication and only on an encrypted stream when encryption is required.
Password change and removal are always available to the logged-in user for their own account.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element, SubElement

from .. import jid as jidlib
from ..plugins.api import Plugin, StanzaEvent, Xep, error_reply, iq_result
from ..storage.repositories.accounts import AccountExists

NS = "jabber:iq:register"
FEATURE = "http://jabber.org/features/iq-register"
Q = f"{{{NS}}}query"


class RegisterModule(Plugin):
    name = "register"
    builtin = True
    xeps = (Xep(77, "2.4"),)

    async def start(self) -> None:
        self.allow = self.ctx.server_config.registration.allow
        if self.allow:
            self.ctx.stream_feature("unauthenticated", lambda _conn: Element(f"{{{FEATURE}}}register"))
        self.ctx.hook("c2s/unauthenticated-register", self.unauthenticated)
        self.ctx.iq_handler("get", NS, self.get_registered)
        self.ctx.iq_handler("set", NS, self.change)

    # ------------------------------------------------------- before login
    def unauthenticated(self, payload: tuple[Any, Element]) -> Any:
        conn, iq = payload
        if not self.allow:
            conn.send(error_reply(iq, "service-unavailable", "In-band registration is disabled"))
            return True
        if conn.server.config.c2s.require_encryption and not conn.secure:
            conn.send(error_reply(iq, "not-allowed", "Start TLS first"))
            return True
        if iq.get("type") == "get":
            q = Element(Q)
            SubElement(q, f"{{{NS}}}instructions").text = "Choose a username and password."
            SubElement(q, f"{{{NS}}}username")
            SubElement(q, f"{{{NS}}}password")
            conn.send(iq_result(iq, q))
            return True
        if iq.get("type") != "set":
            conn.send(error_reply(iq, "bad-request"))
            return True
        return self._signup(conn, iq)

    async def _signup(self, conn: Any, iq: Element) -> None:
        q = iq[0]
        if q.find(f"{{{NS}}}remove") is not None:
            conn.send(error_reply(iq, "not-authorized"))
            return
        username = (q.findtext(f"{{{NS}}}username") or "").strip()
        password = q.findtext(f"{{{NS}}}password") or ""
        if not username or not password:
            conn.send(error_reply(iq, "not-acceptable", "Username and password are required"))
            return
        try:
            node, _d, _r = jidlib.split(f"{username}@{conn.domain}")
        except jidlib.InvalidJID:
            conn.send(error_reply(iq, "jid-malformed", "Not a valid username"))
            return
        try:
            await self.ctx.accounts.create(node, conn.domain, password)
        except AccountExists:
            conn.send(error_reply(iq, "conflict", "That username is taken"))
            return
        conn.send(iq_result(iq))
        for aw in self.ctx.notify("user/created", f"{node}@{conn.domain}"):
            await aw

    # -------------------------------------------------------- logged in
    def get_registered(self, ev: StanzaEvent) -> Any:
        if ev.node and ev.bare_to != getattr(ev.origin, "bare_jid", ""):
            return error_reply(ev.stanza, "forbidden")
        q = Element(Q)
        SubElement(q, f"{{{NS}}}registered")
        SubElement(q, f"{{{NS}}}username").text = ev.origin.username
        return iq_result(ev.stanza, q)

    def change(self, ev: StanzaEvent) -> Any:
        if ev.origin.kind != "c2s" or (ev.node and ev.bare_to != ev.origin.bare_jid):
            return error_reply(ev.stanza, "forbidden")
        return self._change(ev)

    async def _change(self, ev: StanzaEvent) -> Any:
        s = ev.origin
        q = ev.stanza[0]
        accounts = self.ctx.accounts
        if q.find(f"{{{NS}}}remove") is not None:
            await accounts.delete(s.username, s.domain)
            self.ctx.send(iq_result(ev.stanza))
            for aw in self.ctx.notify("user/deleted", s.bare_jid):
                await aw
            for other in self.ctx.sessions.resources(s.bare_jid):
                other.close("not-authorized", "The account was removed")
            return True
        username = (q.findtext(f"{{{NS}}}username") or "").strip()
        password = q.findtext(f"{{{NS}}}password") or ""
        if not password or (username and username.lower() != s.username):
            return error_reply(ev.stanza, "bad-request", "Give your own username and the new password")
        await accounts.set_password(s.username, s.domain, password)
        return iq_result(ev.stanza)
