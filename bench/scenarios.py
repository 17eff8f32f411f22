"""The workloads of issue 12, each measured against one running server.

Every scenario returns a flat dict of figures plus the CPU seconds the server and the generator used
while it was measured (utime+stime from /proc): on a shared 2-core machine, CPU per operation is the
most honest figure, and the generator's share shows whether it, rather than the server, was the limit.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from bench import xmpp
from bench.servers import PASSWORD, Server

T = TypeVar("T")


@dataclass
class Settings:
    """Sizes of the workloads (``--quick`` shrinks them)."""

    logins: int = 500
    login_concurrency: int = 50
    msg_duration: float = 20.0
    msg_warmup: float = 2.0
    msg_window: int = 10  # in-flight messages per sender
    msg_pairs: tuple[int, ...] = (100, 5)
    msg_tls: bool = True
    idle: int = 2000
    fanout_contacts: int = 200
    fanout_rounds: int = 5
    offline: int = 1000

    @classmethod
    def quick(cls) -> Settings:
        """Short run: seconds per server instead of minutes."""
        return cls(logins=200, msg_duration=5.0, msg_warmup=1.0, idle=500, fanout_rounds=3)


def gen_cpu() -> float:
    """CPU seconds used by this (generator) process so far."""
    t = os.times()
    return t.user + t.system


def pct(values: list[float], q: float) -> float:
    """The q-quantile (0..1) by nearest rank; NaN for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def machine_busy() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat, first line; iowait counts as idle)."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:9]]
    return (sum(vals) - vals[3] - vals[4]) / _CLK_TCK


class Meter:
    """Wall time and CPU of the server, of the generator and of everything else over a measured window.

    "Everything else" (other processes on the shared machine) is what makes throughput figures noisy
    here; it is reported so a reader can tell a quiet run from a contended one.
    """

    def __init__(self, server: Server) -> None:
        self.server = server
        self.t0 = time.perf_counter()
        self.s0 = server.cpu()
        self.g0 = gen_cpu()
        self.m0 = machine_busy()

    def done(self) -> dict[str, float]:
        """Figures since construction."""
        wall = time.perf_counter() - self.t0
        server, gen = self.server.cpu() - self.s0, gen_cpu() - self.g0
        other = max(0.0, machine_busy() - self.m0 - server - gen)
        return {"wall_s": wall, "server_cpu_s": server, "gen_cpu_s": gen, "other_cpu_s": other,
                "other_load_cores": other / wall if wall > 0 else 0.0}


async def bounded(total: int, concurrency: int, fn: Callable[[int], Awaitable[T]]) -> list[T | BaseException]:
    """Run fn(0..total-1) with at most ``concurrency`` at a time; exceptions are returned, not raised."""
    results: list[T | BaseException] = [RuntimeError("not run")] * total
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            try:
                results[i] = await fn(i)
            except Exception as exc:  # noqa: BLE001 - a failed login is a measured outcome
                results[i] = exc

    await asyncio.gather(*(worker() for _ in range(min(concurrency, total))))
    return results


def _errors(results: list[Any]) -> tuple[int, str]:
    errs = [r for r in results if isinstance(r, BaseException)]
    return len(errs), (f"{type(errs[0]).__name__}: {errs[0]}" if errs else "")


async def ensure_accounts(server: Server, names: list[str], concurrency: int = 25) -> dict[str, Any]:
    """Register accounts by XEP-0077 in-band registration (the same way on every server)."""
    m = Meter(server)

    async def reg(i: int) -> None:
        await asyncio.wait_for(xmpp.register(server.host, server.port, server.domain, names[i], PASSWORD), 30)

    res = await bounded(len(names), concurrency, reg)
    n_err, first = _errors(res)
    if n_err:
        raise xmpp.XMPPError(f"{n_err}/{len(names)} registrations failed, first: {first}")
    out = m.done()
    return {"accounts": len(names), "per_s": len(names) / out["wall_s"], **out}


async def login_many(server: Server, names: list[str], tls: bool, concurrency: int,
                     presence: bool = False) -> list[xmpp.Connection]:
    """Log in these accounts and keep the connections; raises if any login fails."""

    async def one(i: int) -> xmpp.Connection:
        c = await asyncio.wait_for(
            xmpp.login(server.host, server.port, server.domain, names[i], PASSWORD, tls), 60)
        if presence:
            c.send("<presence/>")
        return c

    res = await bounded(len(names), concurrency, one)
    conns = [r for r in res if isinstance(r, xmpp.Connection)]
    n_err, first = _errors(res)
    if n_err:
        for c in conns:
            c.abort()
        raise xmpp.XMPPError(f"{n_err}/{len(names)} logins failed, first: {first}")
    return conns


async def close_all(conns: list[xmpp.Connection], wait: float = 5.0) -> None:
    """Close the streams and wait (bounded) until the sockets are closed."""
    for c in conns:
        c.close()
    if conns:
        await asyncio.wait([asyncio.ensure_future(c.closed) for c in conns], timeout=wait)
    for c in conns:
        c.abort()


# --------------------------------------------------------------------------------------------- logins
async def logins(server: Server, s: Settings, tls: bool, names: list[str]) -> dict[str, Any]:
    """Full c2s logins (stream, [STARTTLS], SASL SCRAM-SHA-1, stream restart, bind), then </stream>.

    ``s.logins`` logins over ``names`` with ``s.login_concurrency`` in flight. An unmeasured warm-up
    pass first logs every account in once (no TLS), so that client-side SCRAM key derivation is cached
    (RFC 5802 section 5.1) and the measured window holds only server work plus the generator's
    protocol and TLS work.
    """
    n = s.logins

    async def one(i: int, tls_: bool) -> float:
        t = time.perf_counter()
        c = await asyncio.wait_for(
            xmpp.login(server.host, server.port, server.domain, names[i % len(names)], PASSWORD, tls_), 60)
        dt = time.perf_counter() - t
        c.close()
        return dt

    await bounded(min(n, len(names)), s.login_concurrency, lambda i: one(i, False))
    await asyncio.sleep(0.5)
    m = Meter(server)
    res = await bounded(n, s.login_concurrency, lambda i: one(i, tls))
    out = m.done()
    lat = [r for r in res if isinstance(r, float)]
    n_err, first = _errors(res)
    return {
        "logins": len(lat), "errors": n_err, "first_error": first, "concurrency": s.login_concurrency,
        "per_s": len(lat) / out["wall_s"], "p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
        "server_cpu_ms_per_login": out["server_cpu_s"] / max(1, len(lat)) * 1e3, **out,
    }


# ------------------------------------------------------------------------------------------- messages
BODY = "Benchmark message with a typical chat length, about a hundred bytes of text payload. 0123456789"


async def messages(server: Server, s: Settings, pairs: int, names: list[str]) -> dict[str, Any]:
    """Messages/s delivered end to end and latency, ``pairs`` pairs of online users.

    Every user sends ``type='chat'`` messages to its partner's bare JID, keeping ``s.msg_window`` in
    flight: each delivery releases the next send (closed loop, so the rate is what the server sustains).
    The send time travels in the stanza id. Counted only inside the measured window after a warm-up.
    """
    users = names[: 2 * pairs]
    conns = await login_many(server, users, s.msg_tls, min(50, len(users)), presence=True)
    await asyncio.sleep(1.0)  # own presence echoes, roster pushes: not part of the load
    state = {"running": True, "measuring": False, "sent": 0, "recv": 0, "recv_total": 0, "errors": 0}
    lat: list[float] = []
    domain = server.domain
    template = "<message to='{to}' type='chat' id='{t}'><body>" + BODY + "</body></message>"
    perf_ns = time.perf_counter_ns

    def make_handler(me: xmpp.Connection) -> Callable[[xmpp.Element], None]:
        def handler(el: xmpp.Element) -> None:
            if el.tag != "message":
                return
            if el.attrs.get("type") == "error":
                state["errors"] += 1
                return
            now = perf_ns()
            state["recv_total"] += 1
            if state["measuring"]:
                state["recv"] += 1
                try:
                    lat.append((now - int(el.attrs["id"])) / 1e9)
                except (KeyError, ValueError):
                    pass
            # a delivery to me frees a slot of my partner, who keeps sending to me; the partner is
            # modelled here by replying on my connection (each side runs the same closed loop)
            if state["running"]:
                partner = partners[id(me)]
                partner[0].send(template.format(to=partner[1], t=perf_ns()))
                state["sent"] += 1

        return handler

    partners: dict[int, tuple[xmpp.Connection, str]] = {}
    for i in range(pairs):
        a, b = conns[2 * i], conns[2 * i + 1]
        ua, ub = users[2 * i], users[2 * i + 1]
        partners[id(b)] = (a, f"{ub}@{domain}")  # b received from a: a sends the next one to b
        partners[id(a)] = (b, f"{ua}@{domain}")
        a.handler = make_handler(a)
        b.handler = make_handler(b)
    for i in range(pairs):
        a, b = conns[2 * i], conns[2 * i + 1]
        for _ in range(s.msg_window):
            a.send(template.format(to=f"{users[2 * i + 1]}@{domain}", t=perf_ns()))
            b.send(template.format(to=f"{users[2 * i]}@{domain}", t=perf_ns()))
            state["sent"] += 2
    await asyncio.sleep(s.msg_warmup)
    state["measuring"] = True
    m = Meter(server)
    await asyncio.sleep(s.msg_duration)
    state["measuring"] = False
    out = m.done()
    state["running"] = False
    deadline = time.monotonic() + 10
    while state["recv_total"] < state["sent"] and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    lost = state["sent"] - state["recv_total"]
    await close_all(conns)
    rate = state["recv"] / out["wall_s"]
    return {
        "pairs": pairs, "window_per_sender": s.msg_window, "tls": s.msg_tls, "delivered": state["recv"],
        "per_s": rate, "p50_ms": pct(lat, 0.5) * 1e3, "p99_ms": pct(lat, 0.99) * 1e3,
        "lost_or_late": lost, "error_replies": state["errors"],
        "server_cpu_us_per_msg": out["server_cpu_s"] / max(1, state["recv"]) * 1e6,
        "gen_cpu_us_per_msg": out["gen_cpu_s"] / max(1, state["recv"]) * 1e6,
        # what one core running only the generator could drive (send + receive of each message)
        "gen_capacity_per_core": state["recv"] / out["gen_cpu_s"] if out["gen_cpu_s"] > 0 else float("nan"),
        "server_cpu_util": out["server_cpu_s"] / out["wall_s"],
        "gen_cpu_util": out["gen_cpu_s"] / out["wall_s"],
        **out,
    }


# ----------------------------------------------------------------------------------------------- idle
async def idle(server: Server, s: Settings, names: list[str]) -> dict[str, Any]:
    """Server RSS growth over ``s.idle`` idle authenticated connections (TLS, bound, available)."""
    await asyncio.sleep(1.0)
    rss0 = server.rss()
    m = Meter(server)
    conns = await login_many(server, names[: s.idle], True, 50, presence=True)
    login_part = m.done()
    await asyncio.sleep(3.0)
    rss1 = server.rss()
    await close_all(conns, wait=15)
    await asyncio.sleep(2.0)
    rss2 = server.rss()
    return {
        "connections": len(conns), "rss_before_kib": rss0, "rss_with_conns_kib": rss1,
        "rss_after_close_kib": rss2,
        "kib_per_conn": (rss1 - rss0) / max(1, len(conns)), "login_wall_s": login_part["wall_s"],
        "server_cpu_s": login_part["server_cpu_s"], "gen_cpu_s": login_part["gen_cpu_s"],
        "other_load_cores": login_part["other_load_cores"],
    }


# --------------------------------------------------------------------------------------------- fanout
async def _subscribe_all(server: Server, fan: xmpp.Connection, fan_user: str, contacts: list[xmpp.Connection],
                         contact_users: list[str]) -> int:
    """RFC 6121 section 3: mutual subscriptions between ``fan`` and each contact, done over the wire.

    Contacts approve fan's request and ask back; fan approves. Returns the roster items with
    subscription='both' afterwards.
    """
    d = server.domain
    fan_bare = f"{fan_user}@{d}"

    def contact_handler(c: xmpp.Connection) -> Callable[[xmpp.Element], None]:
        def h(el: xmpp.Element) -> None:
            if el.tag == "presence" and el.attrs.get("type") == "subscribe":
                c.send(f"<presence to='{fan_bare}' type='subscribed'/>"
                       f"<presence to='{fan_bare}' type='subscribe'/>")

        return h

    def fan_handler(el: xmpp.Element) -> None:
        if el.tag == "presence" and el.attrs.get("type") == "subscribe":
            fan.send(f"<presence to='{el.attrs.get('from', '').split('/')[0]}' type='subscribed'/>")

    for c in contacts:
        c.handler = contact_handler(c)
    fan.handler = fan_handler
    # available, so that the contacts' requests are delivered now rather than stored (RFC 6121 3.1.3)
    fan.send("<presence/>")
    fan.send("".join(f"<presence to='{u}@{d}' type='subscribe'/>" for u in contact_users))
    deadline = time.monotonic() + 60
    both = 0
    while time.monotonic() < deadline:
        await asyncio.sleep(1.0)
        roster = await fan.iq("get", f"<query xmlns='{xmpp.NS_ROSTER}'/>")
        q = roster.find("query")
        both = sum(1 for it in (q.children if q else []) if it.attrs.get("subscription") == "both")
        if both >= len(contact_users):
            break
    return both


async def fanout(server: Server, s: Settings, fan_user: str, contact_users: list[str]) -> dict[str, Any]:
    """A user with ``n`` online contacts (subscription both) comes online: time until all have its presence.

    Also the time until the user has all its contacts' presences (the server's probes, RFC 6121
    section 4.3). ``s.fanout_rounds`` rounds; the user logs in (TLS) before the clock starts.
    """
    d = server.domain
    n = len(contact_users)
    contacts = await login_many(server, contact_users, False, 50, presence=True)
    fan = await xmpp.login(server.host, server.port, d, fan_user, PASSWORD, False)
    try:
        both = await _subscribe_all(server, fan, fan_user, contacts, contact_users)
    finally:
        fan.close()
    if both < n:
        await close_all(contacts)
        raise xmpp.XMPPError(f"only {both}/{n} roster items reached subscription 'both'")
    await asyncio.sleep(1.0)
    fan_prefix = f"{fan_user}@{d}/"
    rounds: list[dict[str, float]] = []
    for _ in range(s.fanout_rounds):
        got: dict[int, float] = {}
        all_in = asyncio.get_running_loop().create_future()

        def contact_handler(c: xmpp.Connection, got: dict[int, float] = got,
                            all_in: asyncio.Future[None] = all_in) -> Callable[[xmpp.Element], None]:
            def h(el: xmpp.Element) -> None:
                if (el.tag == "presence" and "type" not in el.attrs
                        and el.attrs.get("from", "").startswith(fan_prefix) and id(c) not in got):
                    got[id(c)] = time.perf_counter()
                    if len(got) == n and not all_in.done():
                        all_in.set_result(None)

            return h

        for c in contacts:
            c.handler = contact_handler(c)
        fan = await xmpp.login(server.host, server.port, d, fan_user, PASSWORD, True)
        seen: set[str] = set()
        fan_done: list[float] = []

        def fan_h(el: xmpp.Element, seen: set[str] = seen, fan_done: list[float] = fan_done) -> None:
            if el.tag == "presence" and "type" not in el.attrs:
                seen.add(el.attrs.get("from", "").split("/")[0])
                if len(seen) >= n and not fan_done:
                    fan_done.append(time.perf_counter())

        fan.handler = fan_h
        await asyncio.sleep(0.2)
        m = Meter(server)
        fan.send("<presence/>")
        try:
            await asyncio.wait_for(all_in, 60)
        except TimeoutError:
            pass
        t_end = time.perf_counter()
        deadline = time.monotonic() + 10
        while not fan_done and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        out = m.done()
        rounds.append({
            "all_contacts_ms": (max(got.values()) - m.t0) * 1e3 if len(got) == n else float("nan"),
            "contacts_reached": float(len(got)),
            "fan_got_all_ms": (fan_done[0] - m.t0) * 1e3 if fan_done else float("nan"),
            "server_cpu_s": out["server_cpu_s"],
            "wall_to_all_s": t_end - m.t0,
        })
        fan.close()
        await asyncio.sleep(1.0)  # unavailable presence goes out to the contacts
    await close_all(contacts)
    ok = [r["all_contacts_ms"] for r in rounds if r["all_contacts_ms"] == r["all_contacts_ms"]]
    fan_ok = [r["fan_got_all_ms"] for r in rounds if r["fan_got_all_ms"] == r["fan_got_all_ms"]]
    return {
        "contacts": n, "rounds": len(rounds), "complete_rounds": len(ok),
        "median_ms": statistics.median(ok) if ok else float("nan"), "min_ms": min(ok) if ok else float("nan"),
        "fan_got_all_median_ms": statistics.median(fan_ok) if fan_ok else float("nan"),
        "server_cpu_ms_per_round": statistics.mean(r["server_cpu_s"] for r in rounds) * 1e3,
        "rounds_detail": rounds,
    }


# -------------------------------------------------------------------------------------------- offline
async def offline(server: Server, s: Settings, sender: str, receiver: str) -> dict[str, Any]:
    """Time to deliver an offline backlog of ``s.offline`` messages (RFC 6121 section 8.5.2.2.1).

    The sender sends the messages to the offline receiver's bare JID, then an iq ping (XEP-0199) whose
    answer shows the server has handled them. The receiver then logs in; the clock runs from its
    initial presence to the last message.
    """
    d = server.domain
    n = s.offline
    snd = await xmpp.login(server.host, server.port, d, sender, PASSWORD, True)
    m = Meter(server)
    chunk = 100
    for i in range(0, n, chunk):
        snd.send("".join(
            f"<message to='{receiver}@{d}' type='chat' id='o{j}'><body>{BODY} #{j}</body></message>"
            for j in range(i, min(n, i + chunk))))
        await asyncio.sleep(0)
    await asyncio.wait_for(snd.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to=d), 120)
    store = m.done()
    snd.close()
    await asyncio.sleep(1.0)
    rcv = await xmpp.login(server.host, server.port, d, receiver, PASSWORD, True)
    got: set[str] = set()
    done = asyncio.get_running_loop().create_future()

    def h(el: xmpp.Element) -> None:
        if el.tag == "message" and el.find("body") is not None:
            got.add(el.attrs.get("id", ""))
            if len(got) >= n and not done.done():
                done.set_result(None)

    rcv.handler = h
    m = Meter(server)
    rcv.send("<presence/>")
    try:
        await asyncio.wait_for(done, 120)
    except TimeoutError:
        pass
    out = m.done()
    rcv.close()
    return {
        "messages": n, "delivered": len(got), "store_s": store["wall_s"], "store_per_s": n / store["wall_s"],
        "deliver_s": out["wall_s"], "deliver_per_s": len(got) / out["wall_s"],
        "server_cpu_s": out["server_cpu_s"] + store["server_cpu_s"],
        "other_load_cores": out["other_load_cores"],
    }
