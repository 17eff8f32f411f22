"""Ads: paid ad delivery on the messaging bus that never touches encrypted or private content (issue 6).

What users see
    An ad is its own stanza from ``ads.<domain>``: a ``type='headline'`` message to the full JID of the
    session whose activity triggered it, with a plain-text body (the ad text and the click URL), an XEP-0066
    ``<x xmlns='jabber:x:oob'><url>CLICK-URL</url></x>``, an ``<ad xmlns='urn:xmppim:ads:0'>`` element
    (campaign id, optional image URL) and, if configured, XEP-0334 ``<no-store/>``/``<no-copy/>`` hints.
    Triggers: every Nth plain message the user sends (``message/pre-route`` at ``PRIORITY_LATE``, c2s
    origin, observe only) and the session's initial presence (``presence/initial``).  A user's message is
    never changed — except in the optional *footer* mode, where the copy routed to a local recipient gets
    an extra ``<ad xmlns='urn:xmppim:ads:0'>`` element (the body is never edited).

Safety (``e2ee.py``)
    End-to-end encryption (OMEMO both namespaces, OpenPGP ``urn:xmpp:openpgp:0``, ``jabber:x:encrypted``,
    EME) is detected by element before anything else is read; such messages, groupchat, errors, headlines,
    body-less stanzas (receipts, chat states) and OTR bodies are ignored entirely (no counter, no topic
    count, no footer).  No ads to: opted-out users, premium users, admins (``skip_admins``), users who
    blocked ``ads.<domain>`` (XEP-0191), users of opted-out domains, sessions without available presence,
    components.  Keyword topics are counted only for users who opted into them, per topic per user per day,
    in memory; message text is never stored.

Money (wallet, ``ctx.service("wallet")``)
    Campaign budget: escrow hold at creation (payer the advertiser, payee ``revenue``), impressions and
    clicks posted in batches (``final=False``), remainder released when the campaign ends (``engine.py``).
    An impression is counted only when the headline is actually delivered (``message/deliver`` of our
    stanza; a headline to a user with no session is dropped by the router and is not charged).  Premium
    (ad-free time): hold → post when the period starts → void on failure (``premium.py``).

Restarts (table ``ads_impressions``)
    Each delivered impression and each recorded click is stored when it happens; batches are posted
    mark → post (idempotency key ``ads:c<ID>:b<N>``) → complete, so a crash never bills twice and loses at
    most the events whose row was still being written (``engine.py`` explains each crash point).  On start
    the per-user and per-campaign cap windows are rebuilt from the last 24 hours of impressions, and stored
    events not yet posted are billed to their campaign's hold while it is open (settled without a charge otherwise).
    Charged clicks keep their token's nonce, so a click token counted before a restart is not charged again.

XMPP interfaces on ``ads.<domain>`` (and ``bot@ads.<domain>`` for chat)
    Ad-hoc commands: *Create campaign*, *Campaign stats* (own campaigns; admins see all), *Pause/stop
    campaign*, *Go ad-free*, *My ads settings* (premium status, opt-out, topics), *Admin: kill switch*.
    Chat: ``premium 30d``, ``status``, ``ads off``, ``ads on``, ``topics music,games``, ``help``.

HTTP
    ``GET /plugins/ads/c/{token}``: click → 302 to the advertiser's link and one charge per token; forged
    token → 403, expired → 410, no charge.  ``GET /plugins/ads/campaigns/{id}/stats`` with
    ``Authorization: Bearer <admin_token>`` → JSON (impressions, clicks, ctr, spend, ...).

Configuration ``[plugins.ads]`` (all optional)
    ``enabled`` (true)             master switch; false: nothing is delivered (commands still answer)
    ``kill_switch`` (false)        stop all delivery at once; also flipped at runtime by *Admin: kill switch*
    ``subdomain`` ("ads")          the component is ``<subdomain>.<first domain>``
    ``every_n_messages`` (10)      an ad after every Nth plain message a user sends; 0 disables
    ``at_login`` (true)            an ad after a session's initial presence
    ``cap_per_hour`` (2)           default per-user caps of a new campaign (advertisers may lower/raise)
    ``cap_per_day`` (10)
    ``user_cap_per_hour`` (4)      operator caps per user over all campaigns
    ``user_cap_per_day`` (20)
    ``no_store`` (true)            add XEP-0334 ``<no-store/>`` to ads
    ``no_copy`` (true)             add XEP-0334 ``<no-copy/>`` to ads
    ``footer`` (false)             footer mode (see above)
    ``skip_admins`` (true)         no ads to ``[server] admins``
    ``opt_out_domains`` ([])       virtual hosts whose users never get ads
    ``topics`` ({})                topic → keywords, e.g. ``{music = ["guitar", "concert"]}``
    ``admin_token`` ("")           bearer token of the stats HTTP route; empty refuses every request
    ``click_base_url`` ("")        public base of click URLs; default ``http://<domain>:<[http] port>``
    ``click_ttl_s`` (604800)       how long a click URL stays valid
    ``batch_size`` (20)            impressions per wallet post
    ``flush_interval_s`` (5.0)     pending impressions are posted at least this often
    ``premium_price_per_day`` (10) coins per ad-free day
    ``premium_max_days`` (365)
    ``max_campaign_days`` (90)     campaigns without an end (or a later one) end after this
    ``max_text`` (280)             longest ad text

Not done: rooms (groupchat is always skipped), MAM/carbons interplay (the server has neither yet; ads are
headlines with no-store/no-copy hints for when it does), persistence of click tokens that were not
charged (no budget left: after a restart such a token may be charged once if the campaign has budget
again), pruning of old ``ads_impressions`` rows, an admin CLI.
"""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import re
import secrets
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from xml.etree.ElementTree import Element, SubElement

from aiohttp import web

from xmppim.config import ConfigError
from xmppim.plugins.api import (
    PARAMS,
    PRIORITY_LATE,
    CommandError,
    CommandRequest,
    CommandResponse,
    Component,
    DeliverEvent,
    Field,
    Form,
    Plugin,
    StanzaEvent,
)

from .clicks import ClickSigner, TokenError, load_or_create_key
from .e2ee import plain_body
from .engine import AdEngine, Campaign, CampaignSpec, Policy, Reservation, Targeting, Viewer
from .premium import Premium, PremiumError
from .store import AdsStore, utc
from .tables import metadata as ads_metadata

NS = "urn:xmppim:ads:0"
OOB = "jabber:x:oob"
HINTS = "urn:xmpp:hints"
BODY = "{jabber:client}body"
MESSAGE = "{jabber:client}message"

HELP = """Ads commands:
premium 30d — buy 30 days without ads (premium alone shows your status)
status — your ad settings
ads off / ads on — stop or allow ads
topics music,games — topics you want ads about (topics none to clear)
help — this text"""


@dataclass
class AdsSettings:
    """``[plugins.ads]`` — see the module docstring for each key."""

    enabled: bool = True
    kill_switch: bool = False
    subdomain: str = "ads"
    every_n_messages: int = 10
    at_login: bool = True
    cap_per_hour: int = 2
    cap_per_day: int = 10
    user_cap_per_hour: int = 4
    user_cap_per_day: int = 20
    no_store: bool = True
    no_copy: bool = True
    footer: bool = False
    skip_admins: bool = True
    opt_out_domains: list[str] = field(default_factory=list)
    topics: dict[str, list[str]] = field(default_factory=dict)
    admin_token: str = ""
    click_base_url: str = ""
    click_ttl_s: int = 604800
    batch_size: int = 20
    flush_interval_s: float = 5.0
    premium_price_per_day: int = 10
    premium_max_days: int = 365
    max_campaign_days: int = 90
    max_text: int = 280

    def __post_init__(self) -> None:
        for name in ("every_n_messages", "click_ttl_s", "premium_max_days"):
            if getattr(self, name) < 0:
                raise ConfigError(f"[plugins.ads] {name} must not be negative")
        for name in ("cap_per_hour", "cap_per_day", "user_cap_per_hour", "user_cap_per_day", "batch_size",
                     "premium_price_per_day", "max_campaign_days", "max_text"):
            if getattr(self, name) < 1:
                raise ConfigError(f"[plugins.ads] {name} must be at least 1")
        if self.flush_interval_s <= 0:
            raise ConfigError("[plugins.ads] flush_interval_s must be positive")


@dataclass
class UserState:
    opt_out: bool = False
    topics: frozenset[str] = frozenset()
    counts: dict[str, int] = field(default_factory=dict)
    """Today's mentions per opted-in topic (never the text)."""
    day: date | None = None


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in re.split(r"[,\s]+", text) if x.strip())


def parse_time(text: str) -> datetime | None:
    text = text.strip()
    if not text:
        return None
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError("bad-request", f"Not a date/time (ISO 8601): {text}") from None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def parse_int(text: str, what: str, default: int | None = None) -> int:
    text = text.strip()
    if not text and default is not None:
        return default
    if not re.fullmatch(r"[0-9]{1,15}", text):
        raise CommandError("bad-request", f"{what} must be a whole number")
    return int(text)


class AdsPlugin(Plugin):
    name = "ads"
    version = "0.1.0"
    description = "Paid ads on the bus, never touching encrypted or private content"
    dependencies = ("wallet",)
    Config = AdsSettings
    metadata = ads_metadata
    migrations = str(Path(__file__).parent / "migrations" / "versions")

    clock: Callable[[], datetime] = staticmethod(lambda: datetime.now(UTC))

    async def start(self) -> None:
        if self.ctx.server_config.server.workers > 1:
            # Campaign budgets in flight, frequency caps and preference caches live in this process; with
            # several workers each would count on its own. Refuse rather than over-deliver or mis-bill.
            raise RuntimeError(
                "the ads plugin does not run with [server] workers > 1 yet (its budgets and frequency caps are "
                "per process): run one worker, or disable ads"
            )
        cfg: AdsSettings = self.ctx.config
        self.cfg = cfg
        self.kill = cfg.kill_switch
        self.ledger = self.ctx.service("wallet")
        self.store = AdsStore(self.ctx.db)
        policy = Policy(
            user_cap_hour=cfg.user_cap_per_hour,
            user_cap_day=cfg.user_cap_per_day,
            batch_size=cfg.batch_size,
            max_campaign_days=cfg.max_campaign_days,
            max_text=cfg.max_text,
            max_budget=int(getattr(getattr(self.ledger, "config", None), "max_transfer", 1_000_000)),
        )
        self.engine = AdEngine(self.ledger, self.store, policy, clock=self.clock)
        await self.engine.load()
        await self.engine.recover()
        self.premium = Premium(
            self.ledger, self.store, price_per_day=cfg.premium_price_per_day, max_days=cfg.premium_max_days,
            clock=self.clock,
        )
        await self.premium.recover()
        self.signer = ClickSigner(load_or_create_key(self.ctx.data_dir))
        self.used_clicks: dict[str, int] = {}
        """Nonce → latest possible expiry of click tokens already counted (one charge per token)."""
        since = datetime.fromtimestamp(time.time() - cfg.click_ttl_s, UTC)
        for row in await self.store.click_nonces_since(since):
            self.used_clicks[str(row.nonce)] = int(utc(row.at).timestamp()) + cfg.click_ttl_s
        self.users: dict[str, UserState] = {}
        self.counts: dict[str, int] = defaultdict(int)
        """Plain messages sent per user (the every-Nth trigger); exposed for tests."""
        self.inflight: dict[str, Reservation] = {}
        self.footers: dict[int, Reservation] = {}
        self.delivered_ads = 0
        self.keywords: dict[str, str] = {}
        for topic, words in cfg.topics.items():
            for w in words:
                self.keywords[w.lower()] = topic

        comp: Component = self.ctx.add_component(cfg.subdomain, "Ads", category="automation", type_="ads")
        self.comp = comp
        self.domain = comp.domain
        comp.features.add(NS)
        comp.chat(lambda bare, body, _msg: self.chat_command(bare, body))
        comp.command("create-campaign", "Create campaign", self.cmd_create)
        comp.command("campaign-stats", "Campaign stats", self.cmd_stats)
        comp.command("pause-campaign", "Pause/stop campaign", self.cmd_pause)
        comp.command("go-ad-free", "Go ad-free", self.cmd_premium)
        comp.command("settings", "My ads settings", self.cmd_settings)
        comp.command("admin-kill-switch", "Admin: kill switch", self.cmd_kill, allowed=self.ctx.is_admin)
        self.ctx.hook("message/pre-route", self.on_pre_route, PRIORITY_LATE)
        self.ctx.hook("message/deliver", self.on_deliver, PRIORITY_LATE)
        self.ctx.hook("presence/initial", self.on_initial)
        self.ctx.hook("session/bound", self.on_bound)
        self.ctx.hook("session/closed", self.on_closed)
        self.ctx.http_route("GET", "c/{token}", self.http_click)
        self.ctx.http_route("GET", "campaigns/{id}/stats", self.http_stats)
        self.ctx.add_timer(cfg.flush_interval_s, self.engine.tick)

    async def stop(self) -> None:
        """Post what is pending so that delivered impressions are billed before shutdown."""
        for c in list(self.engine.campaigns.values()):
            if c.pending_amount or c.recorded or c.recording or c.open_batch:
                try:
                    await self.engine.flush(c)
                except Exception:
                    self.ctx.log.exception("could not post pending impressions of campaign %s", c.id)

    # ------------------------------------------------------------ state
    def delivering(self) -> bool:
        return self.cfg.enabled and not self.kill

    async def user_state(self, user: str) -> UserState:
        st = self.users.get(user)
        if st is None:
            opt_out, topics = await self.store.get_prefs(user)
            st = self.users.setdefault(user, UserState(opt_out, frozenset(topics)))
            await self.premium.refresh(user)
        return st

    async def on_bound(self, session: Any) -> None:
        await self.user_state(session.bare_jid)

    def on_closed(self, session: Any) -> None:
        """Forget the cached state of users with no session left (memory stays bounded by online users)."""
        user = session.bare_jid
        if not self.ctx.sessions.is_online(user):
            self.users.pop(user, None)
            self.premium.until.pop(user, None)
            self.counts.pop(user, None)

    def is_blocked(self, user: str) -> bool:
        try:
            blocking = self.ctx.service("blocking")
        except KeyError:
            return False
        return bool(blocking.is_blocked(user, self.domain))

    def eligible(self, user: str, domain: str) -> UserState | None:
        """The user's state if ads may go to them now (synchronous: from caches only)."""
        if not self.delivering() or domain in self.cfg.opt_out_domains:
            return None
        if self.cfg.skip_admins and self.ctx.is_admin(user):
            return None
        st = self.users.get(user)
        if st is None or st.opt_out or self.premium.is_premium(user) or self.is_blocked(user):
            return None
        return st

    def viewer(self, user: str, domain: str, lang: str, st: UserState) -> Viewer:
        today = self.clock().date()
        counts = st.counts if st.day == today else {}
        return Viewer(user, domain, lang, st.topics, dict(counts))

    # --------------------------------------------------------- triggers
    def on_pre_route(self, ev: StanzaEvent) -> None:
        """Observe a user's outgoing message; never changes it (footer mode: routes a copy)."""
        if ev.origin.kind != "c2s":
            return None
        body = plain_body(ev.stanza)  # encryption is detected by element first, inside
        if body is None:
            return None
        if ev.domain == self.domain:
            return None  # a chat command to us is not conversation
        s = ev.origin
        user: str = s.bare_jid
        st = self.users.get(user)
        if st is not None and st.topics and self.keywords:
            self._count_topics(st, body)
        if self.cfg.footer:
            self._footer(ev, s)
        self.counts[user] += 1
        n = self.cfg.every_n_messages
        if n > 0 and self.counts[user] % n == 0 and self.delivering():
            self.ctx.spawn(self.show_ad(s))
        return None

    def _count_topics(self, st: UserState, body: str) -> None:
        today = self.clock().date()
        if st.day != today:
            st.day, st.counts = today, {}
        for word in re.findall(r"\w+", body.lower()):
            topic = self.keywords.get(word)
            if topic is not None and topic in st.topics:
                st.counts[topic] = st.counts.get(topic, 0) + 1

    def on_initial(self, session: Any) -> None:
        if self.cfg.at_login and self.delivering() and getattr(session, "kind", "c2s") == "c2s":
            self.ctx.spawn(self.show_ad(session))

    async def show_ad(self, s: Any) -> bool:
        """Reserve, send and settle one headline ad to session ``s``; True if it was delivered."""
        await self.user_state(s.bare_jid)
        if s.presence is None or not self._live(s):
            return False
        st = self.eligible(s.bare_jid, s.domain)
        if st is None:
            return False
        r = self.engine.reserve(self.viewer(s.bare_jid, s.domain, getattr(s, "lang", ""), st))
        if r is None:
            return False
        sid = f"ad-{r.id}-{secrets.token_hex(4)}"
        self.inflight[sid] = r
        try:
            res = self.ctx.send(self.ad_stanza(r.campaign, s.full_jid, sid))
            if res is not None:
                await res
        finally:
            self.inflight.pop(sid, None)
            if not r.settled:
                self.engine.failed(r)
        return r.ok

    def _live(self, s: Any) -> bool:
        return self.ctx.sessions.get(s.full_jid) is s

    def on_deliver(self, de: DeliverEvent) -> None:
        """Count an impression when our ad stanza is actually handed to a session (observe only)."""
        st = de.event.stanza
        if st.get("from") == self.domain and st.get("type") == "headline":
            r = self.inflight.get(st.get("id", ""))
            if r is not None and not r.settled:
                self.engine.delivered(r)
                self.delivered_ads += 1
        elif self.footers:
            r = self.footers.pop(id(st), None)
            if r is not None:
                self.engine.delivered(r)
                self.delivered_ads += 1
        return None

    def _footer(self, ev: StanzaEvent, sender: Any) -> None:
        """Footer mode: route a copy of a plain message with an extra ad element to a local recipient."""
        if not ev.node or ev.domain not in self.ctx.hosts or ev.bare_to == sender.bare_jid:
            return
        targets = self.ctx.sessions.available(ev.bare_to)
        st = self.eligible(ev.bare_to, ev.domain)
        if not targets or st is None:
            return
        r = self.engine.reserve(self.viewer(ev.bare_to, ev.domain, getattr(targets[0], "lang", ""), st))
        if r is None:
            return
        dup = copy.deepcopy(ev.stanza)
        dup.append(self._ad_element(r.campaign))
        ev.stanza = dup
        self.footers[id(dup)] = r

        def expire() -> None:
            if self.footers.pop(id(dup), None) is not None:
                self.engine.failed(r)

        asyncio.get_running_loop().call_later(5.0, expire)

    # ------------------------------------------------------------ stanzas
    def click_url(self, c: Campaign) -> str:
        base = self.cfg.click_base_url.rstrip("/") or (
            f"http://{self.ctx.default_domain}:{self.ctx.server_config.http.port}"
        )
        token = self.signer.make(c.id, int(time.time()) + self.cfg.click_ttl_s)
        return f"{base}/plugins/ads/c/{token}"

    def _ad_element(self, c: Campaign, url: str | None = None) -> Element:
        ad = Element(f"{{{NS}}}ad", {"campaign": str(c.id)})
        SubElement(ad, f"{{{NS}}}text").text = c.text
        SubElement(ad, f"{{{NS}}}url").text = url or self.click_url(c)
        if c.image_url:
            SubElement(ad, f"{{{NS}}}image").text = c.image_url
        return ad

    def ad_stanza(self, c: Campaign, to: str, sid: str) -> Element:
        url = self.click_url(c)
        m = Element(MESSAGE, {"type": "headline", "from": self.domain, "to": to, "id": sid})
        SubElement(m, BODY).text = f"Sponsored: {c.text}\n{url}"
        x = SubElement(m, f"{{{OOB}}}x")
        SubElement(x, f"{{{OOB}}}url").text = url
        SubElement(x, f"{{{OOB}}}desc").text = c.text
        m.append(self._ad_element(c, url))
        if self.cfg.no_store:
            SubElement(m, f"{{{HINTS}}}no-store")
        if self.cfg.no_copy:
            SubElement(m, f"{{{HINTS}}}no-copy")
        return m

    # ---------------------------------------------------------------- HTTP
    async def http_click(self, request: web.Request) -> web.StreamResponse:
        token = request[PARAMS]["token"]
        now = time.time()
        try:
            click = self.signer.check(token, now)
        except TokenError as e:
            return web.Response(status=e.status, text=f"{e}\n")
        c = self.engine.campaigns.get(click.campaign_id)
        if c is None:
            return web.Response(status=410, text="campaign gone\n")
        for n, exp in list(self.used_clicks.items()):
            if exp <= now:
                del self.used_clicks[n]
        if click.nonce not in self.used_clicks:
            self.used_clicks[click.nonce] = click.expires
            self.engine.click(c.id, click.nonce)
        return web.Response(status=302, headers={"Location": c.link})

    async def http_stats(self, request: web.Request) -> web.StreamResponse:
        want = self.cfg.admin_token
        got = request.headers.get("Authorization", "")
        if not want or not hmac.compare_digest(got.encode(), f"Bearer {want}".encode()):
            return web.Response(status=401 if not got else 403, text="forbidden\n")
        raw = request[PARAMS]["id"]
        c = self.engine.campaigns.get(int(raw)) if raw.isdigit() else None
        if c is None:
            return web.Response(status=404, text="no such campaign\n")
        return web.Response(text=json.dumps(c.stats()), content_type="application/json")

    # --------------------------------------------------------------- chat
    async def chat_command(self, user: str, text: str) -> str:
        words = text.split()
        cmd = words[0].lower()
        st = await self.user_state(user)
        if cmd == "premium":
            if len(words) == 1:
                return self.premium.status_text(user)
            m = re.fullmatch(r"([0-9]{1,4})\s*d?(ays?)?", " ".join(words[1:]).lower())
            if not m:
                return "Usage: premium 30d"
            return await self._buy(user, int(m.group(1)))
        if cmd == "status":
            return self._status(user, st)
        if cmd == "ads" and len(words) == 2 and words[1].lower() in ("on", "off"):
            await self._save_prefs(user, words[1].lower() == "off", st.topics)
            return "Ads are off for you." if st.opt_out else "Ads are on for you."
        if cmd == "topics":
            wanted = set(parse_list(" ".join(words[1:]).lower())) - {"none"}
            unknown = wanted - set(self.cfg.topics)
            if unknown:
                return f"Unknown topics: {', '.join(sorted(unknown))}. Known: {', '.join(sorted(self.cfg.topics))}"
            await self._save_prefs(user, st.opt_out, frozenset(wanted))
            return f"Topics: {', '.join(sorted(wanted)) or 'none'}"
        if cmd in ("help", "?"):
            return HELP
        return f"Unknown command {cmd!r}.\n{HELP}"

    async def _buy(self, user: str, days: int) -> str:
        try:
            p = await self.premium.buy(user, days)
        except PremiumError as e:
            return f"Sorry: {e}"
        except Exception as e:
            cond = getattr(e, "condition", None)
            if cond is None:
                raise
            return f"Sorry: {cond}: {getattr(e, 'text', '') or cond}"
        balance = await self.ledger.balance(user)
        return (
            f"Ad-free until {p.ends_at:%Y-%m-%d %H:%M} UTC ({p.price} coins paid). Your balance: {balance}"
        )

    def _status(self, user: str, st: UserState) -> str:
        return (
            f"{self.premium.status_text(user)}\nAds: {'off' if st.opt_out else 'on'}\n"
            f"Topics: {', '.join(sorted(st.topics)) or 'none'}"
        )

    async def _save_prefs(self, user: str, opt_out: bool, topics: frozenset[str]) -> None:
        await self.store.set_prefs(user, opt_out, tuple(topics), self.clock())
        st = self.users.setdefault(user, UserState())
        st.opt_out, st.topics = opt_out, topics
        st.counts = {k: v for k, v in st.counts.items() if k in topics}

    # ------------------------------------------------------------- ad-hoc
    def _mine(self, user: str) -> list[Campaign]:
        admin = self.ctx.is_admin(user)
        return [c for c in self.engine.campaigns.values() if admin or c.advertiser == user]

    @staticmethod
    def _label(c: Campaign) -> str:
        return f"#{c.id} {c.status}: {c.text[:40]}"

    async def cmd_create(self, req: CommandRequest) -> CommandResponse:
        user = req.requester.split("/")[0]
        if req.stage == 0:
            cfg = self.cfg
            form = Form(
                "Create campaign",
                "The budget is held from your wallet now; what is not spent comes back when the campaign ends.",
                [
                    Field("text", "text-single", "Ad text", required=True),
                    Field("link", "text-single", "Link (https://...)", required=True),
                    Field("image_url", "text-single", "Image URL (optional)"),
                    Field("budget", "text-single", "Budget (coins)", required=True),
                    Field("price_impression", "text-single", "Price per impression", "1", required=True),
                    Field("price_click", "text-single", "Price per click", "0"),
                    Field("cap_hour", "text-single", "Max per user per hour", str(cfg.cap_per_hour)),
                    Field("cap_day", "text-single", "Max per user per day", str(cfg.cap_per_day)),
                    Field("domains", "text-single", "Only these domains (comma-separated; empty: all)"),
                    Field("topics", "list-multi", "Only users interested in", [],
                          options=[(t, t) for t in sorted(cfg.topics)]),
                    Field("locales", "text-single", "Only these languages (e.g. en, de; empty: all)"),
                    Field("starts_at", "text-single", "Start (ISO 8601 UTC; empty: now)"),
                    Field("ends_at", "text-single", f"End (empty: in {cfg.max_campaign_days} days)"),
                ],
            )
            return CommandResponse("executing", form, actions=["complete"])
        topics = tuple(t for t in req.values.get("topics", []) if t)
        unknown = set(topics) - set(self.cfg.topics)
        if unknown:
            raise CommandError("bad-request", f"Unknown topics: {', '.join(sorted(unknown))}")
        spec = CampaignSpec(
            text=req.value("text").strip(),
            link=req.value("link").strip(),
            image_url=req.value("image_url").strip(),
            budget=parse_int(req.value("budget"), "The budget"),
            price_impression=parse_int(req.value("price_impression"), "The price per impression", 1),
            price_click=parse_int(req.value("price_click"), "The price per click", 0),
            cap_hour=parse_int(req.value("cap_hour"), "The hourly cap", self.cfg.cap_per_hour),
            cap_day=parse_int(req.value("cap_day"), "The daily cap", self.cfg.cap_per_day),
            targeting=Targeting(
                parse_list(req.value("domains").lower()), topics, parse_list(req.value("locales"))
            ),
            starts_at=parse_time(req.value("starts_at")),
            ends_at=parse_time(req.value("ends_at")),
        )
        try:
            c = await self.engine.create(user, spec)
        except ValueError as e:
            return CommandResponse(note=f"Not created: {e}", note_type="error")
        except Exception as e:
            cond = getattr(e, "condition", None)
            if cond is None:
                raise
            text = getattr(e, "text", "") or cond
            if cond == "insufficient-funds":
                text = f"your wallet does not hold the budget of {spec.budget} coins"
            return CommandResponse(note=f"Not created: {cond}: {text}", note_type="error")
        return CommandResponse(
            note=f"Campaign #{c.id} created; {c.budget} coins held in escrow. "
            f"It runs until {c.ends_at:%Y-%m-%d %H:%M} UTC."
        )

    def _pick(self, req: CommandRequest, user: str) -> Campaign:
        raw = req.value("campaign")
        c = self.engine.campaigns.get(int(raw)) if raw.isdigit() else None
        if c is None or c not in self._mine(user):
            raise CommandError("item-not-found", "No such campaign of yours")
        return c

    async def cmd_stats(self, req: CommandRequest) -> CommandResponse:
        user = req.requester.split("/")[0]
        mine = self._mine(user)
        if not mine:
            return CommandResponse(note="You have no campaigns.")
        if req.stage == 0 and len(mine) > 1:
            form = Form("Campaign stats", "Which campaign?", [
                Field("campaign", "list-single", "Campaign", str(mine[-1].id),
                      options=[(self._label(c), str(c.id)) for c in mine]),
            ])
            return CommandResponse("executing", form, actions=["complete"])
        c = mine[0] if len(mine) == 1 else self._pick(req, user)
        s = c.stats()
        fields = [Field(k, "text-single", k, str(v)) for k, v in s.items() if k != "advertiser"]
        return CommandResponse(form=Form(f"Campaign #{c.id}", type="result", fields=fields))

    async def cmd_pause(self, req: CommandRequest) -> CommandResponse:
        user = req.requester.split("/")[0]
        mine = [c for c in self._mine(user) if c.status in ("active", "paused")]
        if not mine:
            return CommandResponse(note="You have no running campaigns.")
        if req.stage == 0:
            form = Form("Pause/stop campaign", "Stopping is final: the unspent budget returns to the wallet.", [
                Field("campaign", "list-single", "Campaign", str(mine[0].id),
                      options=[(self._label(c), str(c.id)) for c in mine]),
                Field("action", "list-single", "Action", "pause",
                      options=[("Pause", "pause"), ("Resume", "resume"), ("Stop for good", "stop")]),
            ])
            return CommandResponse("executing", form, actions=["complete"])
        c = self._pick(req, user)
        action = req.value("action", "pause")
        target = {"pause": "paused", "resume": "active", "stop": "stopped"}.get(action)
        if target is None:
            raise CommandError("bad-request", "Unknown action")
        try:
            await self.engine.set_status(c, target)
        except ValueError as e:
            return CommandResponse(note=str(e), note_type="error")
        return CommandResponse(note=f"Campaign #{c.id} is {c.status}; spent {c.spent} of {c.budget} coins.")

    async def cmd_premium(self, req: CommandRequest) -> CommandResponse:
        user = req.requester.split("/")[0]
        await self.user_state(user)
        if req.stage == 0:
            price = self.cfg.premium_price_per_day
            opts = [(f"{d} days — {d * price} coins", str(d)) for d in (1, 7, 30, 90, 365)
                    if d <= self.cfg.premium_max_days]
            form = Form("Go ad-free", self.premium.status_text(user), [
                Field("days", "list-single", "How long", opts[min(2, len(opts) - 1)][1], options=opts),
            ])
            return CommandResponse("executing", form, actions=["complete"])
        days = parse_int(req.value("days"), "The number of days")
        note = await self._buy(user, days)
        return CommandResponse(note=note, note_type="error" if note.startswith("Sorry") else "info")

    async def cmd_settings(self, req: CommandRequest) -> CommandResponse:
        user = req.requester.split("/")[0]
        st = await self.user_state(user)
        if req.stage == 0:
            form = Form("My ads settings", self.premium.status_text(user), [
                Field("premium", "fixed", "Premium", self.premium.status_text(user)),
                Field("opt_out", "boolean", "No ads for me", "1" if st.opt_out else "0"),
                Field("topics", "list-multi", "Topics I am interested in", sorted(st.topics),
                      options=[(t, t) for t in sorted(self.cfg.topics)]),
            ])
            return CommandResponse("executing", form, actions=["complete"])
        topics = frozenset(t for t in req.values.get("topics", []) if t in self.cfg.topics)
        opt_out = req.value("opt_out", "0") in ("1", "true")
        await self._save_prefs(user, opt_out, topics)
        return CommandResponse(note=self._status(user, self.users[user]))

    async def cmd_kill(self, req: CommandRequest) -> CommandResponse:
        if not self.ctx.is_admin(req.requester.split("/")[0]):
            raise CommandError("forbidden")
        if req.stage == 0:
            form = Form("Kill switch", "Stop all ad delivery at once.", [
                Field("kill_switch", "boolean", "Stop all ads", "1" if self.kill else "0"),
            ])
            return CommandResponse("executing", form, actions=["complete"])
        self.kill = req.value("kill_switch", "0") in ("1", "true")
        return CommandResponse(note="All ad delivery is stopped." if self.kill else "Ad delivery is on.")


__all__ = ["AdsPlugin", "AdsSettings", "NS"]
