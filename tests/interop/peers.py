"""A slixmpp client for interop scenarios: the driven client of test_slixmpp.py and the peer of others.

Every wait is bounded and fails with a sentence naming who waited for what, so the matrix shows a
readable reason (e.g. under fault injection) instead of a bare timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import slixmpp
from harness import Account, Target
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.stanza import Iq, Message, Presence

StanzaPred = Callable[[Any], bool]


@contextlib.contextmanager
def explain_iq(who: str, what: str) -> Iterator[None]:
    """Turn slixmpp's IqError/IqTimeout into a sentence for the matrix (who asked, what, the answer)."""
    try:
        yield
    except IqError as err:
        e = err.iq["error"]
        text = f": {e['text']}" if e["text"] else ""
        raise AssertionError(f"{who}: {what} refused by the server ({e['type']}/{e['condition']}{text})") from None
    except IqTimeout:
        raise AssertionError(f"{who}: {what} got no answer from the server") from None


def insecure_context() -> ssl.SSLContext:
    """Self-signed certificates everywhere in this tier: clients disable verification."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


class SlixClient(slixmpp.ClientXMPP):
    """ClientXMPP that records what it receives and connects to the target's host/port.

    ``direct_tls`` selects XEP-0368 direct TLS on ``target.direct_tls_port``; otherwise STARTTLS
    (RFC 6120 §5) on ``target.port`` with plaintext fallback disabled, so a login proves TLS.
    Subscription requests are never auto-answered: scenarios drive RFC 6121 §3 explicitly.
    """

    def __init__(self, account: Account, target: Target, resource: str, *, direct_tls: bool = False) -> None:
        super().__init__(f"{account.jid}/{resource}", account.password)
        self.account: Account = account
        self.target: Target = target
        self.direct_tls = direct_tls
        self.ssl_context = insecure_context()
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        self.enable_plaintext = False
        self.reconnect_max_attempts = 0
        self.roster.auto_authorize = None  # type: ignore[assignment]  # None: leave requests alone (False denies them)
        self.roster.auto_subscribe = False
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0050")  # registers the <command/> stanza plugin
        self.register_plugin("xep_0203")  # <delay/> on offline messages
        self.received: list[Any] = []
        self._changed = asyncio.Event()
        self._session = asyncio.Event()
        self._auth_failed: str | None = None
        self._disconnected: str | None = None
        self.add_event_handler("session_start", lambda _e: self._session.set())
        self.add_event_handler("failed_all_auth", self._on_auth_failed)
        self.add_event_handler("disconnected", self._on_disconnected)
        self.add_event_handler("message", self._record)
        self.add_event_handler("presence", self._record)
        self.add_event_handler("roster_update", self._record)

    # -- recording --------------------------------------------------------------------------------

    def _record(self, stanza: Any) -> None:
        self.received.append(stanza)
        self._changed.set()

    def _on_auth_failed(self, _event: Any) -> None:
        self._auth_failed = "SASL authentication failed"
        self._session.set()

    def _on_disconnected(self, reason: Any) -> None:
        self._disconnected = str(reason) or "disconnected"
        self._session.set()
        self._changed.set()

    @property
    def name(self) -> str:
        """Short name for messages (localpart)."""
        return self.account.local

    # -- session ----------------------------------------------------------------------------------

    async def login(self, timeout: float = 15.0) -> None:  # noqa: ASYNC109
        """Connect, negotiate TLS, authenticate and bind; raise with a readable reason if not."""
        port = self.direct_tls_port_or_fail() if self.direct_tls else self.target.port
        self.connect(self.target.host, port)
        try:
            await asyncio.wait_for(self._session.wait(), timeout)
        except TimeoutError:
            self.abort()
            mode = "direct TLS" if self.direct_tls else "STARTTLS"
            raise AssertionError(
                f"{self.account.jid} did not finish {mode} login to {self.target.host}:{port} within {timeout:.0f}s"
            ) from None
        if self._auth_failed:
            self.abort()
            raise AssertionError(f"{self.account.jid}: {self._auth_failed}")
        if self._disconnected and not self.is_connected():
            raise AssertionError(f"{self.account.jid}: stream closed during login ({self._disconnected})")

    def direct_tls_port_or_fail(self) -> int:
        if self.target.direct_tls_port is None:
            raise AssertionError(f"{self.target.name} has no direct TLS port")
        return self.target.direct_tls_port

    def is_connected(self) -> bool:
        return bool(self.transport is not None and not self.transport.is_closing())

    def tls_version(self) -> str | None:
        """Negotiated TLS version of the live stream, or None when the stream is not encrypted."""
        if self.transport is None:
            return None
        obj = self.transport.get_extra_info("ssl_object")
        return None if obj is None else str(obj.version())

    async def close(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Close the stream politely (</stream:stream>), bounded."""
        if not self.is_connected():
            return
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.disconnect(wait=1.0), timeout)
        if self.is_connected():
            self.abort()

    # -- waiting ----------------------------------------------------------------------------------

    async def wait_for(self, pred: StanzaPred, what: str, timeout: float = 10.0) -> Any:  # noqa: ASYNC109
        """First received stanza matching ``pred`` (also ones received earlier)."""
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            for st in self.received[seen:]:
                if pred(st):
                    return st
            seen = len(self.received)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name} did not receive {what} within {timeout:.0f}s")
            if self._disconnected and not self.is_connected():
                raise AssertionError(f"{self.name} lost its stream ({self._disconnected}) waiting for {what}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(left, 0.5))

    async def wait_message(self, sender: str, body: str, timeout: float = 10.0) -> Message:  # noqa: ASYNC109
        """A message from bare JID ``sender`` whose body is ``body``."""
        msg: Message = await self.wait_for(
            lambda st: isinstance(st, Message) and st["from"].bare == sender and st["body"] == body,
            f"the message {body!r} from {sender}",
            timeout,
        )
        return msg

    async def wait_presence(
        self,
        sender: str,
        ptype: str,
        timeout: float = 10.0,  # noqa: ASYNC109
        status: str | None = None,
    ) -> Presence:
        """Presence of ``ptype`` ('available', 'subscribe', ...) from bare JID ``sender``."""

        def match(st: Any) -> bool:
            if not isinstance(st, Presence) or st["from"].bare != sender:
                return False
            if status is not None and st["status"] != status:
                return False
            return bool(st["type"] == ptype)

        extra = f" with status {status!r}" if status else ""
        p: Presence = await self.wait_for(match, f"presence type={ptype}{extra} from {sender}", timeout)
        return p

    async def wait_roster_push(
        self,
        contact: str,
        timeout: float = 10.0,  # noqa: ASYNC109
        subscription: str | None = None,
    ) -> Iq:
        """A roster push (RFC 6121 §2.1.6: iq type=set) naming ``contact``."""

        def match(st: Any) -> bool:
            if not isinstance(st, Iq) or st["type"] != "set":
                return False
            item = st["roster"]["items"].get(slixmpp.JID(contact))
            if item is None:
                return False
            return subscription is None or item.get("subscription") == subscription

        extra = f" with subscription={subscription}" if subscription else ""
        iq: Iq = await self.wait_for(match, f"a roster push for {contact}{extra}", timeout)
        return iq

    async def go_available(self, within: float = 5.0) -> bool:
        """Send initial presence and wait for the server's echo to our own resource (RFC 6121 §4.2.2).

        The echo shows the server has made this session available, so a message sent by another
        client right after cannot overtake it and land in offline storage instead. Only a sync aid: a
        server without the echo just costs ``within`` seconds (returns False).
        """
        self.send_presence()
        me = str(self.boundjid)
        with contextlib.suppress(AssertionError):
            await self.wait_for(
                lambda st: isinstance(st, Presence) and str(st["from"]) == me and st["type"] == "available",
                "its own initial presence",
                within,
            )
            return True
        return False

    def bounce_note(self) -> str:
        """Errors the server sent back for our messages (RFC 6120 §8.3), for failure reasons."""
        errs = [
            f"{st['error']['type']}/{st['error']['condition']}"
            for st in self.received
            if isinstance(st, Message) and st["type"] == "error"
        ]
        return f"; {self.name} got message error(s) {', '.join(errs)}" if errs else ""

    async def expect_delivery(self, receiver: SlixClient, body: str, timeout: float = 10.0) -> Message:  # noqa: ASYNC109
        """Wait until ``receiver`` gets ``body`` from us; on failure name any bounce we received."""
        try:
            return await receiver.wait_message(self.boundjid.bare, body, timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}{self.bounce_note()}") from None

    # -- roster -----------------------------------------------------------------------------------

    async def roster_items(self, timeout: float = 10.0) -> dict[str, dict[str, Any]]:  # noqa: ASYNC109
        """Fresh roster get (RFC 6121 §2.1.3): bare JID -> item attributes."""
        iq = self.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        with explain_iq(self.name, "roster get (RFC 6121 §2.1.3)"):
            resp = await iq.send(timeout=timeout)  # type: ignore[no-untyped-call]
        return {str(j): dict(v) for j, v in resp["roster"]["items"].items()}

    async def roster_set(self, contact: str, name: str | None = None, remove: bool = False) -> None:
        """Roster set (RFC 6121 §2.1.5) or remove (§2.5), awaiting the server's result."""
        iq = self.Iq()
        iq["type"] = "set"
        item: dict[str, Any] = {"subscription": "remove"} if remove else {"name": name or "", "groups": []}
        iq["roster"]["items"] = {contact: item}
        what = "roster remove (RFC 6121 §2.5)" if remove else "roster set (RFC 6121 §2.1.5)"
        with explain_iq(self.name, what):
            await iq.send(timeout=10)  # type: ignore[no-untyped-call]


@contextlib.asynccontextmanager
async def logged_in(
    target: Target,
    account: Account,
    resource: str = "interop",
    *,
    direct_tls: bool = False,
    initial_presence: bool = True,
    fetch_roster: bool = False,
) -> AsyncIterator[SlixClient]:
    """A logged-in SlixClient (initial presence sent), closed afterwards.

    ``fetch_roster`` makes it an "interested resource" (RFC 6121 §2.1.6) that gets roster pushes; it is
    off by default so that a missing roster does not hide whether messages, ping or disco work.
    """
    c = SlixClient(account, target, resource, direct_tls=direct_tls)
    try:
        await c.login()
        if fetch_roster:
            await c.roster_items()
        if initial_presence:
            await c.go_available()
        yield c
    finally:
        await c.close()


async def cleanup_roster(client: SlixClient, *contacts: str) -> None:
    """Remove ``contacts`` from the roster (RFC 6121 §2.5): leave an external server as found."""
    if not client.is_connected():
        return
    for jid in contacts:
        with contextlib.suppress(Exception):
            await client.roster_set(jid, remove=True)


async def ensure_absent(client: SlixClient, contact: str) -> None:
    """Start from a clean slate on a long-lived server: remove ``contact`` if a former run left it."""
    if contact in await client.roster_items():
        await client.roster_set(contact, remove=True)
        await client.wait_roster_push(contact, subscription="remove")
        # Later waits must not match stanzas of this clean-up.
        client.received.clear()


async def subscribe_both(a: SlixClient, b: SlixClient, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Full RFC 6121 §3 handshake so that both rosters end in subscription='both'.

    a adds b (roster set -> push), a subscribes, b approves and subscribes back, a approves.
    """
    ja, jb = a.boundjid.bare, b.boundjid.bare
    # Both become interested resources (RFC 6121 §2.1.6); leftovers of an earlier run are removed.
    await ensure_absent(a, jb)
    await ensure_absent(b, ja)
    await a.roster_set(jb, name=b.name)
    await a.wait_roster_push(jb, timeout)
    a.send_presence(pto=jb, ptype="subscribe")
    await b.wait_presence(ja, "subscribe", timeout)
    b.send_presence(pto=ja, ptype="subscribed")
    await a.wait_presence(jb, "subscribed", timeout)
    b.send_presence(pto=ja, ptype="subscribe")
    await a.wait_presence(jb, "subscribe", timeout)
    a.send_presence(pto=jb, ptype="subscribed")
    await b.wait_presence(ja, "subscribed", timeout)
    await a.wait_roster_push(jb, timeout, subscription="both")
    await b.wait_roster_push(ja, timeout, subscription="both")
