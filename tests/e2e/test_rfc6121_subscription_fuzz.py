"""hypothesis drives random subscription stanzas between real clients of a real server, and after every
step both users' rosters (as the server reports them over the wire) must equal a model that applies
RFC 6121 Appendix A to both sides.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from tests.helpers import RawClient, make_config, running_server
from xmppim.sessions.roster import (
    SubState,
    inbound,
    inbound_auto_reply,
    outbound,
    outbound_routes,
)

USERS = ["ann", "ben", "cid"]
TYPES = ["subscribe", "subscribed", "unsubscribe", "unsubscribed"]
R = "{jabber:iq:roster}"


class ServerThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stop: asyncio.Event | None = None
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.ready.wait(30)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        cfg = make_config(Path(tempfile.mkdtemp()))
        self.stop = asyncio.Event()
        async with running_server(cfg) as srv:
            for u in USERS:
                await srv.accounts.create(u, "localhost", "pw")
            self.port = srv.ports["c2s"]
            self.ready.set()
            await self.stop.wait()

    def close(self) -> None:
        assert self.stop is not None
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(10)


class Subscriptions(RuleBasedStateMachine):
    server: ServerThread

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clients: dict[str, RawClient] = {}
        self.n = 0
        for u in USERS:
            self.clients[u] = self.run(self._login(u))
        # Model: (owner, contact) -> (state, visible)
        self.model: dict[tuple[str, str], tuple[SubState, bool]] = {}

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _login(self, u: str) -> RawClient:
        c = await RawClient.connect(self.server.port)
        await c.login(u, "pw", "fuzz")
        # Reset this user's roster on the server: remove every item (a fresh start per example).
        c.send_raw("<iq type='get' id='g'><query xmlns='jabber:iq:roster'/></iq>")
        res = await self._wait_id(c, "g")
        for item in res.iter(f"{R}item"):
            c.send_raw(
                f"<iq type='set' id='rm'><query xmlns='jabber:iq:roster'><item jid='{item.get('jid')}' "
                "subscription='remove'/></query></iq>"
            )
            await self._wait_id(c, "rm")
        return c

    async def _wait_id(self, c: RawClient, id_: str) -> Any:
        while True:
            el = await c.recv(timeout=10)
            if el.get("id") == id_ and el.tag == "{jabber:client}iq" and el.get("type") in ("result", "error"):
                return el

    def get(self, owner: str, contact: str) -> tuple[SubState, bool]:
        return self.model.get((owner, contact), (SubState(), False))

    def teardown(self) -> None:
        for c in self.clients.values():
            self.run(c.close())
        self.loop.close()

    @rule(sender=st.sampled_from(USERS), receiver=st.sampled_from(USERS), t=st.sampled_from(TYPES))
    def send(self, sender: str, receiver: str, t: str) -> None:
        if sender == receiver:
            return
        me, you = f"{sender}@localhost", f"{receiver}@localhost"
        # model: outbound on the sender's item, then inbound on the receiver's item
        before, vis = self.get(me, you)
        after = outbound(before, t)
        # RFC 6121 §3.1.2 / §3.1.5 / §3.4: subscribing, approving, and pre-approving put the contact on
        # the roster (pushed); an inbound request alone does not.
        if t == "subscribe" or (t == "subscribed" and (before.pending_in or after.approved)):
            vis = True
        self.model[(me, you)] = (after, vis)
        if outbound_routes(before, after, t):
            rb, rvis = self.get(you, me)
            ra = inbound(rb, t)
            self.model[(you, me)] = (ra, rvis)
            if inbound_auto_reply(rb, ra, t):
                sb, svis = self.model[(me, you)]
                self.model[(me, you)] = (inbound(sb, "subscribed"), svis)
        c = self.clients[sender]
        self.n += 1
        c.send_raw(f"<presence to='{you}' type='{t}'/>")
        c.send_raw(f"<iq type='get' id='sync{self.n}' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
        self.run(self._wait_id(c, f"sync{self.n}"))

    @invariant()
    def rosters_match_the_model(self) -> None:
        for u in USERS:
            me = f"{u}@localhost"
            c = self.clients[u]
            self.n += 1
            c.send_raw(f"<iq type='get' id='r{self.n}'><query xmlns='jabber:iq:roster'/></iq>")
            res = self.run(self._wait_id(c, f"r{self.n}"))
            got = {
                i.get("jid"): (i.get("subscription"), i.get("ask") == "subscribe", i.get("approved") == "true")
                for i in res.iter(f"{R}item")
            }
            want = {
                contact: (s.sub, s.pending_out, s.approved)
                for (owner, contact), (s, vis) in self.model.items()
                if owner == me and vis
            }
            assert got == want, f"{me}: server {got} != model {want}"


def test_random_subscription_sequences_follow_appendix_a() -> None:
    srv = ServerThread()
    try:
        Subscriptions.server = srv
        run = Subscriptions.TestCase
        run.settings = settings(
            max_examples=15,
            stateful_step_count=12,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
        run().runTest()
    finally:
        srv.close()
