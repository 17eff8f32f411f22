"""One worker's part in a multi-process server: a mirror of the other workers' sessions, and the rules
that decide where a stanza is handled.

How a stanza travels when the server runs as N worker processes (``[server] workers``):

* **Session directory.** Every worker announces its bound sessions (bind, presence and priority changes,
  end) to the others, which keep a :class:`RemoteSession` for each in their own :class:`SessionRegistry`.
  The router and every module therefore see all of a user's resources, whichever worker holds them, and
  RFC 6121 delivery rules (highest priority, available resources, offline storage) run unchanged. Handing a
  stanza to a remote session writes it to the owning worker, which writes the bytes to its client.
* **Per-user state has one home.** Modules that cache per-user state and change it (the roster with its
  subscription states, the blocklist) declare which stanzas read-modify-write it
  (:meth:`~xmppim.plugins.api.PluginContext.pin_to_user`). Those stanzas are handled on the user's *home
  worker* (a stable hash of the bare JID), so each user's state has a single writer; the home announces the
  change (:meth:`~xmppim.plugins.api.PluginContext.broadcast`) so other workers drop their cached copy.
  Everything else — messages, presence broadcasts, IQs to full JIDs — is handled where it arrives.
* **Components** connected to one worker are reachable from all; IQ answers to a request sent by another
  worker are passed around until the worker that waits for them resolves them.

What this does not promise: a worker that dies takes its connections with it (the others broadcast
``unavailable`` for its sessions and forget them); a stanza already handed to a worker that dies is lost
with it, as with a single process that dies. Rate limits and the unauthenticated-connection cap count per
worker. Plugin caches not covered by a broadcast (the ads plugin's frequency caps) are per worker.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree.ElementTree import Element

from ..bus.router import SERVER, ServerOrigin, StanzaEvent
from ..xml.serialize import serialize
from . import mesh as m

if TYPE_CHECKING:
    from ..server import Server

log = logging.getLogger("xmppim.cluster")

CLIENT_NS = "jabber:client"
PIN_SENDER = "cluster/pin-sender"
PIN_RECIPIENT = "cluster/pin-recipient"
PRIORITY_CLUSTER = 2000
"""Above every module: a stanza that belongs to another worker leaves before anything acts on it."""
MAX_HOPS = 2

Match = Callable[[StanzaEvent], bool]


def home_worker(bare_jid: str, size: int) -> int:
    """The worker that owns ``bare_jid``'s state: stable across processes and restarts (not ``hash()``)."""
    return zlib.crc32(bare_jid.encode()) % size


def _parse(data: bytes) -> Element:
    from ..modules.rfc6121_roster import fromstring_client

    return fromstring_client(data.decode())


class RemoteSession:
    """A session bound on another worker, as the local registry sees it (the ClientSession protocol)."""

    kind = "c2s"
    remote = True
    __slots__ = (
        "node", "worker", "sid", "full_jid", "bare_jid", "resource", "username", "domain", "name", "bound_at",
        "priority", "presence", "interested", "directed", "meta", "closed", "bound",
    )  # fmt: skip

    def __init__(self, node: ClusterNode, worker: int, sid: int, full_jid: str, bound_at: float) -> None:
        self.node = node
        self.worker = worker
        self.sid = sid
        self.full_jid = full_jid
        self.bare_jid, _, self.resource = full_jid.partition("/")
        self.username, _, self.domain = self.bare_jid.rpartition("@")
        self.name = full_jid
        self.bound_at = bound_at
        self.priority = 0
        self.presence: Element | None = None
        self.interested = False
        self.directed: set[str] = set()
        self.meta: dict[str, Any] = {}
        self.closed = False
        self.bound = True

    def deliver(self, stanza: Element) -> None:
        self.node.deliver_remote(self, stanza)

    def send(self, stanza: Element) -> None:
        self.deliver(stanza)

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        payload = {"full": self.full_jid, "sid": self.sid, "condition": condition, "text": text}
        self.node.mesh.send(self.worker, m.CLOSE, json.dumps(payload).encode())

    def __repr__(self) -> str:
        return f"<RemoteSession {self.full_jid} on worker {self.worker}>"


class RemoteComponent:
    """An external component connected to another worker."""

    def __init__(self, node: ClusterNode, worker: int, domain: str) -> None:
        self.node = node
        self.worker = worker
        self.domain = domain

    def deliver(self, stanza: Element) -> None:
        self.node.mesh.send(self.worker, m.TO_COMPONENT, self.domain.encode() + b"\0" + serialize(stanza, CLIENT_NS))


class ClusterNode:
    def __init__(self, server: Server, index: int, size: int, directory: Path) -> None:
        self.server = server
        self.index = index
        self.size = size
        self.mesh = m.Mesh(directory, index, size, self.on_frame, self.on_peer_lost, self.on_peer_connected)
        self.origin = ServerOrigin("cluster")
        self.remote: dict[tuple[int, int], RemoteSession] = {}
        self.local_sid: dict[int, int] = {}
        """id(local session) → the sid announced for it."""
        self._sids = itertools.count(1)
        self._hops = 0
        self._unhooks: list[Callable[[], None]] = []

    # ------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        bus = self.server.bus
        hooks: list[tuple[str, Any]] = [
            ("stanza/in", self.on_stanza_in),
            ("presence/bare", self.on_recipient_side),
            ("presence/full", self.on_recipient_side),
            ("iq/response", self.on_iq_response),
            ("session/bound", self.on_bound),
            ("session/closed", self.on_closed),
            ("presence/broadcast", self.on_presence_changed),
            ("component/connected", self.on_component_up),
            ("component/disconnected", self.on_component_down),
        ]
        for name, fn in hooks:
            self._unhooks.append(bus.hook(name, fn, PRIORITY_CLUSTER, owner="cluster"))
        await self.mesh.start()

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.mesh.connected.wait(), timeout)
            return True
        except TimeoutError:
            return False

    async def stop(self) -> None:
        for u in self._unhooks:
            u()
        await self.mesh.stop()

    def home(self, bare_jid: str) -> int:
        return home_worker(bare_jid, self.size)

    # ------------------------------------------------- where stanzas go
    def on_stanza_in(self, ev: StanzaEvent) -> Any:
        """A client's stanza that changes its own per-user state goes to the user's home worker."""
        o = ev.origin
        if o.kind != "c2s" or getattr(o, "remote", False):
            return None
        home = self.home(o.bare_jid)
        if home == self.index or not self._pinned(PIN_SENDER, ev):
            return None
        self.mesh.send(home, m.ROUTE, o.full_jid.encode() + b"\0" + serialize(ev.stanza, CLIENT_NS))
        return True

    def on_recipient_side(self, ev: StanzaEvent) -> Any:
        """The destination side of a stanza that changes the recipient's state runs on its home worker."""
        if not ev.node:
            return None
        home = self.home(ev.bare_to)
        if home == self.index or not self._pinned(PIN_RECIPIENT, ev):
            return None
        self.mesh.send(home, m.DISPATCH, serialize(ev.stanza, CLIENT_NS))
        return True

    def _pinned(self, rules: str, ev: StanzaEvent) -> bool:
        """Whether a plugin declared (``pin_to_user``) that ``ev`` changes per-user state."""
        return any(ev.kind in kinds and match(ev) for kinds, match in self.server.items.get(rules))

    def on_iq_response(self, ev: StanzaEvent) -> Any:
        if self.server.router.resolve_iq(ev.stanza):
            return True
        if ev.origin is not self.origin:
            self.mesh.broadcast(m.IQ_RESPONSE, serialize(ev.stanza, CLIENT_NS))
        return True

    def deliver_remote(self, s: RemoteSession, stanza: Element) -> None:
        if self._hops >= MAX_HOPS:
            log.warning("not forwarding to %s again: the cluster's views of it disagree", s.full_jid)
            return
        head = f"{s.full_jid}\0{self._hops + 1}\0".encode()
        self.mesh.send(s.worker, m.DELIVER, head + serialize(stanza, CLIENT_NS))

    def broadcast(self, topic: str, data: Any) -> None:
        self.mesh.broadcast(m.NOTIFY, json.dumps({"topic": topic, "data": data}).encode())

    # --------------------------------------------- announcing our sessions
    def _announce(self, s: Any, peer: int | None = None) -> None:
        sid = self.local_sid.get(id(s))
        if sid is None:
            sid = self.local_sid[id(s)] = next(self._sids)
            s.meta.setdefault("cluster_bound_at", time.time())
        payload = json.dumps(
            {
                "full": s.full_jid,
                "sid": sid,
                "t": s.meta["cluster_bound_at"],
                "prio": s.priority,
                "presence": serialize(s.presence, CLIENT_NS).decode() if s.presence is not None else "",
            }
        ).encode()
        if peer is None:
            self.mesh.broadcast(m.SESSION, payload)
        else:
            self.mesh.send(peer, m.SESSION, payload)

    def on_bound(self, s: Any) -> None:
        if not getattr(s, "remote", False):
            self._announce(s)

    def on_presence_changed(self, b: Any) -> None:
        s = b.session
        if not getattr(s, "remote", False) and id(s) in self.local_sid:
            self._announce(s)

    def on_closed(self, s: Any) -> None:
        if getattr(s, "remote", False):
            return
        sid = self.local_sid.pop(id(s), None)
        if sid is not None:
            self.mesh.broadcast(m.GONE, json.dumps({"full": s.full_jid, "sid": sid}).encode())

    def on_component_up(self, domain: str) -> None:
        self.mesh.broadcast(m.COMPONENT, json.dumps({"domain": domain, "up": True}).encode())

    def on_component_down(self, domain: str) -> None:
        self.mesh.broadcast(m.COMPONENT, json.dumps({"domain": domain, "up": False}).encode())

    def on_peer_connected(self, peer: int) -> None:
        """A (re)started peer knows nothing about us: tell it our sessions and components."""
        for s in self.server.sessions:
            if not getattr(s, "remote", False) and id(s) in self.local_sid:
                self._announce(s, peer)
        for domain, comp in self.server.router.components.items():
            if comp is not None and not isinstance(comp, RemoteComponent) and domain in self.server.config.components:
                self.mesh.send(peer, m.COMPONENT, json.dumps({"domain": domain, "up": True}).encode())

    # -------------------------------------------------- frames from peers
    def on_frame(self, peer: int, ftype: int, payload: bytes) -> Any:
        if ftype == m.DELIVER:
            return self._deliver(payload)
        handler = self._handlers.get(ftype)
        if handler is None:
            log.warning("unknown cluster frame %d from worker %d", ftype, peer)
            return None
        return handler(self, peer, payload)

    def _deliver(self, payload: bytes) -> Any:
        full_b, hops_b, data = payload.split(b"\0", 2)
        full = full_b.decode()
        s = self.server.sessions.get(full)
        if s is not None and not getattr(s, "remote", False) and not getattr(s, "closed", False):
            s.write(data)  # type: ignore[attr-defined]
            return None
        # The session ended meanwhile: route it again here, as RFC 6121 says for a gone resource.
        stanza = _parse(data)
        self._hops = int(hops_b)
        try:
            return self._redispatch(stanza)
        finally:
            self._hops = 0

    def _redispatch(self, stanza: Element) -> Any:
        router = self.server.router
        to = stanza.get("to", "")
        from .. import jid as jidlib

        try:
            node, domain, resource = jidlib.split(to)
        except jidlib.InvalidJID:
            return None
        kind = {"message": "message", "presence": "presence", "iq": "iq"}.get(stanza.tag.rpartition("}")[2])
        if kind is None:
            return None
        ev = StanzaEvent(self.origin, stanza, kind, to, node, domain, resource)
        return router.redispatch(ev)

    def _hello(self, peer: int, payload: bytes) -> Any:
        gone = self._drop_worker(peer)
        return self._announce_departures(gone) if gone else None

    def _session(self, peer: int, payload: bytes) -> None:
        d = json.loads(payload)
        key = (peer, int(d["sid"]))
        proxy = self.remote.get(key)
        reg = self.server.sessions
        if proxy is None:
            proxy = RemoteSession(self, peer, key[1], d["full"], float(d["t"]))
            self.remote[key] = proxy
            old = reg.add(proxy)
            if old is not None and old is not proxy:
                self._conflict(proxy, old)
        proxy.priority = int(d["prio"])
        proxy.presence = _parse(d["presence"].encode()) if d["presence"] else None

    def _conflict(self, proxy: RemoteSession, old: Any) -> None:
        """Two workers bound the same full JID: the later bind wins (RFC 6120 §7.7.2.2), everywhere alike."""
        reg = self.server.sessions
        old_t = getattr(old, "bound_at", None) or old.meta.get("cluster_bound_at", 0.0)
        old_worker = getattr(old, "worker", self.index)
        if (old_t, old_worker) > (proxy.bound_at, proxy.worker):
            reg.add(old)  # ours (or another worker's) is newer: keep it; the other side closes its own
            return
        if not getattr(old, "remote", False):
            old.bound = False
            self.server.session_closed(old)
            old.close("conflict", "Replaced by a new connection with the same resource")

    def _gone(self, peer: int, payload: bytes) -> None:
        d = json.loads(payload)
        proxy = self.remote.pop((peer, int(d["sid"])), None)
        if proxy is not None:
            proxy.closed = True
            self.server.sessions.remove(proxy)

    def _close(self, peer: int, payload: bytes) -> None:
        d = json.loads(payload)
        s = self.server.sessions.get(d["full"])
        if s is not None and not getattr(s, "remote", False) and self.local_sid.get(id(s)) == d["sid"]:
            s.close(d.get("condition"), d.get("text"))

    def _route(self, peer: int, payload: bytes) -> Any:
        full_b, data = payload.split(b"\0", 1)
        origin = self.server.sessions.get(full_b.decode())
        if origin is None or not getattr(origin, "remote", False):
            log.info("dropping a stanza routed for %s: the session is gone", full_b.decode())
            return None
        return self.server.router.route(origin, _parse(data))

    def _dispatch(self, peer: int, payload: bytes) -> Any:
        return self._redispatch(_parse(payload))

    def _notify(self, peer: int, payload: bytes) -> Any:
        d = json.loads(payload)
        pending = self.server.bus.notify(f"cluster/{d['topic']}", d["data"])
        return asyncio.gather(*pending) if pending else None

    def _component(self, peer: int, payload: bytes) -> None:
        d = json.loads(payload)
        comps = self.server.router.components
        current = comps.get(d["domain"])
        if d["up"]:
            if current is None or isinstance(current, RemoteComponent):
                comps[d["domain"]] = RemoteComponent(self, peer, d["domain"])
        elif isinstance(current, RemoteComponent) and current.worker == peer:
            comps[d["domain"]] = None

    def _to_component(self, peer: int, payload: bytes) -> None:
        domain_b, data = payload.split(b"\0", 1)
        comp = self.server.router.components.get(domain_b.decode())
        if comp is not None and not isinstance(comp, RemoteComponent):
            comp.deliver(_parse(data))

    def _iq_response(self, peer: int, payload: bytes) -> None:
        self.server.router.resolve_iq(_parse(payload))

    _handlers: dict[int, Callable[[ClusterNode, int, bytes], Any]] = {
        m.HELLO: _hello,
        m.SESSION: _session,
        m.GONE: _gone,
        m.CLOSE: _close,
        m.ROUTE: _route,
        m.DISPATCH: _dispatch,
        m.NOTIFY: _notify,
        m.COMPONENT: _component,
        m.TO_COMPONENT: _to_component,
        m.IQ_RESPONSE: _iq_response,
    }

    # ------------------------------------------------------ a peer is gone
    def on_peer_lost(self, peer: int) -> None:
        gone = self._drop_worker(peer)
        if gone:
            self.server.spawn(self._announce_departures(gone))
        comps = self.server.router.components
        for domain, comp in list(comps.items()):
            if isinstance(comp, RemoteComponent) and comp.worker == peer:
                comps[domain] = None

    def _drop_worker(self, peer: int) -> list[RemoteSession]:
        """Forget the sessions of a worker that restarted or died (synchronously, before its new frames)."""
        gone = [p for (w, _sid), p in self.remote.items() if w == peer]
        for p in gone:
            del self.remote[(peer, p.sid)]
            p.closed = True
            self.server.sessions.remove(p)
        return gone

    async def _announce_departures(self, gone: list[RemoteSession]) -> None:
        """Their sessions ended without a word: tell their contacts (RFC 6121 §4.5.2). Each worker speaks
        for the users it is home to, so every contact hears it once."""
        roster = self.server.services.get("roster")
        presence = self.server.services.get("presence")
        if presence is None:
            return
        for p in gone:
            if p.presence is None or self.home(p.bare_jid) != self.index:
                continue
            if roster is not None:
                try:
                    await roster.get(p.bare_jid)
                except Exception:
                    log.exception("could not load %s's roster to announce its departure", p.bare_jid)
                    continue
            presence.go_unavailable(p)


__all__ = ["ClusterNode", "RemoteSession", "RemoteComponent", "home_worker", "PIN_SENDER", "PIN_RECIPIENT", "SERVER"]
