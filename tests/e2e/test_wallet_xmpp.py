"""The wallet from real XMPP clients: chat commands, ad-hoc commands (slixmpp XEP-0050), the IQ protocol."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from tests.helpers import RawClient, disconnect, slix_client
from xmppim.server import Server

NS = "urn:xmppim:wallet:0"
STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"


def ledger(server: Server) -> Any:
    return server.services["wallet"]


async def chat(c: RawClient, to: str, text: str, id_: str) -> str:
    c.send_raw(f"<message to='{to}' type='chat' id='{id_}'><body>{text}</body></message>")
    while True:
        el = await c.recv()
        if el.tag == "{jabber:client}message" and el.get("from") == to:
            return el.findtext("{jabber:client}body") or ""


async def test_wallet_component_is_discoverable(server: Server) -> None:
    c = await slix_client(server, "alice@localhost/d", "pw")
    items = await c.plugin["xep_0030"].get_items(jid="localhost", timeout=5)
    jids = {str(i[0]) for i in items["disco_items"]["items"]}
    assert "wallet.localhost" in jids
    info = await c.plugin["xep_0030"].get_info(jid="wallet.localhost", timeout=5)
    assert NS in info["disco_info"]["features"]
    assert "http://jabber.org/protocol/commands" in info["disco_info"]["features"]
    await disconnect(c)


@pytest.mark.parametrize("wallet_jid", ["wallet.localhost", "bot@wallet.localhost"])
async def test_chat_balance_send_and_notification(server: Server, wallet_jid: str) -> None:
    await ledger(server).mint("alice@localhost", 100, memo="welcome")
    alice = await RawClient.connect(server.ports["c2s"])
    await alice.login("alice", "pw", "a")
    bob = await RawClient.connect(server.ports["c2s"])
    await bob.login("bob", "pw", "b")
    bob.send_raw("<presence/>")
    await bob.recv()  # own presence
    answer = await chat(alice, wallet_jid, "balance", "b1")
    assert "100" in answer.split()
    answer = await chat(alice, wallet_jid, "send bob@localhost 25 for lunch", "s1")
    assert answer.startswith("Sent 25")
    note = await bob.recv()
    assert note.get("from") == "wallet.localhost"
    assert "25" in (note.findtext("{jabber:client}body") or "") and "alice@localhost" in (
        note.findtext("{jabber:client}body") or ""
    )
    # the same message id again moves nothing (idempotent)
    await chat(alice, wallet_jid, "send bob@localhost 25 for lunch", "s1")
    assert await ledger(server).balance("alice@localhost") == 75
    assert await ledger(server).balance("bob@localhost") == 25
    answer = await chat(alice, wallet_jid, "send bob@localhost 1000", "s2")
    assert "insufficient-funds" in answer
    answer = await chat(alice, wallet_jid, "help", "h1")
    assert "balance" in answer and "send" in answer
    await alice.close()
    await bob.close()


async def test_adhoc_send_coins_with_slixmpp(server: Server) -> None:
    await ledger(server).mint("alice@localhost", 50)
    alice = await slix_client(server, "alice@localhost/a", "pw", plugins=("xep_0050", "xep_0004"))
    adhoc = alice.plugin["xep_0050"]
    items = await adhoc.get_commands("wallet.localhost", timeout=5)
    nodes = {i[1] for i in items["disco_items"]["items"]}
    assert {"balance", "send", "history"} <= nodes and "admin-mint" not in nodes
    r = await adhoc.send_command("wallet.localhost", "send", timeout=5)
    cmd = r["command"]
    assert cmd["status"] == "executing"
    sid = cmd["sessionid"]
    form = alice.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="recipient", value="bob@localhost")
    form.add_field(var="amount", value="20")
    form.add_field(var="memo", value="thanks")
    r = await adhoc.send_command("wallet.localhost", "send", sessionid=sid, payload=form, action="next", timeout=5)
    assert r["command"]["status"] == "executing"
    assert "20" in r["command"]["form"]["instructions"]
    confirm = alice.plugin["xep_0004"].make_form(ftype="submit")
    confirm.add_field(var="confirm", value=True, ftype="boolean")
    r = await adhoc.send_command(
        "wallet.localhost", "send", sessionid=sid, payload=confirm, action="complete", timeout=5
    )
    assert r["command"]["status"] == "completed"
    assert await ledger(server).balance("bob@localhost") == 20
    assert await ledger(server).balance("alice@localhost") == 30
    await disconnect(alice)


async def test_another_user_cannot_continue_a_command_session(server: Server) -> None:
    await ledger(server).mint("alice@localhost", 50)
    alice = await RawClient.connect(server.ports["c2s"])
    await alice.login("alice", "pw", "a")
    carol = await RawClient.connect(server.ports["c2s"])
    await carol.login("carol", "pw", "c")
    alice.send_raw(
        "<iq type='set' id='c1' to='wallet.localhost'>"
        "<command xmlns='http://jabber.org/protocol/commands' node='send' action='execute'/></iq>"
    )
    r = await alice.recv()
    sid = r.find("{http://jabber.org/protocol/commands}command").get("sessionid")  # type: ignore[union-attr]
    carol.send_raw(
        f"<iq type='set' id='c2' to='wallet.localhost'><command xmlns='http://jabber.org/protocol/commands' "
        f"node='send' sessionid='{sid}' action='next'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='recipient'><value>carol@localhost</value></field><field var='amount'><value>50</value></field>"
        "</x></command></iq>"
    )
    err = await carol.recv()
    assert err.get("type") == "error" and err.find(f".//{{{STANZAS}}}forbidden") is not None
    assert await ledger(server).balance("alice@localhost") == 50
    await alice.close()
    await carol.close()


async def test_iq_protocol_transfer_balance_history_and_errors(server: Server) -> None:
    await ledger(server).mint("alice@localhost", 30)
    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw", "a")
    c.send_raw(
        f"<iq type='set' id='t1' to='wallet.localhost'>"
        f"<transfer xmlns='{NS}' to='bob@localhost' amount='10' id='k1'/></iq>"
    )
    r = await c.recv()
    assert r.get("type") == "result"
    t = r.find(f"{{{NS}}}transfer")
    assert t is not None and t.get("replayed") == "false"
    c.send_raw(
        f"<iq type='set' id='t2' to='wallet.localhost'>"
        f"<transfer xmlns='{NS}' to='bob@localhost' amount='10' id='k1'/></iq>"
    )
    r = await c.recv()
    assert r.find(f"{{{NS}}}transfer").get("replayed") == "true"  # type: ignore[union-attr]
    cases = [
        ("<transfer xmlns='%s' to='bob@localhost' amount='500' id='k2'/>", "insufficient-funds"),
        ("<transfer xmlns='%s' to='nobody@localhost' amount='1' id='k3'/>", "unknown-recipient"),
        ("<transfer xmlns='%s' to='bob@localhost' amount='11' id='k1'/>", "duplicate"),
        ("<transfer xmlns='%s' to='bob@localhost' amount='0' id='k4'/>", "bad-amount"),
    ]
    for i, (payload, cond) in enumerate(cases):
        c.send_raw(f"<iq type='set' id='e{i}' to='wallet.localhost'>{payload % NS}</iq>")
        r = await c.recv()
        assert r.get("type") == "error", cond
        assert r.find(f".//{{{NS}}}{cond}") is not None, cond
    c.send_raw(f"<iq type='get' id='b1' to='wallet.localhost'><balance xmlns='{NS}'/></iq>")
    r = await c.recv()
    assert r.findtext(f"{{{NS}}}balance") == "20"
    c.send_raw(
        f"<iq type='get' id='h1' to='wallet.localhost'><history xmlns='{NS}'>"
        "<set xmlns='http://jabber.org/protocol/rsm'><max>1</max></set></history></iq>"
    )
    r = await c.recv()
    rows = r.findall(f"{{{NS}}}history/{{{NS}}}transfer")
    assert len(rows) == 1 and rows[0].get("amount") == "30"
    last = r.findtext(f"{{{NS}}}history/{{http://jabber.org/protocol/rsm}}set/{{http://jabber.org/protocol/rsm}}last")
    c.send_raw(
        f"<iq type='get' id='h2' to='wallet.localhost'><history xmlns='{NS}'>"
        f"<set xmlns='http://jabber.org/protocol/rsm'><max>10</max><after>{last}</after></set></history></iq>"
    )
    r = await c.recv()
    rows = r.findall(f"{{{NS}}}history/{{{NS}}}transfer")
    assert [x.get("amount") for x in rows] == ["-10"]
    await c.close()


async def test_fifty_clients_two_thousand_transfers_match_a_sequential_replay(server: Server) -> None:
    """Issue 5: concurrent transfers over real XMPP sessions (with duplicates and overdrafts)."""
    users = [f"u{i}" for i in range(50)]
    for u in users:
        await server.accounts.create(u, "localhost", "pw")
        await ledger(server).mint(f"{u}@localhost", 100)
    clients = {}
    for u in users:
        c = await RawClient.connect(server.ports["c2s"])
        await c.login(u, "pw", "w")
        clients[u] = c
    rnd = random.Random(7)
    confirmed: list[tuple[str, str, int, str]] = []

    async def run(u: str, n: int) -> None:
        c = clients[u]
        for i in range(n):
            to = rnd.choice([x for x in users if x != u])
            amount = rnd.choice([1, 5, 20, 60, 250])  # 250 always overdraws
            key = f"{u}-{i // 2}" if i % 5 == 0 else f"{u}-{i}"  # some duplicates of the previous key
            c.send_raw(
                f"<iq type='set' id='{i}' to='wallet.localhost'><transfer xmlns='{NS}' "
                f"to='{to}@localhost' amount='{amount}' id='{key}'/></iq>"
            )
            r = await c.recv(timeout=30)
            t = r.find(f"{{{NS}}}transfer")
            if r.get("type") == "result" and t is not None and t.get("replayed") == "false":
                confirmed.append((u, to, amount, t.get("seq", "")))

    await asyncio.gather(*(run(u, 40) for u in users))
    balances = {u: 100 for u in users}
    for u, to, amount, _seq in sorted(confirmed, key=lambda x: int(x[3])):
        balances[u] -= amount
        assert balances[u] >= 0
        balances[to] += amount
    for u in users:
        assert await ledger(server).balance(f"{u}@localhost") == balances[u]
    report = await ledger(server).verify()
    assert report.ok, report.problems
    for c in clients.values():
        await c.close()


@pytest.fixture
def config_overrides() -> dict[str, Any]:
    return {"plugins": {"enabled": ["wallet"], "wallet": {"webhook_secret": "topsecret"}}}


async def test_topup_webhook_on_the_running_server(server: Server) -> None:
    """The example payment provider signs and posts to /plugins/wallet/topup on the server's HTTP port."""
    import subprocess
    import sys

    url = f"http://127.0.0.1:{server.ports['http']}/plugins/wallet/topup"

    def provider(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "examples/fake_payment_provider.py", "--url", url, *args],
            capture_output=True,
            text=True,
            timeout=60,
        )

    ok = await asyncio.to_thread(
        provider, "--secret", "topsecret", "--jid", "alice@localhost", "--amount", "40", "--payment-id", "p1"
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert await ledger(server).balance("alice@localhost") == 40
    again = await asyncio.to_thread(
        provider, "--secret", "topsecret", "--jid", "alice@localhost", "--amount", "40", "--payment-id", "p1"
    )
    assert again.returncode == 0
    assert await ledger(server).balance("alice@localhost") == 40  # replayed payment id moves nothing
    forged = await asyncio.to_thread(
        provider, "--secret", "wrong", "--jid", "alice@localhost", "--amount", "999", "--payment-id", "p2"
    )
    assert forged.returncode != 0
    assert await ledger(server).balance("alice@localhost") == 40
