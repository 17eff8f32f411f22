"""The wallet as an xmppim plugin: a component at ``wallet.<domain>`` any standard client can use.

Three XMPP interfaces over one :class:`~plugins.wallet.ledger.Ledger` (design note
``value-added-services.md``):

* **Chat** (a contract): send ``balance``, ``send bob@localhost 25 for lunch``, ``history`` or ``help`` to
  ``wallet.<domain>`` — or to ``bot@wallet.<domain>``, which every client shows as a normal contact
  (Converse.js files bare-domain senders under read-only headlines). The answer to ``balance`` contains the
  balance as a plain integer. A chat message's ``id`` is the idempotency key of a ``send``, so a client
  that retransmits the same message never pays twice. The recipient of a payment gets a message from the
  wallet (type ``chat``, so it is stored offline like any chat message).
* **Ad-hoc commands** (XEP-0050 + XEP-0004): *Balance*, *Send coins* (recipient, amount, memo, then a
  confirmation step), *History* (paged with ``next``), *Admin: mint/adjust* (admins only). A command
  session belongs to the full JID that started it (``xmppim.plugins.adhoc``).
* **IQ protocol** ``urn:xmppim:wallet:0`` for programs: ``<balance/>`` (get), ``<transfer to= amount= id=
  memo=/>`` (set; ``id`` is the idempotency key), ``<history/>`` with XEP-0059 paging (get). Errors are
  stanza errors carrying an application condition in the same namespace: ``insufficient-funds``,
  ``limit-exceeded``, ``unknown-recipient``, ``duplicate``, ``frozen``, ``bad-amount``,
  ``invalid-request``.

Other plugins use the ledger directly: ``ctx.service("wallet")`` is the :class:`Ledger` (``transfer``,
``charge``, ``hold``, ``post``, ``void``, ``balance``). The top-up webhook is mounted at
``POST /plugins/wallet/topup``. When a user is deleted their accounts are frozen, never destroyed.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from xmppim import jid as jidlib
from xmppim.plugins.api import (
    CommandError,
    CommandRequest,
    CommandResponse,
    Component,
    Field,
    Form,
    Plugin,
    error_reply,
    iq_result,
)

from .ledger import HistoryEntry, Ledger, WalletConfig, WalletError
from .tables import metadata as wallet_metadata
from .webhook import make_topup_handler

NS = "urn:xmppim:wallet:0"
RSM = "http://jabber.org/protocol/rsm"
BODY = "{jabber:client}body"
PAGE = 10

# Our application conditions → the RFC 6120 condition a generic client understands.
STANZA_CONDITION = {
    "insufficient-funds": "not-acceptable",
    "limit-exceeded": "policy-violation",
    "unknown-recipient": "item-not-found",
    "duplicate": "conflict",
    "frozen": "forbidden",
    "bad-amount": "bad-request",
    "invalid-request": "bad-request",
    "unknown-hold": "item-not-found",
    "hold-closed": "not-allowed",
}

HELP = """Wallet commands:
balance — your balance
send JID AMOUNT [memo] — pay someone, e.g. send bob@localhost 25 for lunch
history — your last transfers
help — this text"""


@dataclass
class WalletSettings:
    """``[plugins.wallet]`` — amounts are integers in minor units."""

    currency: str = "COIN"
    bonus_currency: str = "COIN_BONUS"
    transferable_currencies: list[str] = field(default_factory=lambda: ["COIN"])
    max_transfer: int = 1_000_000
    daily_send_limit: int = 5_000_000
    hold_timeout_s: float = 900.0
    admins: list[str] = field(default_factory=list)
    """Bare JIDs allowed to mint; the server's ``[server] admins`` may too."""
    webhook_secret: str = ""
    """HMAC-SHA256 secret shared with the payment provider; empty refuses every top-up."""
    webhook_tolerance_s: int = 300
    subdomain: str = "wallet"

    def ledger_config(self, server_admins: list[str]) -> WalletConfig:
        return WalletConfig(
            currency=self.currency,
            bonus_currency=self.bonus_currency,
            transferable_currencies=tuple(self.transferable_currencies),
            max_transfer=self.max_transfer,
            daily_send_limit=self.daily_send_limit,
            hold_timeout_s=self.hold_timeout_s,
            admins=tuple(self.admins) + tuple(server_admins),
            webhook_secret=self.webhook_secret,
            webhook_tolerance_s=self.webhook_tolerance_s,
        )


def wallet_error_reply(stanza: Element, e: WalletError) -> Element:
    cond = getattr(e, "condition", "invalid-request")
    return error_reply(
        stanza, STANZA_CONDITION.get(cond, "bad-request"), e.text or cond, app_condition=Element(f"{{{NS}}}{cond}")
    )


def parse_amount(text: str) -> int | None:
    text = text.strip()
    if not re.fullmatch(r"[0-9]{1,15}", text):
        return None
    return int(text)


def describe(h: HistoryEntry) -> str:
    sign = "+" if h.amount > 0 else ""
    memo = f" — {h.memo}" if h.memo else ""
    return f"#{h.seq} {h.created_at:%Y-%m-%d %H:%M} {sign}{h.amount} {h.currency} {h.kind} {h.counterparty}{memo}"


class WalletPlugin(Plugin):
    name = "wallet"
    version = "0.1.0"
    description = "A virtual currency on a double-entry ledger"
    Config = WalletSettings
    metadata = wallet_metadata
    migrations = str(Path(__file__).parent / "migrations" / "versions")

    async def start(self) -> None:
        cfg: WalletSettings = self.ctx.config
        server_cfg = getattr(self.ctx, "server_config", None)
        admins = list(server_cfg.server.admins) if server_cfg is not None else []
        self.ledger = Ledger(
            self.ctx.db,
            cfg.ledger_config(admins),
            user_exists=self.ctx.user_exists,
            data_dir=self.ctx.data_dir,
        )
        await self.ledger.init()
        self.admins = set(cfg.admins) | set(admins)
        comp: Component = self.ctx.add_component(cfg.subdomain, "Wallet", category="automation", type_="wallet")
        self.comp = comp
        comp.chat(lambda bare, body, msg: self.chat_command(bare, body, msg.get("id")))
        comp.iq("get", NS, self.on_iq_get)
        comp.iq("set", NS, self.on_iq_set)
        comp.command("balance", "Balance", self.cmd_balance)
        comp.command("send", "Send coins", self.cmd_send)
        comp.command("history", "History", self.cmd_history)
        comp.command("admin-mint", "Admin: mint/adjust", self.cmd_mint, allowed=self.is_admin)
        self.ctx.provide("wallet", self.ledger)
        self.ctx.http_route(
            "POST", "topup", make_topup_handler(self.ledger, cfg.webhook_secret, cfg.webhook_tolerance_s)
        )
        self.ctx.hook("user/deleted", self.on_user_deleted)
        self.ctx.add_timer(max(1.0, min(30.0, cfg.hold_timeout_s / 4)), self.ledger.expire_holds)

    def is_admin(self, bare: str) -> bool:
        return bare in self.admins or self.ctx.is_admin(bare)

    async def on_user_deleted(self, bare: str) -> None:
        await self.ledger.freeze_user(bare)

    # ------------------------------------------------------------- chat
    async def chat_command(self, bare: str, text: str, msg_id: str | None) -> str:
        words = text.split()
        cmd = words[0].lower()
        try:
            if cmd == "balance":
                return f"Your balance: {await self.ledger.balance(bare)} {self.ledger.config.currency}"
            if cmd == "history":
                rows = await self.ledger.history(bare, limit=1000)
                if not rows:
                    return "No transfers yet."
                return "\n".join(describe(h) for h in rows[-PAGE:])
            if cmd == "send":
                if len(words) < 3:
                    return "Usage: send JID AMOUNT [memo]"
                amount = parse_amount(words[2])
                if amount is None:
                    return "The amount must be a whole number, e.g. send bob@localhost 25"
                memo = " ".join(words[3:])
                to = self._recipient(words[1])
                key = f"chat:{msg_id}" if msg_id else None
                t = await self.ledger.transfer(bare, to, amount, memo=memo, idem_key=key)
                if not t.replayed:
                    self.notify_recipient(bare, to, amount, memo)
                balance = await self.ledger.balance(bare)
                return f"Sent {amount} {t.currency} to {to} (transfer #{t.seq}). Your balance: {balance}"
            if cmd in ("help", "?"):
                return HELP
        except WalletError as e:
            return f"Sorry: {e.condition}: {e.text or e.condition}"
        except jidlib.InvalidJID:
            return "That is not a valid address."
        return f"Unknown command {cmd!r}.\n{HELP}"

    def _recipient(self, text: str) -> str:
        return jidlib.bare(text)

    def notify_recipient(self, sender: str, to: str, amount: int, memo: str) -> None:
        note = f" — {memo}" if memo else ""
        self.comp.message(to, f"You received {amount} {self.ledger.config.currency} from {sender}{note}")

    # --------------------------------------------------------- ad-hoc
    async def cmd_balance(self, req: CommandRequest) -> CommandResponse:
        bare = req.requester.split("/")[0]
        bal = await self.ledger.balance(bare)
        form = Form("Balance", type="result", fields=[Field("balance", "text-single", "Balance", str(bal))])
        return CommandResponse(form=form, note=f"Your balance: {bal} {self.ledger.config.currency}")

    async def cmd_send(self, req: CommandRequest) -> CommandResponse:
        bare = req.requester.split("/")[0]
        if req.stage == 0:
            req.state["key"] = "adhoc:" + secrets.token_hex(8)
            form = Form(
                "Send coins",
                "Who gets how many coins?",
                [
                    Field("recipient", "jid-single", "Recipient", required=True),
                    Field("amount", "text-single", "Amount", required=True),
                    Field("memo", "text-single", "Memo"),
                ],
            )
            return CommandResponse("executing", form, actions=["next"])
        if req.stage == 1:
            amount = parse_amount(req.value("amount"))
            if amount is None or amount <= 0:
                raise CommandError("bad-request", "The amount must be a positive whole number")
            try:
                to = self._recipient(req.value("recipient"))
            except jidlib.InvalidJID:
                raise CommandError("jid-malformed", "Not a valid recipient") from None
            req.state.update(to=to, amount=amount, memo=req.value("memo"))
            form = Form(
                "Confirm",
                f"Send {amount} {self.ledger.config.currency} to {to}?",
                [Field("confirm", "boolean", "Yes, send it", "1")],
            )
            return CommandResponse("executing", form, actions=["complete"])
        if req.value("confirm", "1") not in ("1", "true"):
            return CommandResponse(note="Nothing was sent.")
        try:
            t = await self.ledger.transfer(
                bare, req.state["to"], req.state["amount"], memo=req.state["memo"], idem_key=req.state["key"]
            )
        except WalletError as e:
            return CommandResponse(note=f"Not sent: {e.condition}: {e.text}", note_type="error")
        if not t.replayed:
            self.notify_recipient(bare, req.state["to"], req.state["amount"], req.state["memo"])
        return CommandResponse(note=f"Sent {t.amount} {t.currency} to {req.state['to']} (transfer #{t.seq}).")

    async def cmd_history(self, req: CommandRequest) -> CommandResponse:
        bare = req.requester.split("/")[0]
        after = req.state.get("after")
        rows = await self.ledger.history(bare, after_id=after, limit=PAGE + 1)
        more = len(rows) > PAGE
        rows = rows[:PAGE]
        if rows:
            req.state["after"] = rows[-1].seq
        text = "\n".join(describe(h) for h in rows) or "No transfers."
        form = Form("History", type="result", fields=[Field("transfers", "text-multi", "Transfers", text.split("\n"))])
        if more:
            return CommandResponse("executing", form, actions=["next", "complete"])
        return CommandResponse(form=form)

    async def cmd_mint(self, req: CommandRequest) -> CommandResponse:
        bare = req.requester.split("/")[0]
        if not self.is_admin(bare):
            raise CommandError("forbidden")
        if req.stage == 0:
            req.state["key"] = "adhoc-mint:" + secrets.token_hex(8)
            form = Form(
                "Mint or adjust",
                "Create coins for a user (from the issuance account).",
                [
                    Field("jid", "jid-single", "User", required=True),
                    Field("amount", "text-single", "Amount", required=True),
                    Field("memo", "text-single", "Memo"),
                ],
            )
            return CommandResponse("executing", form, actions=["complete"])
        amount = parse_amount(req.value("amount"))
        if amount is None or amount <= 0:
            raise CommandError("bad-request", "The amount must be a positive whole number")
        try:
            t = await self.ledger.mint(
                self._recipient(req.value("jid")),
                amount,
                memo=req.value("memo"),
                idem_key=req.state["key"],
                initiator=bare,
            )
        except WalletError as e:
            return CommandResponse(note=f"Not minted: {e.condition}: {e.text}", note_type="error")
        return CommandResponse(note=f"Minted {t.amount} {t.currency} (transfer #{t.seq}).")

    # ------------------------------------------------------------- IQ
    async def on_iq_get(self, iq: Element) -> Element:
        bare = jidlib.bare(iq.get("from", ""))
        q = iq[0]
        local = q.tag.split("}")[-1]
        try:
            if local == "balance":
                bal = await self.ledger.balance(bare, q.get("currency"))
                out = Element(f"{{{NS}}}balance", {"currency": q.get("currency") or self.ledger.config.currency})
                out.text = str(bal)
                return iq_result(iq, out)
            if local == "history":
                return await self._history_iq(iq, bare, q)
        except WalletError as e:
            return wallet_error_reply(iq, e)
        return error_reply(iq, "feature-not-implemented")

    async def _history_iq(self, iq: Element, bare: str, q: Element) -> Element:
        rsm = q.find(f"{{{RSM}}}set")
        limit = PAGE
        after: int | None = None
        if rsm is not None:
            max_text = rsm.findtext(f"{{{RSM}}}max")
            if max_text and max_text.isdigit():
                limit = max(1, min(100, int(max_text)))
            after_text = rsm.findtext(f"{{{RSM}}}after")
            if after_text:
                if not after_text.isdigit():
                    return error_reply(iq, "item-not-found", "Unknown paging position")
                after = int(after_text)
        rows = await self.ledger.history(bare, after_id=after, limit=limit + 1, currency=q.get("currency"))
        page = rows[:limit]
        out = Element(f"{{{NS}}}history")
        for h in page:
            SubElement(
                out,
                f"{{{NS}}}transfer",
                {
                    "seq": str(h.seq),
                    "at": h.created_at.isoformat(),
                    "kind": h.kind,
                    "amount": str(h.amount),
                    "currency": h.currency,
                    "counterparty": h.counterparty,
                    "memo": h.memo,
                },
            )
        s = SubElement(out, f"{{{RSM}}}set")
        if page:
            SubElement(s, f"{{{RSM}}}first").text = str(page[0].seq)
            SubElement(s, f"{{{RSM}}}last").text = str(page[-1].seq)
        if len(rows) <= limit:
            SubElement(s, f"{{{RSM}}}count").text = str(len(page))
        return iq_result(iq, out)

    async def on_iq_set(self, iq: Element) -> Element:
        bare = jidlib.bare(iq.get("from", ""))
        q = iq[0]
        if q.tag != f"{{{NS}}}transfer":
            return error_reply(iq, "feature-not-implemented")
        amount = parse_amount(q.get("amount", ""))
        if amount is None:
            return error_reply(
                iq, "bad-request", "amount must be a whole number", app_condition=Element(f"{{{NS}}}bad-amount")
            )
        try:
            to = self._recipient(q.get("to", ""))
        except jidlib.InvalidJID:
            return error_reply(iq, "jid-malformed")
        memo = q.get("memo", "")
        try:
            t = await self.ledger.transfer(
                bare, to, amount, memo=memo, idem_key=q.get("id"), currency=q.get("currency")
            )
        except WalletError as e:
            return wallet_error_reply(iq, e)
        if not t.replayed:
            self.notify_recipient(bare, to, amount, memo)
        out = Element(
            f"{{{NS}}}transfer",
            {
                "seq": str(t.seq),
                "to": to,
                "amount": str(t.amount),
                "currency": t.currency,
                "replayed": "true" if t.replayed else "false",
            },
        )
        return iq_result(iq, out)


__all__ = ["WalletPlugin", "WalletSettings", "NS", "Any"]
