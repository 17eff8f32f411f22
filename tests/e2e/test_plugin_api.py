"""The plugin API (``xmppim.plugins.api``) proved over real sockets with real slixmpp clients.

Test plugins are defined here and loaded with ``server.plugins.load(cls)``. Covered: hook order
(priority, then registration order), a pre-route handler that rewrites a body, a handler that stops a
stanza with an error, a crashing handler (``internal-server-error`` for that stanza alone, counted in
``bus.failures``), XEP-0050 commands on the server JID and on a component (including another user's
attempt to continue a session), unload undoing every registration, dependency order, config
validation, HTTP routes, and that the external-mode context overrides every server-bound method.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from xml.etree.ElementTree import Element, SubElement

import aiohttp
import pytest
import slixmpp
from slixmpp.exceptions import IqError

from tests.helpers import Inbox, disconnect, make_config, running_server, slix_client
from xmppim.config import ConfigError
from xmppim.plugins import api
from xmppim.plugins.api import (
    PARAMS,
    PRIORITY_EARLY,
    PRIORITY_FIRST,
    PRIORITY_LATE,
    PRIORITY_NORMAL,
    CommandRequest,
    CommandResponse,
    Field,
    Form,
    Plugin,
    StanzaEvent,
    error_reply,
    iq_result,
)
from xmppim.plugins.loader import PluginError, resolve_order
from xmppim.server import Server

BODY = "{jabber:client}body"
STANZA_ERRORS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"


# ----------------------------------------------------------------------------- helpers
@dataclass
class Users:
    alice: slixmpp.ClientXMPP
    bob: slixmpp.ClientXMPP
    carol: slixmpp.ClientXMPP
    a_in: Inbox
    b_in: Inbox
    c_in: Inbox


@pytest.fixture
async def users(server: Server) -> AsyncIterator[Users]:
    plugins = ("xep_0050", "xep_0004")
    alice, bob, carol = await asyncio.gather(
        slix_client(server, "alice@localhost/t", "pw", plugins=plugins),
        slix_client(server, "bob@localhost/t", "pw", plugins=plugins),
        slix_client(server, "carol@localhost/t", "pw", plugins=plugins),
    )
    # Messages to a bare JID go to *available* resources: wait until each initial presence is processed,
    # or a message could race it into offline storage.
    deadline = time.monotonic() + 10
    while not all(server.sessions.available(f"{u}@localhost") for u in ("alice", "bob", "carol")):
        assert time.monotonic() < deadline, "the users' initial presence was not processed"
        await asyncio.sleep(0.02)
    yield Users(alice, bob, carol, Inbox(alice), Inbox(bob), Inbox(carol))
    await disconnect(alice, bob, carol)


def condition(stanza: Any) -> str:
    """The defined condition of an error stanza, read from the XML (slixmpp 1.17 knows only the RFC 3920
    conditions and reports '' for e.g. RFC 6120's ``policy-violation``)."""
    for err in stanza.xml:
        if err.tag.rpartition("}")[2] == "error":
            for child in err:
                if child.tag.startswith(STANZA_ERRORS) and not child.tag.endswith("}text"):
                    return str(child.tag.rpartition("}")[2])
    return ""


def chat(sender: slixmpp.ClientXMPP, to: str, body: str) -> None:
    sender.send_message(mto=to, mbody=body, mtype="chat")


def body_of(ev: StanzaEvent) -> str:
    return ev.stanza.findtext(BODY) or ""


# ----------------------------------------------------------------- hook order
ORDER: list[str] = []


class OrderA(Plugin):
    name = "order_a"

    async def start(self) -> None:
        self.ctx.hook("message/pre-route", self.mark("a0"), PRIORITY_NORMAL)
        self.ctx.hook("message/pre-route", self.mark("a500"), PRIORITY_EARLY)

    @staticmethod
    def mark(label: str) -> Callable[[StanzaEvent], None]:
        def handler(ev: StanzaEvent) -> None:
            if body_of(ev) == "order":
                ORDER.append(label)

        return handler


class OrderB(Plugin):
    name = "order_b"

    async def start(self) -> None:
        self.ctx.hook("message/pre-route", OrderA.mark("b500"), PRIORITY_EARLY)
        self.ctx.hook("message/pre-route", OrderA.mark("b1000"), PRIORITY_FIRST)
        self.ctx.hook("message/pre-route", OrderA.mark("b0"), PRIORITY_NORMAL)
        self.ctx.hook("message/pre-route", OrderA.mark("b-500"), PRIORITY_LATE)


async def test_hooks_run_by_priority_then_registration_order(server: Server, users: Users) -> None:
    ORDER.clear()
    await server.plugins.load(OrderA)
    await server.plugins.load(OrderB)
    chat(users.alice, "bob@localhost", "order")
    await users.b_in.body("order")  # every handler returned None: the message went on
    assert ORDER == ["b1000", "a500", "b500", "a0", "b0", "b-500"]
    ours = [(p, o) for p, o in server.bus.handlers("message/pre-route") if o.startswith("order_")]
    assert ours == [
        (1000, "order_b"), (500, "order_a"), (500, "order_b"),
        (0, "order_a"), (0, "order_b"), (-500, "order_b"),
    ]


# ---------------------------------------------------------- rewrite / refuse
class Censor(Plugin):
    """Rewrites one word, refuses 'spam' (two ways a handler can answer with an error)."""

    name = "censor"

    async def start(self) -> None:
        self.ctx.hook("message/pre-route", self.pre_route)

    def pre_route(self, ev: StanzaEvent) -> Any:
        body = ev.stanza.find(BODY)
        if body is None or not body.text:
            return None
        if body.text.startswith("spam-send"):
            # Stop the stanza and send the error ourselves.
            self.ctx.send(error_reply(ev.stanza, "policy-violation", "No spam here"))
            return True
        if body.text.startswith("spam-return"):
            # Stop the stanza by returning the error reply (as an iq_handler may).
            return error_reply(ev.stanza, "not-acceptable", "No spam here either")
        body.text = body.text.replace("darn", "d**n")
        return None


async def test_pre_route_handler_rewrites_the_body_the_recipient_sees(server: Server, users: Users) -> None:
    await server.plugins.load(Censor)
    chat(users.alice, "bob@localhost", "oh darn it")
    await users.b_in.body("oh d**n it")
    assert "oh darn it" not in users.b_in.bodies()


async def test_handler_that_stops_a_stanza_and_sends_an_error(server: Server, users: Users) -> None:
    await server.plugins.load(Censor)
    chat(users.alice, "bob@localhost", "spam-send buy now")
    err = await users.a_in.error("bob@localhost")
    assert condition(err) == "policy-violation" and err["error"]["text"] == "No spam here"
    chat(users.alice, "bob@localhost", "barrier")
    await users.b_in.body("barrier")
    assert users.b_in.bodies() == ["barrier"]


async def test_handler_that_stops_a_stanza_by_returning_an_error_reply(server: Server, users: Users) -> None:
    await server.plugins.load(Censor)
    chat(users.alice, "bob@localhost", "spam-return buy now")
    err = await users.a_in.error("bob@localhost")
    assert condition(err) == "not-acceptable"
    chat(users.alice, "bob@localhost", "barrier")
    await users.b_in.body("barrier")
    assert users.b_in.bodies() == ["barrier"]


# --------------------------------------------------------------------- crash
class Crashy(Plugin):
    name = "crashy"

    async def start(self) -> None:
        self.ctx.hook("message/pre-route", self.pre_route)

    def pre_route(self, ev: StanzaEvent) -> Any:
        if body_of(ev) == "boom":
            raise RuntimeError("planted crash")
        if body_of(ev) == "boom-later":
            return self.crash_later()
        return None

    async def crash_later(self) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("planted crash after an await")


@pytest.mark.parametrize("trigger", ["boom", "boom-later"])
async def test_crashing_handler_fails_that_stanza_alone(server: Server, users: Users, trigger: str) -> None:
    await server.plugins.load(Crashy)
    chat(users.alice, "bob@localhost", trigger)
    err = await users.a_in.error("bob@localhost")
    assert condition(err) == "internal-server-error"
    assert server.bus.failures.get("crashy") == 1
    # Everyone else, and alice's own stream, carry on.
    chat(users.carol, "bob@localhost", "from carol")
    chat(users.alice, "bob@localhost", "from alice")
    await users.b_in.body("from carol")
    await users.b_in.body("from alice")
    assert trigger not in users.b_in.bodies()
    assert [m for m in users.c_in.items if m["type"] == "error"] == []


# ------------------------------------------------------------------- ad-hoc
SERVICE = "svc.localhost"


async def greet(req: CommandRequest) -> CommandResponse:
    if req.stage == 0:
        form = Form(title="Greet", fields=[Field("name", label="Name", required=True)])
        return CommandResponse(status="executing", form=form)
    return CommandResponse(note=f"Hello, {req.value('name')}")


class Commands(Plugin):
    name = "commands"

    async def start(self) -> None:
        self.ctx.adhoc_command("greet-server", "Greet (server)", greet)
        comp = self.ctx.add_component("svc", "Service")
        comp.command("greet-component", "Greet (component)", greet)


async def run_two_step(users: Users, jid: str, node: str) -> None:
    adhoc = users.alice.plugin["xep_0050"]
    items = await adhoc.get_commands(jid=jid)
    assert node in {n for _j, n, _name in items["disco_items"]["items"]}
    first = await adhoc.send_command(jid, node, action="execute")
    assert first["command"]["status"] == "executing"
    assert list(first["command"]["form"].get_fields()) == ["name"]
    sid = first["command"]["sessionid"]
    # Bob guesses/steals the session id: refused, and the session stays alice's.
    form = users.alice.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="name", value="Mallory")
    with pytest.raises(IqError) as e:
        await users.bob.plugin["xep_0050"].send_command(
            jid, node, action="complete", sessionid=sid, payload=form
        )
    assert condition(e.value.iq) == "forbidden"
    form = users.alice.plugin["xep_0004"].make_form(ftype="submit")
    form.add_field(var="name", value="Alice")
    done = await adhoc.send_command(jid, node, action="complete", sessionid=sid, payload=form)
    assert done["command"]["status"] == "completed"
    assert done["command"]["notes"] == [("info", "Hello, Alice")]
    # The session is over: continuing it again is refused.
    with pytest.raises(IqError) as e:
        await adhoc.send_command(jid, node, action="complete", sessionid=sid, payload=form)
    assert condition(e.value.iq) == "not-allowed"


async def test_adhoc_command_on_the_server_jid(server: Server, users: Users) -> None:
    await server.plugins.load(Commands)
    await run_two_step(users, "localhost", "greet-server")


async def test_adhoc_command_on_a_component(server: Server, users: Users) -> None:
    await server.plugins.load(Commands)
    await run_two_step(users, SERVICE, "greet-component")


# -------------------------------------------------------------------- unload
class Everything(Plugin):
    """Registers one of each kind, to prove that unloading undoes them all."""

    name = "everything"
    stopped: ClassVar[list[str]] = []

    async def start(self) -> None:
        self.ctx.hook("message/pre-route", self.tag)
        self.ctx.add_feature("urn:test:everything")
        self.ctx.iq_handler("get", "urn:test:everything", self.answer)
        self.ctx.provide("everything", self)
        self.ctx.adhoc_command("everything", "Everything", greet)
        self.ctx.http_route("GET", "hello/{who}", self.hello)
        self.ticks = 0
        self.ctx.add_timer(0.01, self.tick)
        comp = self.ctx.add_component("every", "Every")
        comp.on_message = lambda m: comp.message(m.get("from", ""), "component: " + (m.findtext(BODY) or ""))

    def tag(self, ev: StanzaEvent) -> None:
        body = ev.stanza.find(BODY)
        if body is not None and body.text == "tag me":
            body.text = "tagged"

    def answer(self, ev: StanzaEvent) -> Element:
        q = Element("{urn:test:everything}query")
        SubElement(q, "{urn:test:everything}ok")
        return iq_result(ev.stanza, q)

    async def hello(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(text=f"hello {request[PARAMS]['who']}")

    async def tick(self) -> None:
        self.ticks += 1


async def probe(server: Server, users: Users) -> dict[str, Any]:
    """What the world sees of plugin 'everything', through sockets."""
    disco = users.alice.plugin["xep_0030"]
    info = await disco.get_info(jid="localhost", cached=False)
    items = await disco.get_items(jid="localhost")
    iq = users.alice.make_iq_get(queryxmlns="urn:test:everything", ito="localhost")
    try:
        await iq.send(timeout=5)
        iq_answer = "result"
    except IqError as e:
        iq_answer = condition(e.iq)
    commands = await users.alice.plugin["xep_0050"].get_commands(jid="localhost")
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.ports['http']}/plugins/everything/hello/you") as r:
            http_status, http_text = r.status, await r.text()
    chat(users.alice, "bob@localhost", "tag me")
    return {
        "feature": "urn:test:everything" in info["disco_info"]["features"],
        "item": "every.localhost" in {j for j, _n, _name in items["disco_items"]["items"]},
        "routed": "every.localhost" in server.router.components,
        "iq": iq_answer,
        "command": "everything" in {n for _j, n, _name in commands["disco_items"]["items"]},
        "http": (http_status, http_text),
        "service": "everything" in server.services,
        "hook": any(o == "everything" for _p, o in server.bus.handlers("message/pre-route")),
    }


async def test_unload_undoes_every_registration(server: Server, users: Users) -> None:
    await server.plugins.load(Everything)
    plugin = server.plugins.loaded["everything"].instance
    assert isinstance(plugin, Everything)
    chat(users.alice, "every.localhost", "hi")
    await users.a_in.body("component: hi")
    seen = await probe(server, users)
    await users.b_in.body("tagged")
    assert seen == {
        "feature": True, "item": True, "routed": True, "iq": "result", "command": True,
        "http": (200, "hello you"), "service": True, "hook": True,
    }
    await asyncio.sleep(0.05)
    assert plugin.ticks > 0

    await server.plugins.unload("everything")
    ticks = plugin.ticks
    gone = await probe(server, users)
    await users.b_in.body("tag me")  # the hook no longer rewrites
    assert gone == {
        "feature": False, "item": False, "routed": False, "iq": "service-unavailable", "command": False,
        "http": (404, gone["http"][1]), "service": False, "hook": False,
    }
    await asyncio.sleep(0.05)
    assert plugin.ticks == ticks, "the timer kept running after unload"
    assert "everything" not in server.plugins.loaded


# ------------------------------------------------------------- dependencies
EVENTS: list[str] = []


class Base(Plugin):
    name = "dep_base"

    async def start(self) -> None:
        EVENTS.append(f"start {self.name}")
        self.ctx.provide(self.name, self)

    async def stop(self) -> None:
        EVENTS.append(f"stop {self.name}")


class Middle(Base):
    name = "dep_middle"
    dependencies = ("dep_base",)

    async def start(self) -> None:
        self.ctx.service("dep_base")  # raises if the dependency were not there
        await super().start()


class Top(Base):
    name = "dep_top"
    dependencies = ("dep_middle",)

    async def start(self) -> None:
        self.ctx.service("dep_middle")
        await super().start()


async def test_dependencies_load_first_and_dependents_unload_first(server: Server) -> None:
    classes: dict[str, type[Plugin]] = {c.name: c for c in (Top, Middle, Base)}
    order = resolve_order(["dep_top"], classes)
    assert order == ["dep_base", "dep_middle", "dep_top"]
    EVENTS.clear()
    for name in order:
        await server.plugins.load(classes[name])
    await server.plugins.unload("dep_base")
    assert EVENTS == [
        "start dep_base", "start dep_middle", "start dep_top",
        "stop dep_top", "stop dep_middle", "stop dep_base",
    ]
    assert not {"dep_base", "dep_middle", "dep_top"} & set(server.plugins.loaded)
    assert not {"dep_base", "dep_middle", "dep_top"} & set(server.services)


def test_missing_and_circular_dependencies_are_named() -> None:
    class Lonely(Plugin):
        name = "lonely"
        dependencies = ("nowhere",)

    class Ping(Plugin):
        name = "ping_dep"
        dependencies = ("pong_dep",)

    class Pong(Plugin):
        name = "pong_dep"
        dependencies = ("ping_dep",)

    with pytest.raises(PluginError, match="lonely depends on 'nowhere'"):
        resolve_order(["lonely"], {"lonely": Lonely})
    with pytest.raises(PluginError, match="ping_dep -> pong_dep -> ping_dep"):
        resolve_order(["ping_dep"], {"ping_dep": Ping, "pong_dep": Pong})


async def test_failing_start_leaves_nothing_behind(server: Server) -> None:
    class Broken(Plugin):
        name = "broken"

        async def start(self) -> None:
            self.ctx.add_feature("urn:test:broken")
            self.ctx.hook("message/pre-route", lambda _ev: None)
            raise RuntimeError("cannot start")

    with pytest.raises(PluginError, match="broken failed to start"):
        await server.plugins.load(Broken)
    assert "broken" not in server.plugins.loaded
    assert "urn:test:broken" not in server.items.get("disco/feature")
    assert all(o != "broken" for _p, o in server.bus.handlers("message/pre-route"))


# ------------------------------------------------------------------- config
@dataclass
class ColourConfig:
    colour: str = "blue"
    shades: int = 3


class Colourful(Plugin):
    name = "colourful"
    Config = ColourConfig


async def test_plugin_config_is_validated_and_a_bad_key_is_named(server: Server) -> None:
    server.config.plugins.settings["colourful"] = {"colour": "red"}
    await server.plugins.load(Colourful)
    assert server.plugins.loaded["colourful"].ctx.config == ColourConfig(colour="red", shades=3)
    await server.plugins.unload("colourful")

    server.config.plugins.settings["colourful"] = {"colour": "red", "colur": "typo"}
    with pytest.raises(ConfigError) as e:
        await server.plugins.load(Colourful)
    assert "colur" in str(e.value) and "[plugins.colourful]" in str(e.value)
    server.config.plugins.settings["colourful"] = {"shades": "many"}
    with pytest.raises(ConfigError, match=r"plugins\.colourful\.shades must be int"):
        await server.plugins.load(Colourful)
    assert "colourful" not in server.plugins.loaded


async def test_config_for_a_plugin_that_is_not_installed_stops_the_server(tmp_path: Any) -> None:
    cfg = make_config(tmp_path, plugins={"no_such_plugin": {"x": 1}})
    with pytest.raises(ConfigError, match=r"\[plugins\.no_such_plugin\]"):
        async with running_server(cfg):
            pass


# --------------------------------------------------------------------- HTTP
class Web(Plugin):
    name = "web"

    async def start(self) -> None:
        self.ctx.http_route("POST", "echo/{word}", self.echo)

    async def echo(self, request: Any) -> Any:
        from aiohttp import web

        data = await request.text()
        return web.json_response({"word": request[PARAMS]["word"], "body": data})


async def test_http_route_under_plugins_name(server: Server) -> None:
    await server.plugins.load(Web)
    base = f"http://127.0.0.1:{server.ports['http']}"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/plugins/web/echo/hi", data="payload") as r:
            assert r.status == 200
            assert await r.json() == {"word": "hi", "body": "payload"}
        async with http.get(f"{base}/plugins/web/echo/hi") as r:
            assert r.status == 405
        async with http.post(f"{base}/plugins/other/echo/hi") as r:
            assert r.status == 404


# -------------------------------------------------------- external context
def test_external_context_overrides_every_server_bound_method() -> None:
    """Every public PluginContext member either works without a server or is overridden externally.

    A new server-bound method added to PluginContext must get an external-mode version too, or a
    plugin run with ``xmppim component run`` would crash with AttributeError on ``_server``.
    """
    import inspect

    from xmppim.plugins.external import ExternalContext

    server_free = {"add_timer"}  # implemented with spawn/log only
    public = {n for n in vars(api.PluginContext) if not n.startswith("_")}
    missing = sorted(n for n in public - server_free if n not in vars(ExternalContext))
    assert missing == []
    for n in server_free:
        assert "_server" not in inspect.getsource(getattr(api.PluginContext, n))


async def test_a_plugin_stanza_that_cannot_be_xml_is_dropped_and_the_session_goes_on(server: Server) -> None:
    """A plugin sends a body with a control character XML cannot carry: it is not written (the client's
    stream would break), and the next stanza to the same session arrives normally."""
    from xml.etree.ElementTree import Element, SubElement

    from tests.helpers import RawClient

    c = await RawClient.connect(server.ports["c2s"])
    await c.login("alice", "pw", "a")
    session = server.sessions.get("alice@localhost/a")
    assert session is not None
    bad = Element("{jabber:client}message", {"to": "alice@localhost/a", "from": "localhost"})
    SubElement(bad, "{jabber:client}body").text = "bell \x07"
    session.deliver(bad)
    c.send_raw("<iq type='get' id='p' to='localhost'><ping xmlns='urn:xmpp:ping'/></iq>")
    r = await c.recv()
    assert r.tag == "{jabber:client}iq" and r.get("id") == "p"
    await c.close()
