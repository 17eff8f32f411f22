"""XEP-0115: the server's caps in the stream features, checked against its disco#info and by slixmpp."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from xml.etree.ElementTree import Element, SubElement

import pytest

from tests.helpers import RawClient, disconnect, slix_client
from xmppim.modules.xep0115_caps import CapsModule, ver_hash, verification_string
from xmppim.server import Server
from xmppim.stanza import error_condition

CAPS = "{http://jabber.org/protocol/caps}c"
INFO = "{http://jabber.org/protocol/disco#info}"
XD = "{jabber:x:data}"


@pytest.fixture
async def srv(server: Server) -> Server:
    await server.plugins.load(CapsModule)  # a no-op once the entry point is installed
    return server


async def features_after_auth(srv: Server) -> tuple[RawClient, Element]:
    """Log in by hand up to the post-SASL features (where bind and caps are offered)."""
    c = await RawClient.connect(srv.ports["c2s"])
    await c.open()
    await c.starttls()
    await c.open()
    ok = await c.auth_scram("alice", "pw")
    assert ok.tag.endswith("success")
    c.parser.reset()
    c.header = None
    return c, await c.open()


def expected_ver(query: Element) -> str:
    """XEP-0115 §5.1 written out again here, independently of the module, over a disco#info answer."""
    ids = sorted(
        (
            i.get("category", ""),
            i.get("type", ""),
            i.get("{http://www.w3.org/XML/1998/namespace}lang", ""),
            i.get("name", ""),
        )
        for i in query.findall(f"{INFO}identity")
    )
    s = "".join("/".join(i) + "<" for i in ids)
    s += "".join(f + "<" for f in sorted(f.get("var", "") for f in query.findall(f"{INFO}feature")))
    forms: list[tuple[str, list[tuple[str, list[str]]]]] = []
    for x in query.findall(f"{XD}x"):
        by_var = {
            f.get("var", ""): sorted(v.text or "" for v in f.findall(f"{XD}value")) for f in x.findall(f"{XD}field")
        }
        ft = by_var.pop("FORM_TYPE")[0]
        forms.append((ft, sorted(by_var.items())))
    for ft, fields in sorted(forms):
        s += ft + "<" + "".join(var + "<" + "".join(v + "<" for v in vals) for var, vals in fields)
    return base64.b64encode(hashlib.sha1(s.encode()).digest()).decode()


async def disco_info(c: RawClient, node: str | None = None) -> Element:
    attr = f" node='{node}'" if node else ""
    c.send_raw(
        f"<iq type='get' id='d' to='localhost'><query xmlns='http://jabber.org/protocol/disco#info'{attr}/></iq>"
    )
    while True:
        st = await c.recv()
        if st.get("id") == "d":
            return st


async def test_caps_in_the_stream_features_match_the_servers_disco_info(srv: Server) -> None:
    c, features = await features_after_auth(srv)
    cap = features.find(CAPS)
    assert cap is not None and cap.get("hash") == "sha-1" and cap.get("node") == "https://xmppim.example/caps"
    ver = cap.get("ver", "")
    c.send_raw("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    await c.recv()
    plain = (await disco_info(c)).find(f"{INFO}query")
    assert plain is not None and len(plain.findall(f"{INFO}feature")) > 3
    assert expected_ver(plain) == ver
    # §6.2: the same answer on node#ver, with the node echoed.
    r = await disco_info(c, f"https://xmppim.example/caps#{ver}")
    q = r.find(f"{INFO}query")
    assert r.get("type") == "result" and q is not None and q.get("node") == f"https://xmppim.example/caps#{ver}"
    assert expected_ver(q) == ver
    assert sorted(f.get("var", "") for f in q.findall(f"{INFO}feature")) == sorted(
        f.get("var", "") for f in plain.findall(f"{INFO}feature")
    )
    assert error_condition(await disco_info(c, "https://xmppim.example/caps#stale=")) == "item-not-found"
    await c.close()


async def test_ver_follows_what_the_server_offers(srv: Server) -> None:
    c1, f1 = await features_after_auth(srv)
    undo = srv.items.add("disco/feature", "urn:example:brand-new")

    def contact_form() -> Element:  # an XEP-0128 extension, as XEP-0157 contact addresses would add
        x = Element(f"{XD}x", {"type": "result"})
        for var, values in [
            ("FORM_TYPE", ["http://jabber.org/network/serverinfo"]),
            ("admin-addresses", ["xmpp:root@localhost", "mailto:root@localhost"]),
        ]:
            f = SubElement(x, f"{XD}field", {"var": var})
            if var == "FORM_TYPE":
                f.set("type", "hidden")  # XEP-0068: FORM_TYPE is a hidden field (slixmpp checks it)
            for v in values:
                SubElement(f, f"{XD}value").text = v
        return x

    undo_form = srv.items.add("disco/extension", contact_form)
    try:
        c2, f2 = await features_after_auth(srv)
        v1, v2 = f1.find(CAPS).get("ver"), f2.find(CAPS).get("ver")  # type: ignore[union-attr]
        assert v1 != v2
        c2.send_raw("<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
        await c2.recv()
        q = (await disco_info(c2)).find(f"{INFO}query")
        assert q is not None and q.find(f"{XD}x") is not None and expected_ver(q) == v2
        # slixmpp checks the same hash, forms included, over node#ver.
        s = await slix_client(srv, "bob@localhost/caps", "pw", plugins=("xep_0115",))
        got = None
        for _ in range(100):
            got = await s.plugin["xep_0115"].get_verstring("localhost")
            if got:
                break
            await asyncio.sleep(0.05)
        assert got == v2
        await disconnect(s)
        await c2.close()
    finally:
        undo_form()
        undo()
    await c1.close()


async def test_slixmpp_verifies_the_servers_caps(srv: Server) -> None:
    """slixmpp's xep_0115 reads the stream feature, fetches disco#info on node#ver and checks the hash."""
    c, features = await features_after_auth(srv)
    ver = features.find(CAPS).get("ver")  # type: ignore[union-attr]
    await c.close()
    s = await slix_client(srv, "bob@localhost/caps", "pw", plugins=("xep_0115",))
    got = None
    for _ in range(100):
        got = await s.plugin["xep_0115"].get_verstring("localhost")
        if got:
            break
        await asyncio.sleep(0.05)
    assert got == ver
    info = await s.plugin["xep_0115"].get_caps(jid="localhost")
    assert "urn:xmpp:ping" in info["features"]
    await disconnect(s)


def test_xep_0115_examples() -> None:
    """§5.2 and §5.3's worked examples."""
    simple = verification_string(
        [("client", "pc", "", "Exodus 0.9.1")],
        [
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/disco#info",
            "http://jabber.org/protocol/disco#items",
            "http://jabber.org/protocol/muc",
        ],
        [],
    )
    assert ver_hash(simple) == "QgayPKawpkPSDYmwT/WM94uAlu0="
    form = Element(f"{XD}x", {"type": "result"})
    for var, values in [
        ("FORM_TYPE", ["urn:xmpp:dataforms:softwareinfo"]),
        ("ip_version", ["ipv6", "ipv4"]),
        ("os", ["Mac"]),
        ("os_version", ["10.5.1"]),
        ("software", ["Psi"]),
        ("software_version", ["0.11"]),
    ]:
        f = SubElement(form, f"{XD}field", {"var": var})
        for v in values:
            SubElement(f, f"{XD}value").text = v
    complex_ = verification_string(
        # The XEP prints NBSPs in these names, but its hash is over plain spaces.
        [("client", "pc", "en", "Psi 0.11"), ("client", "pc", "el", "\u03a8 0.11")],
        [
            "http://jabber.org/protocol/disco#items",
            "http://jabber.org/protocol/caps",
            "http://jabber.org/protocol/muc",
            "http://jabber.org/protocol/disco#info",
        ],
        [form, Element(f"{XD}x")],  # a form without FORM_TYPE is ignored
    )
    assert ver_hash(complex_) == "q07IKJEyjvHSyhy//CH0CxmKi8w="
