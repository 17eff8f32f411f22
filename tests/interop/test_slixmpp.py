"""slixmpp (PyPI) against each target: login, roster + subscriptions, presence, messages, ping, disco."""

from __future__ import annotations

import asyncio
import secrets

import pytest
from conftest import RecordRow
from harness import Account, Target
from peers import SlixClient, cleanup_roster, explain_iq, logged_in, subscribe_both
from slixmpp import JID

CLIENT = "slixmpp"
ADHOC_NS = "http://jabber.org/protocol/commands"


async def test_login_starttls(target: Target, record_row: RecordRow) -> None:
    """RFC 6120 §5/§6/§7: STARTTLS, SASL and resource binding with plaintext fallback disabled."""
    record_row(CLIENT, "login (STARTTLS)")
    acc = target.new_account("alice")
    async with logged_in(target, acc, "starttls") as c:
        assert c.tls_version() is not None, "stream is not TLS-encrypted after STARTTLS login"
        assert c.boundjid.bare == acc.jid, f"bound {c.boundjid} is not for {acc.jid}"
        assert c.boundjid.resource, "server bound no resource"


async def test_login_direct_tls(target: Target, record_row: RecordRow) -> None:
    """XEP-0368: TLS from the first byte on the direct TLS port."""
    record_row(CLIENT, "login (direct TLS, XEP-0368)")
    if target.direct_tls_port is None:
        pytest.skip(f"{target.name} has no direct TLS port")
    acc = target.new_account("alice")
    async with logged_in(target, acc, "directtls", direct_tls=True) as c:
        assert c.tls_version() is not None, "direct TLS stream is not encrypted"
        assert c.boundjid.bare == acc.jid


async def test_login_wrong_password_rejected(target: Target, record_row: RecordRow) -> None:
    """RFC 6120 §6.5: a wrong password must end in a SASL failure, never a session."""
    record_row(CLIENT, "wrong password rejected")
    acc = target.new_account("alice")
    bad = Account(acc.jid, acc.password + "-wrong")
    c = SlixClient(bad, target, "badpw")
    try:
        with pytest.raises(AssertionError, match="authentication failed|stream closed"):
            await c.login(timeout=10)
        assert not c.sessionstarted, "server started a session with a wrong password"
    finally:
        await c.close()


async def test_roster_subscription_handshake(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §2-3: roster add + push, subscribe/subscribed both ways; both rosters end in 'both'."""
    record_row(CLIENT, "roster add + subscription handshake")
    a_acc, b_acc = target.new_account("alice"), target.new_account("bob")
    async with (
        logged_in(target, a_acc, "roster", fetch_roster=True) as a,
        logged_in(target, b_acc, "roster", fetch_roster=True) as b,
    ):
        try:
            await subscribe_both(a, b)
            a_items = await a.roster_items()
            b_items = await b.roster_items()
            assert a_items.get(b_acc.jid, {}).get("subscription") == "both", (
                f"{a_acc.local}'s roster item for {b_acc.local} is {a_items.get(b_acc.jid)}, not subscription=both"
            )
            assert b_items.get(a_acc.jid, {}).get("subscription") == "both", (
                f"{b_acc.local}'s roster item for {a_acc.local} is {b_items.get(a_acc.jid)}, not subscription=both"
            )
            assert a_items[b_acc.jid].get("name") == b_acc.local, "roster item name was not stored"
        finally:
            await cleanup_roster(a, b_acc.jid)
            await cleanup_roster(b, a_acc.jid)
        # RFC 6121 §2.5: removal is pushed and the item is gone afterwards.
        assert b_acc.jid not in await a.roster_items(), "roster remove left the item in place"


async def test_presence_both_ways(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §4: after a mutual subscription each side sees the other's presence broadcast."""
    record_row(CLIENT, "presence both ways")
    a_acc, b_acc = target.new_account("alice"), target.new_account("bob")
    async with (
        logged_in(target, a_acc, "pres", fetch_roster=True) as a,
        logged_in(target, b_acc, "pres", fetch_roster=True) as b,
    ):
        try:
            await subscribe_both(a, b)
            sa, sb = f"a-{secrets.token_hex(3)}", f"b-{secrets.token_hex(3)}"
            a.send_presence(pstatus=sa, pshow="away")
            b.send_presence(pstatus=sb)
            pa = await b.wait_presence(a_acc.jid, "away", status=sa)
            await a.wait_presence(b_acc.jid, "available", status=sb)
            assert pa["from"].resource == "pres", "presence broadcast lost the sender's full JID"
            # RFC 6121 §4.5.2: unavailable presence is broadcast too.
            a.send_presence(ptype="unavailable")
            await b.wait_presence(a_acc.jid, "unavailable")
        finally:
            await cleanup_roster(a, b_acc.jid)
            await cleanup_roster(b, a_acc.jid)


async def test_message_both_ways(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §5: chat messages to the bare JID arrive, with the sender's full JID, both ways."""
    record_row(CLIENT, "message both ways")
    a_acc, b_acc = target.new_account("alice"), target.new_account("bob")
    async with logged_in(target, a_acc, "msg") as a, logged_in(target, b_acc, "msg") as b:
        m1, m2 = f"hello bob {secrets.token_hex(4)}", f"hi alice ✓ {secrets.token_hex(4)}"
        a.send_message(mto=JID(b_acc.jid), mbody=m1, mtype="chat")
        got = await a.expect_delivery(b, m1)
        assert str(got["from"]) == f"{a_acc.jid}/msg", f"message from={got['from']}, not alice's full JID"
        assert got["type"] == "chat"
        b.send_message(mto=got["from"], mbody=m2, mtype="chat")
        await b.expect_delivery(a, m2)


async def test_ping(target: Target, record_row: RecordRow) -> None:
    """XEP-0199: the server answers a ping addressed to its domain."""
    record_row(CLIENT, "ping (XEP-0199)")
    acc = target.new_account("alice")
    async with logged_in(target, acc, "ping") as c:
        with explain_iq(c.name, "ping to the server"):
            rtt = await c.plugin["xep_0199"].ping(jid=JID(target.domain), timeout=10)
        assert rtt >= 0


async def test_disco_info(target: Target, record_row: RecordRow) -> None:
    """XEP-0030: the server's disco#info names a server identity and the disco#info feature."""
    record_row(CLIENT, "disco#info (XEP-0030)")
    acc = target.new_account("alice")
    async with logged_in(target, acc, "disco") as c:
        with explain_iq(c.name, "disco#info to the server"):
            iq = await c.plugin["xep_0030"].get_info(jid=JID(target.domain), timeout=10)
        info = iq["disco_info"]
        identities = {(cat, typ) for cat, typ, _lang, _name in info["identities"]}
        features = set(info["features"])
        assert ("server", "im") in identities, f"no server/im identity in disco#info: {sorted(identities)}"
        assert "http://jabber.org/protocol/disco#info" in features, "disco#info feature not advertised"


async def test_adhoc_commands(target: Target, record_row: RecordRow) -> None:
    """XEP-0050: the server lists its commands (disco#items, §2.2) and runs one (§3.2); an unfinished
    multi-step command is cancelled again (§3.4)."""
    record_row(CLIENT, "ad-hoc commands (XEP-0050)")
    acc = target.new_account("alice")
    async with logged_in(target, acc, "adhoc") as c:
        with explain_iq(c.name, "disco#items of the commands node"):
            items = await c.plugin["xep_0030"].get_items(jid=JID(target.domain), node=ADHOC_NS, timeout=10)
        commands = [(str(j), n, name) for j, n, name in items["disco_items"]["items"]]
        if not commands:
            pytest.skip(f"{target.name} lists no ad-hoc commands for a normal user")
        # Prefer a command that completes in one step (Prosody's "ping"); else start and cancel the first.
        jid, node, name = next((cmd for cmd in commands if cmd[1] == "ping"), commands[0])
        iq = c.Iq()
        iq["type"], iq["to"] = "set", jid
        iq["command"]["node"], iq["command"]["action"] = node, "execute"
        with explain_iq(c.name, f"execute of command {name!r}"):
            resp = await iq.send(timeout=10)  # type: ignore[no-untyped-call]
        status = resp["command"]["status"]
        assert status in ("completed", "executing"), f"command {name!r} answered status={status!r}"
        if status == "executing":
            sid = resp["command"]["sessionid"]
            assert sid, f"executing command {name!r} returned no sessionid"
            cancel = c.Iq()
            cancel["type"], cancel["to"] = "set", jid
            cancel["command"]["node"], cancel["command"]["sessionid"] = node, sid
            cancel["command"]["action"] = "cancel"
            with explain_iq(c.name, f"cancel of command {name!r}"):
                done = await cancel.send(timeout=10)  # type: ignore[no-untyped-call]
            assert done["command"]["status"] == "canceled", f"cancel of {name!r} gave {done['command']['status']}"


async def test_offline_message_delivered_at_login(target: Target, record_row: RecordRow) -> None:
    """RFC 6121 §8.5.2.2.1 + XEP-0160: a chat message to a user with no session is stored and delivered
    at their next login with a XEP-0203 delay stamp (offline storage is optional: a bounce skips)."""
    record_row(CLIENT, "offline message at next login (XEP-0160)")
    a_acc, b_acc = target.new_account("alice"), target.new_account("bob")
    body = f"while you were away {secrets.token_hex(4)}"
    async with logged_in(target, a_acc, "offline") as a:
        a.send_message(mto=JID(b_acc.jid), mbody=body, mtype="chat")
        # A ping round trip orders us after the server has handled the message (same stream, in order).
        with explain_iq(a.name, "ping to the server"):
            await a.plugin["xep_0199"].ping(jid=JID(target.domain), timeout=10)
        await asyncio.sleep(0.2)
        bounced = a.bounce_note()
        if bounced:
            pytest.skip(f"{target.name} does not store offline messages{bounced}")
    async with logged_in(target, b_acc, "back") as b:
        got = await b.wait_message(a_acc.jid, body)
        stamp = got["delay"]["stamp"]
        assert stamp is not None, "offline message was delivered without a XEP-0203 <delay/> stamp"


WALLET_NS = "urn:xmppim:wallet:0"


async def test_wallet_balance_by_adhoc_command_and_chat(target: Target, record_row: RecordRow) -> None:
    """The wallet value-added service from a standard client: found through disco#items of the server,
    its XEP-0050 *Balance* command completes with a XEP-0004 result form, and the chat command
    ``balance`` is answered with the balance as a plain integer (issue 5's contract)."""
    record_row(CLIENT, "wallet: ad-hoc Balance + chat 'balance'")
    acc = target.new_account("alice")
    async with logged_in(target, acc, "wallet") as c:
        with explain_iq(c.name, "disco#items of the server"):
            items = await c.plugin["xep_0030"].get_items(jid=JID(target.domain), timeout=10)
        wallet = None
        for jid, _node, _name in items["disco_items"]["items"]:
            with explain_iq(c.name, f"disco#info of {jid}"):
                info = await c.plugin["xep_0030"].get_info(jid=jid, timeout=10)
            if WALLET_NS in info["disco_info"]["features"]:
                wallet = str(jid)
                break
        if wallet is None:
            pytest.skip(f"{target.name} has no wallet component (an xmppim plugin)")
        iq = c.Iq()
        iq["type"], iq["to"] = "set", wallet
        iq["command"]["node"], iq["command"]["action"] = "balance", "execute"
        with explain_iq(c.name, "execute of the wallet's Balance command"):
            resp = await iq.send(timeout=10)  # type: ignore[no-untyped-call]
        assert resp["command"]["status"] == "completed", f"Balance answered {resp['command']['status']!r}"
        values = resp["command"]["form"].get_values()
        assert str(values.get("balance", "")).isdigit(), f"no integer balance in the result form: {values}"
        answered: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_message(msg: object) -> None:
            if str(msg["from"]).split("/")[0] == wallet and not answered.done():  # type: ignore[index]
                answered.set_result(str(msg["body"]))  # type: ignore[index]

        c.add_event_handler("message", on_message)
        c.send_message(mto=JID(wallet), mbody="balance", mtype="chat")
        try:
            text = await asyncio.wait_for(answered, 10)
        except TimeoutError:
            raise AssertionError(f"{wallet} did not answer the chat command 'balance' within 10s") from None
        assert any(w.isdigit() for w in text.split()), f"the answer to 'balance' has no plain integer: {text!r}"
