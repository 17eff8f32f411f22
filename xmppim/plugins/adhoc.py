"""XEP-0050 ad-hoc commands: a registry that answers disco and runs multi-step commands.

The same :class:`CommandRegistry` serves the server's JID (as a built-in module) and every plugin
component, in-process or external, so a command behaves identically wherever it runs. A command session
belongs to the full JID that started it: a ``next``/``complete``/``cancel`` from anyone else is refused
with ``forbidden`` (slixmpp's own XEP-0050 plugin does not check this; we must, or one user could complete
another's *Send coins*).

Added in 0.1.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from ..stanza import error_reply, iq_result
from .forms import Form, X, parse_submission

NS = "http://jabber.org/protocol/commands"
DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
SESSION_TTL = 600.0


@dataclass
class CommandRequest:
    """One step of a command as the handler sees it."""

    requester: str
    """Full JID of the user running the command."""
    action: str
    """'execute', 'next', 'prev' or 'complete' (cancel never reaches the handler)."""
    values: dict[str, list[str]]
    """The submitted form's values (empty on the first step)."""
    state: dict[str, Any]
    """Kept between the steps of one session; the handler may store anything here."""
    stage: int
    """How many steps have run before this one (0 on execute)."""

    def value(self, var: str, default: str = "") -> str:
        v = self.values.get(var)
        return v[0] if v else default


@dataclass
class CommandResponse:
    status: str = "completed"
    """'executing' (more steps follow) or 'completed'."""
    form: Form | None = None
    note: str = ""
    note_type: str = "info"
    """'info', 'warn' or 'error' (XEP-0050 §4.6)."""
    actions: list[str] = field(default_factory=lambda: ["complete"])
    """Actions offered while executing: any of 'prev', 'next', 'complete'."""


class CommandError(Exception):
    """Raise in a handler to answer the step with a stanza error (e.g. 'bad-request', 'forbidden')."""

    def __init__(self, condition: str, text: str = "") -> None:
        super().__init__(text or condition)
        self.condition = condition
        self.text = text


CommandHandler = Callable[[CommandRequest], Awaitable[CommandResponse]]
Allowed = Callable[[str], bool]


@dataclass
class Command:
    node: str
    name: str
    handler: CommandHandler
    allowed: Allowed | None = None
    """Given the requester's bare JID, whether they may see and run it (e.g. admins only)."""


@dataclass
class _Session:
    owner: str
    command: Command
    state: dict[str, Any]
    stage: int
    expires: float


class CommandRegistry:
    def __init__(self, jid: str) -> None:
        self.jid = jid
        self.commands: dict[str, Command] = {}
        self._sessions: dict[str, _Session] = {}

    def add(self, cmd: Command) -> Callable[[], None]:
        self.commands[cmd.node] = cmd

        def remove() -> None:
            if self.commands.get(cmd.node) is cmd:
                del self.commands[cmd.node]

        return remove

    def visible(self, requester_bare: str) -> list[Command]:
        return [c for c in self.commands.values() if c.allowed is None or c.allowed(requester_bare)]

    def disco_items(self, iq: Element) -> Element:
        q = Element(f"{{{DISCO_ITEMS}}}query", {"node": NS})
        requester = iq.get("from", "").split("/", 1)[0]
        for c in self.visible(requester):
            jid = iq.get("to") or self.jid
            SubElement(q, f"{{{DISCO_ITEMS}}}item", {"jid": jid, "node": c.node, "name": c.name})
        return iq_result(iq, q)

    def disco_info(self, iq: Element, node: str) -> Element | None:
        """disco#info for one command node (XEP-0050 §2.3), or None when there is no such node."""
        cmd = self.commands.get(node)
        if cmd is None:
            return None
        q = Element(f"{{{DISCO_INFO}}}query", {"node": node})
        SubElement(q, f"{{{DISCO_INFO}}}identity", {"category": "automation", "type": "command-node", "name": cmd.name})
        SubElement(q, f"{{{DISCO_INFO}}}feature", {"var": NS})
        SubElement(q, f"{{{DISCO_INFO}}}feature", {"var": "jabber:x:data"})
        return iq_result(iq, q)

    async def execute(self, iq: Element) -> Element:
        """Answer one ``<command/>`` IQ set; always returns the reply stanza."""
        now = time.monotonic()
        for old in [k for k, v in self._sessions.items() if v.expires < now]:
            del self._sessions[old]
        cmd_el = iq[0]
        node = cmd_el.get("node", "")
        action = cmd_el.get("action", "execute")
        sid = cmd_el.get("sessionid", "")
        requester = iq.get("from", "")
        bare = requester.split("/", 1)[0]
        if action not in ("execute", "next", "prev", "complete", "cancel"):
            return error_reply(iq, "bad-request", app_condition=Element(f"{{{NS}}}malformed-action"))
        if sid:
            sess = self._sessions.get(sid)
            if sess is None or sess.command.node != node:
                return error_reply(iq, "not-allowed", app_condition=Element(f"{{{NS}}}session-expired"))
            if sess.owner != requester:
                return error_reply(iq, "forbidden", "This command session belongs to someone else")
            if action == "execute":
                action = "next"
        else:
            command = self.commands.get(node)
            if command is None:
                return error_reply(iq, "item-not-found")
            if command.allowed is not None and not command.allowed(bare):
                return error_reply(iq, "forbidden")
            if action == "cancel":
                return error_reply(iq, "bad-request", app_condition=Element(f"{{{NS}}}bad-sessionid"))
            sid = secrets.token_hex(8)
            sess = _Session(requester, command, {}, 0, now + SESSION_TTL)
            self._sessions[sid] = sess
            action = "execute"
        if action == "cancel":
            del self._sessions[sid]
            return self._reply(iq, node, sid, CommandResponse(status="canceled"))
        values = parse_submission(cmd_el.find(X))
        x = cmd_el.find(X)
        if x is not None and x.get("type") == "cancel":
            del self._sessions[sid]
            return self._reply(iq, node, sid, CommandResponse(status="canceled"))
        req = CommandRequest(requester, action, values, sess.state, sess.stage)
        try:
            resp = await sess.command.handler(req)
        except CommandError as e:
            return error_reply(iq, e.condition, e.text or None)
        sess.stage += 1
        sess.expires = now + SESSION_TTL
        if resp.status != "executing":
            self._sessions.pop(sid, None)
        return self._reply(iq, node, sid, resp)

    def _reply(self, iq: Element, node: str, sid: str, resp: CommandResponse) -> Element:
        c = Element(f"{{{NS}}}command", {"node": node, "sessionid": sid, "status": resp.status})
        if resp.status == "executing":
            acts = SubElement(c, f"{{{NS}}}actions", {"execute": resp.actions[-1]})
            for a in resp.actions:
                SubElement(acts, f"{{{NS}}}{a}")
        if resp.note:
            SubElement(c, f"{{{NS}}}note", {"type": resp.note_type}).text = resp.note
        if resp.form is not None:
            c.append(resp.form.to_element())
        return iq_result(iq, c)
