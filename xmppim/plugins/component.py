"""A service component (e.g. ``wallet.localhost``) that runs the same in-process or external.

In-process, the router hands it every stanza addressed to its domain or to any ``node@domain`` and it
sends through the router; external, a slixmpp ``ComponentXMPP`` connection (XEP-0114) does both. The
component answers disco#info/#items itself and runs its XEP-0050 commands, so a plugin's service
behaves identically attached to xmppim, Prosody or ejabberd.

Added in 0.1.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from ..stanza import IQ, MESSAGE, PRESENCE, error_reply, iq_result, payload_ns
from .adhoc import DISCO_INFO, DISCO_ITEMS, Command, CommandRegistry
from .adhoc import NS as COMMANDS_NS

log = logging.getLogger("xmppim.component")

StanzaHandler = Callable[[Element], Awaitable[None] | None]
ChatHandler = Callable[[str, str, Element], Awaitable[str]]
"""``(sender's bare JID, the message body, the message) -> the answer's text``."""
IQHandler = Callable[[Element], Awaitable[Element | None]]
Sender = Callable[[Element], None]


class Component:
    def __init__(
        self,
        domain: str,
        name: str,
        send: Sender,
        *,
        category: str = "component",
        type_: str = "generic",
    ) -> None:
        self.domain = domain
        self.name = name
        self._send = send
        self.identity = (category, type_, name)
        self.features: set[str] = {DISCO_INFO, DISCO_ITEMS, COMMANDS_NS, "jabber:x:data"}
        self.commands = CommandRegistry(domain)
        self.on_message: StanzaHandler | None = None
        self.on_presence: StanzaHandler | None = None
        self.iq_handlers: dict[tuple[str, str], IQHandler] = {}
        self._pending: dict[str, asyncio.Future[Element]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------ registration
    def command(self, node: str, name: str, handler: Any, allowed: Any = None) -> Callable[[], None]:
        return self.commands.add(Command(node, name, handler, allowed))

    def chat(self, answer: ChatHandler) -> None:
        """Be a chat bot: every chat/normal message with a body is answered with ``await answer(...)``,
        from the address the user wrote to (``domain`` or ``node@domain``). Errors, headlines, groupchat
        and empty bodies get no answer (RFC 6120 §8.3.1: never answer an error with an error)."""

        async def on_message(msg: Element) -> None:
            from .. import jid as jidlib

            body = (msg.findtext("{jabber:client}body") or "").strip()
            if not body or msg.get("type") in ("error", "groupchat", "headline"):
                return
            sender = msg.get("from", "")
            try:
                bare = jidlib.bare(sender)
            except jidlib.InvalidJID:
                return
            self.message(sender, await answer(bare, body, msg), from_=msg.get("to") or self.domain)

        self.on_message = on_message

    def iq(self, type_: str, namespace: str, handler: IQHandler) -> None:
        self.iq_handlers[(type_, namespace)] = handler
        self.features.add(namespace)

    # --------------------------------------------------------------- output
    def send(self, stanza: Element) -> None:
        if not stanza.get("from"):
            stanza.set("from", self.domain)
        self._send(stanza)

    def message(self, to: str, body: str, type_: str = "chat", from_: str | None = None) -> Element:
        m = Element(MESSAGE, {"to": to, "type": type_, "from": from_ or self.domain})
        SubElement(m, "{jabber:client}body").text = body
        self.send(m)
        return m

    async def send_iq(self, iq: Element, timeout: float = 30.0) -> Element:
        iq.set("id", iq.get("id") or f"c{next(self._ids)}")
        fut: asyncio.Future[Element] = asyncio.get_running_loop().create_future()
        self._pending[iq.get("id", "")] = fut
        self.send(iq)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(iq.get("id", ""), None)

    # ---------------------------------------------------------------- input
    def deliver(self, stanza: Element) -> None:
        """Entry point for every stanza to this domain (or a JID on it)."""
        try:
            r = self._handle(stanza)
        except Exception:
            log.exception("component %s failed on a stanza", self.domain)
            self._error(stanza, "internal-server-error")
            return
        if r is not None:
            task = asyncio.get_running_loop().create_task(self._guard(stanza, r))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _guard(self, stanza: Element, aw: Awaitable[Any]) -> None:
        try:
            reply = await aw
        except Exception:
            log.exception("component %s failed on a stanza", self.domain)
            self._error(stanza, "internal-server-error")
            return
        if isinstance(reply, Element):
            self.send(reply)

    def _error(self, stanza: Element, condition: str, text: str | None = None) -> None:
        if stanza.get("type") not in ("error", "result"):
            self.send(error_reply(stanza, condition, text))

    def _handle(self, stanza: Element) -> Awaitable[Any] | None:
        tag = stanza.tag
        if tag == IQ:
            return self._iq(stanza)
        if tag == MESSAGE:
            if stanza.get("type") == "error" or self.on_message is None:
                return None
            return self.on_message(stanza)
        if tag == PRESENCE and self.on_presence is not None:
            return self.on_presence(stanza)
        return None

    def _iq(self, iq: Element) -> Awaitable[Any] | None:
        t = iq.get("type")
        if t in ("result", "error"):
            fut = self._pending.pop(iq.get("id", ""), None)
            if fut is not None and not fut.done():
                fut.set_result(iq)
            return None
        if t not in ("get", "set") or len(iq) != 1:
            self._error(iq, "bad-request")
            return None
        namespace = payload_ns(iq)
        child = iq[0]
        if t == "get" and namespace == DISCO_INFO:
            self.send(self._disco_info(iq, child.get("node", "")))
            return None
        if t == "get" and namespace == DISCO_ITEMS:
            node = child.get("node", "")
            if node == COMMANDS_NS:
                self.send(self.commands.disco_items(iq))
            elif node:
                self._error(iq, "item-not-found")
            else:
                self.send(iq_result(iq, Element(f"{{{DISCO_ITEMS}}}query")))
            return None
        if t == "set" and namespace == COMMANDS_NS:
            return self.commands.execute(iq)
        handler = self.iq_handlers.get((t, namespace))
        if handler is None:
            self._error(iq, "service-unavailable")
            return None
        return handler(iq)

    def _disco_info(self, iq: Element, node: str) -> Element:
        if node:
            return self.commands.disco_info(iq, node) or error_reply(iq, "item-not-found")
        q = Element(f"{{{DISCO_INFO}}}query")
        cat, typ, name = self.identity
        SubElement(q, f"{{{DISCO_INFO}}}identity", {"category": cat, "type": typ, "name": name})
        for f in sorted(self.features):
            SubElement(q, f"{{{DISCO_INFO}}}feature", {"var": f})
        return iq_result(iq, q)
