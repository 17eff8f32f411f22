"""aioxmpp 0.13.3 (PyPI) against each target, with a slixmpp peer on the other end.

aioxmpp is an independent implementation (its own XML stream, SASL and TLS through pyOpenSSL), so it
catches server behaviour slixmpp happens to tolerate.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aioxmpp
import aioxmpp.connector
import aioxmpp.dispatcher
import pytest
from conftest import RecordRow
from harness import Account, Target
from peers import SlixClient, cleanup_roster, ensure_absent, logged_in

CLIENT = "aioxmpp"


class AioClient:
    """aioxmpp Client connected via STARTTLS to the target's host/port."""

    def __init__(self, target: Target, account: Account, resource: str, direct_tls: bool = False) -> None:
        self.account = account
        self.jid = aioxmpp.JID.fromstr(f"{account.jid}/{resource}")
        self.client = aioxmpp.Client(
            self.jid,
            aioxmpp.make_security_layer(account.password, no_verify=True),
            override_peer=[
                (target.host, target.direct_tls_port, aioxmpp.connector.XMPPOverTLSConnector())
                if direct_tls
                else (target.host, target.port, aioxmpp.connector.STARTTLSConnector())
            ],
        )
        self.messages: list[aioxmpp.Message] = []
        self.available: list[aioxmpp.Presence] = []
        self.subscribe_requests: list[aioxmpp.JID] = []
        self._changed = asyncio.Event()
        disp = self.client.summon(aioxmpp.dispatcher.SimpleMessageDispatcher)
        disp.register_callback(aioxmpp.MessageType.CHAT, None, self._on_message)
        self.roster = self.client.summon(aioxmpp.RosterClient)
        self.roster.on_subscribe.connect(self._on_subscribe)
        self.presence = self.client.summon(aioxmpp.PresenceClient)
        self.presence.on_available.connect(self._on_available)
        self.presence.on_changed.connect(self._on_available)
        self.presence_server = self.client.summon(aioxmpp.PresenceServer)

    def _poke(self) -> None:
        self._changed.set()

    def _on_message(self, msg: aioxmpp.Message) -> None:
        self.messages.append(msg)
        self._poke()

    def _on_subscribe(self, stanza: aioxmpp.Presence) -> None:
        self.subscribe_requests.append(stanza.from_.bare())
        self._poke()

    def _on_available(self, full_jid: aioxmpp.JID, stanza: aioxmpp.Presence) -> None:
        self.available.append(stanza)
        self._poke()

    async def until(self, cond: Callable[[], Any], what: str, timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """Wait until ``cond()`` is truthy (re-checked on every event and twice a second)."""
        deadline = time.monotonic() + timeout
        while True:
            value = cond()
            if value:
                return value
            left = deadline - time.monotonic()
            if left <= 0:
                who = f"aioxmpp client {self.account.local}"
                raise AssertionError(f"{who}: {what} not seen within {timeout:.0f}s")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    def subscription(self, peer: str) -> str | None:
        item = self.roster.items.get(aioxmpp.JID.fromstr(peer))
        return None if item is None else str(item.subscription)


@contextlib.asynccontextmanager
async def aio_logged_in(
    target: Target, account: Account, resource: str = "aio", direct_tls: bool = False
) -> AsyncIterator[AioClient]:
    """Connected aioxmpp client (initial roster fetched, available presence sent), bounded login."""
    c = AioClient(target, account, resource, direct_tls)
    roster_ready = asyncio.Event()
    c.roster.on_initial_roster_received.connect(lambda: roster_ready.set())
    cm = c.client.connected()
    try:
        await asyncio.wait_for(cm.__aenter__(), 20)
    except TimeoutError:
        c.client.stop()
        where = f"{target.host}:{target.port}"
        raise AssertionError(f"aioxmpp login of {account.jid} to {where} timed out") from None
    except Exception as exc:
        raise AssertionError(f"aioxmpp login of {account.jid} failed: {type(exc).__name__}: {exc}") from None
    try:
        try:
            await asyncio.wait_for(roster_ready.wait(), 10)
        except TimeoutError:
            raise AssertionError(f"aioxmpp {account.local}: initial roster not received within 10s") from None
        c.presence_server.set_presence(aioxmpp.PresenceState(True))
        yield c
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(cm.__aexit__(None, None, None), 10)


async def clean_slate(a: AioClient, b: SlixClient) -> None:
    """Remove what an earlier run may have left between the two accounts (long-lived servers)."""
    peer = aioxmpp.JID.fromstr(b.boundjid.bare)
    if peer in a.roster.items:
        await a.roster.remove_entry(peer, timeout=10)
        await a.until(lambda: peer not in a.roster.items, "removal of a leftover roster item")
    await ensure_absent(b, a.account.jid)
    a.subscribe_requests.clear()


async def test_login(target: Target, record_row: RecordRow) -> None:
    """RFC 6120: STARTTLS, SASL, bind; aioxmpp also fetches the roster (RFC 6121 §2.1.3)."""
    record_row(CLIENT, "login (STARTTLS)")
    acc = target.new_account("alice")
    async with aio_logged_in(target, acc, "login") as c:
        assert c.client.established, "aioxmpp stream not established"
        assert str(c.client.local_jid.bare()) == acc.jid, f"bound {c.client.local_jid}, expected {acc.jid}"
        assert c.client.local_jid.resource, "no resource bound"


async def test_login_direct_tls(target: Target, record_row: RecordRow) -> None:
    """XEP-0368 direct TLS with aioxmpp's XMPPOverTLSConnector (pyOpenSSL, ALPN xmpp-client)."""
    record_row(CLIENT, "login (direct TLS, XEP-0368)")
    if target.direct_tls_port is None:
        pytest.skip(f"{target.name} has no direct TLS port")
    acc = target.new_account("alice")
    async with aio_logged_in(target, acc, "dtls", direct_tls=True) as c:
        assert c.client.established, "aioxmpp stream not established over direct TLS"
        assert str(c.client.local_jid.bare()) == acc.jid


async def test_message_both_ways(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §5: aioxmpp -> slixmpp and back, chat type, full JIDs."""
    record_row(CLIENT, "message both ways")
    a_acc, b_acc = target.new_account("alice"), target.new_account("bob")
    async with aio_logged_in(target, a_acc, "aio") as a, logged_in(target, b_acc, "slix") as b:
        m1, m2 = f"from aioxmpp {secrets.token_hex(4)}", f"from slixmpp ✓ {secrets.token_hex(4)}"
        msg = aioxmpp.Message(type_=aioxmpp.MessageType.CHAT, to=aioxmpp.JID.fromstr(b_acc.jid))
        msg.body[None] = m1
        await a.client.send(msg)
        got = await b.wait_message(a_acc.jid, m1)
        assert str(got["from"]) == f"{a_acc.jid}/aio", f"slixmpp saw from={got['from']}"
        b.send_message(mto=got["from"], mbody=m2, mtype="chat")
        await a.until(
            lambda: any(bool(m.body) and m.body.any() == m2 and str(m.from_.bare()) == b_acc.jid for m in a.messages),
            f"message {m2!r} from {b_acc.jid}",
        )


async def test_roster_subscription(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §2-3 driven from aioxmpp's RosterClient: add, subscribe, approve; both ends 'both'."""
    record_row(CLIENT, "roster add + subscription handshake")
    a_acc, b_acc = target.new_account("alice"), target.new_account("bob")
    async with (
        aio_logged_in(target, a_acc, "aio") as a,
        logged_in(target, b_acc, "slix", fetch_roster=True) as b,
    ):
        await clean_slate(a, b)
        try:
            await a.roster.set_entry(aioxmpp.JID.fromstr(b_acc.jid), name="bob", timeout=10)
            await a.until(lambda: a.subscription(b_acc.jid) is not None, "roster push for the added contact")
            a.roster.subscribe(aioxmpp.JID.fromstr(b_acc.jid))
            await b.wait_presence(a_acc.jid, "subscribe")
            b.send_presence(pto=a_acc.jid, ptype="subscribed")
            b.send_presence(pto=a_acc.jid, ptype="subscribe")
            await a.until(lambda: b_acc.jid in {str(j) for j in a.subscribe_requests}, "subscribe request")
            a.roster.approve(aioxmpp.JID.fromstr(b_acc.jid))
            await a.until(
                lambda: a.subscription(b_acc.jid) == "both",
                f"subscription=both for {b_acc.local} (now {a.subscription(b_acc.jid)})",
            )
            await b.wait_roster_push(a_acc.jid, subscription="both")
            assert a.roster.items[aioxmpp.JID.fromstr(b_acc.jid)].name == "bob"
        finally:
            with contextlib.suppress(Exception):
                await a.roster.remove_entry(aioxmpp.JID.fromstr(b_acc.jid), timeout=10)
            await cleanup_roster(b, a_acc.jid)


async def test_presence(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §4: with a mutual subscription, aioxmpp sees the peer's presence and the peer sees its."""
    record_row(CLIENT, "presence both ways")
    a_acc, b_acc = target.new_account("alice"), target.new_account("bob")
    async with (
        aio_logged_in(target, a_acc, "aio") as a,
        logged_in(target, b_acc, "slix", fetch_roster=True) as b,
    ):
        await clean_slate(a, b)
        try:
            # Mutual subscription driven from the slixmpp side here (the roster test covers aioxmpp's).
            b.send_presence(pto=a_acc.jid, ptype="subscribe")
            await a.until(lambda: b_acc.jid in {str(j) for j in a.subscribe_requests}, "subscribe request")
            a.roster.approve(aioxmpp.JID.fromstr(b_acc.jid))
            a.roster.subscribe(aioxmpp.JID.fromstr(b_acc.jid))
            await b.wait_presence(a_acc.jid, "subscribe")
            b.send_presence(pto=a_acc.jid, ptype="subscribed")
            await a.until(lambda: a.subscription(b_acc.jid) == "both", "subscription=both")
            status = f"aio-{secrets.token_hex(3)}"
            dnd = aioxmpp.PresenceState(True, aioxmpp.PresenceShow.DND)
            a.presence_server.set_presence(dnd, status=status)
            await b.wait_presence(a_acc.jid, "dnd", status=status)
            b_status = f"slix-{secrets.token_hex(3)}"
            b.send_presence(pstatus=b_status)
            await a.until(
                lambda: any(
                    str(p.from_.bare()) == b_acc.jid and bool(p.status) and p.status.any() == b_status
                    for p in a.available
                ),
                f"available presence of {b_acc.local} with status {b_status!r}",
            )
        finally:
            with contextlib.suppress(Exception):
                await a.roster.remove_entry(aioxmpp.JID.fromstr(b_acc.jid), timeout=10)
            await cleanup_roster(b, a_acc.jid)
