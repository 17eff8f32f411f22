"""serialize(), stream_header(), stream_error(): exact output, namespaces, escaping, round trips."""

from __future__ import annotations

import re
from xml.etree.ElementTree import Comment, Element, SubElement

import pytest

from xmppim.xml import ns
from xmppim.xml.parser import (
    StanzaReceived,
    StreamClosed,
    StreamFault,
    StreamOpened,
    StreamParser,
    parse_element,
)
from xmppim.xml.serialize import (
    STREAM_CLOSE,
    STREAM_ERROR_CONDITIONS,
    serialize,
    stream_error,
    stream_header,
)

C = "{jabber:client}"


def reparse(data: bytes, stream_ns: str = ns.CLIENT) -> Element:
    """Parse ``data`` as the only stanza of a stream whose content namespace is ``stream_ns``."""
    p = StreamParser(content_ns=stream_ns)
    events = p.feed(stream_header(from_="a", to="b", id_="1", content_ns=stream_ns) + data)
    assert isinstance(events[0], StreamOpened), events
    assert len(events) == 2 and isinstance(events[1], StanzaReceived), events
    return events[1].element


def message(body: str = "hello") -> Element:
    m = Element(C + "message", {"to": "juliet@example.com/balcony", "type": "chat", "id": "abc123"})
    SubElement(m, C + "body").text = body
    return m


def test_small_message_exact_bytes() -> None:
    assert serialize(message()) == (
        b'<message to="juliet@example.com/balcony" type="chat" id="abc123"><body>hello</body></message>'
    )


def test_client_tags_are_written_in_the_target_stream_namespace() -> None:
    m = message()
    assert serialize(m, ns.SERVER) == serialize(m, ns.CLIENT)  # no xmlns: the stream header has it
    assert reparse(serialize(m, ns.SERVER), ns.SERVER).tag == C + "message"
    assert reparse(serialize(m, ns.COMPONENT), ns.COMPONENT)[0].tag == C + "body"


def test_forwarded_client_stanza_keeps_jabber_client_on_server_streams() -> None:
    m = message()
    fwd = SubElement(m, "{urn:xmpp:forward:0}forwarded")
    inner = SubElement(fwd, C + "message", {"from": "x@y"})
    SubElement(inner, C + "body").text = "inner"
    out = serialize(m, ns.SERVER)
    assert b'<forwarded xmlns="urn:xmpp:forward:0"><message xmlns="jabber:client" from="x@y">' in out
    assert b"<body>inner</body>" in out  # inherits jabber:client from the inner message
    back = reparse(out, ns.SERVER)
    assert back[1][0].tag == C + "message" and back[1][0][0].tag == C + "body"


def test_namespace_declarations_are_minimal() -> None:
    m = Element(C + "iq", {"type": "result", "id": "1"})
    q = SubElement(m, "{http://jabber.org/protocol/disco#info}query")
    SubElement(q, "{http://jabber.org/protocol/disco#info}identity", {"category": "server"})
    SubElement(q, "{http://jabber.org/protocol/disco#info}feature", {"var": "urn:xmpp:ping"})
    x = SubElement(q, "{jabber:x:data}x", {"type": "result"})
    SubElement(x, "{jabber:x:data}field", {"var": "FORM_TYPE"})
    SubElement(q, "{http://jabber.org/protocol/disco#info}feature", {"var": "jabber:iq:version"})
    out = serialize(m).decode()
    assert out == (
        '<iq type="result" id="1"><query xmlns="http://jabber.org/protocol/disco#info">'
        '<identity category="server"/><feature var="urn:xmpp:ping"/>'
        '<x xmlns="jabber:x:data" type="result"><field var="FORM_TYPE"/></x>'
        '<feature var="jabber:iq:version"/></query></iq>'
    )


def test_top_element_in_another_namespace_declares_it() -> None:
    el = Element("{urn:ietf:params:xml:ns:xmpp-tls}proceed")
    assert serialize(el) == b'<proceed xmlns="urn:ietf:params:xml:ns:xmpp-tls"/>'


def test_streams_namespace_uses_the_stream_prefix_and_keeps_the_content_namespace_in_scope() -> None:
    f = Element("{http://etherx.jabber.org/streams}features")
    SubElement(f, "{urn:ietf:params:xml:ns:xmpp-tls}starttls")
    SubElement(f, "{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms")[:] = [
        Element("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")
    ]
    f[1][0].text = "PLAIN"
    out = serialize(f)
    assert out == (
        b'<stream:features><starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"/>'
        b'<mechanisms xmlns="urn:ietf:params:xml:ns:xmpp-sasl"><mechanism>PLAIN</mechanism></mechanisms>'
        b"</stream:features>"
    )
    back = reparse(out)
    assert back.tag == "{http://etherx.jabber.org/streams}features"
    assert back[1][0].tag == "{urn:ietf:params:xml:ns:xmpp-sasl}mechanism"


def test_element_without_namespace_undeclares_the_default() -> None:
    m = message()
    SubElement(m, "plain")
    out = serialize(m)
    assert b'<plain xmlns=""/>' in out
    assert reparse(out)[1].tag == "plain"


def test_xml_lang_and_namespaced_attributes() -> None:
    m = Element(C + "message", {ns.XML_LANG: "de", "{urn:a}x": "1", "{urn:b}y": "2"})
    out = serialize(m)
    assert out == b'<message xml:lang="de" xmlns:a0="urn:a" a0:x="1" xmlns:a1="urn:b" a1:y="2"/>'
    assert reparse(out).attrib == m.attrib


def test_text_and_attribute_escaping_round_trips_exactly() -> None:
    tricky = "a&b<c>d\"e'f\r\ng\th]]>\n"
    m = message(tricky)
    m.set("id", tricky)
    m[0].tail = tricky
    out = serialize(m)
    assert b"]]>" not in out and b"\r" not in out
    back = reparse(out)
    assert back.get("id") == tricky and back[0].text == tricky and back[0].tail == tricky


def test_non_ascii_and_astral_characters_are_written_as_utf8() -> None:
    out = serialize(message("é€😀"))
    assert "é€😀".encode() in out


@pytest.mark.parametrize("bad", ["\x00", "\x0b", "\x1f", "\ufffe", "\uffff", "\ud800"])
def test_characters_xml_cannot_carry_raise_instead_of_killing_the_stream(bad: str) -> None:
    with pytest.raises(ValueError):
        serialize(message("x" + bad))
    m = message()
    m.set("id", bad)
    with pytest.raises(ValueError):
        serialize(m)


def test_top_element_tail_is_not_written() -> None:
    m = message()
    m.tail = "\n  "
    assert serialize(m).endswith(b"</message>")


def test_comment_nodes_are_refused() -> None:
    m = message()
    m.append(Comment("no comments in XMPP"))
    with pytest.raises(TypeError):
        serialize(m)


def test_stream_header_is_exact_and_parses() -> None:
    h = stream_header(from_="example.com", to="juliet@example.com", id_="s1")
    assert h == (
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams' from='example.com' to='juliet@example.com' "
        b"id='s1' version='1.0' xml:lang='en'>"
    )
    [ev] = StreamParser().feed(h)
    assert ev == StreamOpened(
        {"from": "example.com", "to": "juliet@example.com", "id": "s1", "version": "1.0", ns.XML_LANG: "en"},
        "jabber:client",
    )


def test_stream_header_omits_none_and_escapes_quotes() -> None:
    h = stream_header(from_=None, to="a'b\"c", id_=None, version=None, lang=None, content_ns=ns.COMPONENT)
    tag = h.split(b"?>", 1)[1]
    assert b"from=" not in tag and b"version=" not in tag and b"xml:lang" not in tag and b"id=" not in tag
    [ev] = StreamParser(content_ns=ns.COMPONENT).feed(h)
    assert ev == StreamOpened({"to": "a'b\"c"}, ns.COMPONENT)


def test_stream_error_parses_as_a_stream_level_element() -> None:
    p = StreamParser()
    p.feed(stream_header(from_="a", to="b", id_="c"))
    events = p.feed(stream_error("policy-violation", "too <big> & ugly", lang="en") + STREAM_CLOSE)
    assert isinstance(events[0], StanzaReceived) and events[1] == StreamClosed()
    err = events[0].element
    assert err.tag == "{http://etherx.jabber.org/streams}error"
    assert err[0].tag == "{urn:ietf:params:xml:ns:xmpp-streams}policy-violation"
    assert err[1].tag == "{urn:ietf:params:xml:ns:xmpp-streams}text"
    assert err[1].text == "too <big> & ugly" and err[1].get(ns.XML_LANG) == "en"


def test_stream_error_exact_bytes() -> None:
    assert stream_error("not-well-formed") == (
        b"<stream:error><not-well-formed xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    )


def test_see_other_host_carries_the_host() -> None:
    p = StreamParser()
    p.feed(stream_header(from_="a", to="b", id_="c"))
    [ev] = p.feed(stream_error("see-other-host", other_host="[2001:db8::1]:5222"))
    assert isinstance(ev, StanzaReceived) and ev.element[0].text == "[2001:db8::1]:5222"
    with pytest.raises(ValueError):
        stream_error("conflict", other_host="x")


def test_unknown_stream_error_condition_is_refused() -> None:
    with pytest.raises(ValueError):
        stream_error("not-wellformed")
    assert len(STREAM_ERROR_CONDITIONS) == 25  # RFC 6120 §4.9.3.1 - §4.9.3.25


def test_every_parser_fault_condition_is_a_valid_stream_error() -> None:
    for data in (b"<!-- -->", b"<html>", b"\xff\xfe", b"<a></b>", b"<?xml version='1.0' encoding='latin1'?>"):
        events = StreamParser().feed(data)
        assert isinstance(events[-1], StreamFault)
        stream_error(events[-1].condition, events[-1].text)  # must not raise


def test_serialize_output_never_redeclares_the_parent_namespace() -> None:
    m = message()
    for i in range(5):
        ext = SubElement(m, "{urn:ext}e", {"n": str(i)})
        SubElement(SubElement(ext, "{urn:ext}f"), "{urn:ext}g")
    out = serialize(m).decode()
    assert out.count('xmlns="urn:ext"') == 5
    assert re.search(r"<[fg] xmlns", out) is None


@pytest.mark.parametrize(
    "tag", ["bad name", "{urn:x}1st", "{urn:x}a:b", "a<b", "{urn:x}", "{jabber:client}bo>dy"]
)
def test_element_names_that_are_not_xml_names_are_refused(tag: str) -> None:
    m = message()
    SubElement(m, tag)
    with pytest.raises(ValueError):
        serialize(m)


@pytest.mark.parametrize("name", ["xmlns", "xmlns:foo", "p:x", "a b", "1a", 'a="1" b'])
def test_attribute_names_that_would_forge_markup_are_refused(name: str) -> None:
    m = message()
    m.set(name, "urn:evil")
    with pytest.raises(ValueError):
        serialize(m)


def test_non_ascii_names_are_fine() -> None:
    el = Element("{urn:x}données", {"clé": "v"})
    assert reparse(serialize(el)).attrib == {"clé": "v"}


def test_element_in_the_xml_namespace_is_relayed_with_the_xml_prefix() -> None:
    # A peer may send <xml:foo/>; declaring the XML namespace as default would be malformed.
    p = StreamParser()
    p.feed(stream_header(from_="a", to="b", id_="c"))
    [ev] = p.feed(b"<message><xml:foo xml:space='preserve'><bar/></xml:foo></message>")
    assert isinstance(ev, StanzaReceived)
    out = serialize(ev.element)
    assert out == b'<message><xml:foo xml:space="preserve"><bar/></xml:foo></message>'
    assert reparse(out)[0][0].tag == C + "bar"


def test_xmlns_namespace_is_refused_and_empty_attribute_namespace_is_plain() -> None:
    with pytest.raises(ValueError):
        serialize(Element("{http://www.w3.org/2000/xmlns/}x"))
    with pytest.raises(ValueError):
        serialize(Element(C + "x", {"{http://www.w3.org/2000/xmlns/}p": "urn:x"}))
    assert serialize(Element(C + "x", {"{}a": "1"})) == b'<x a="1"/>'


@pytest.mark.parametrize("stream_ns", [ns.CLIENT, ns.SERVER])
def test_parse_element_reads_back_what_serialize_wrote(stream_ns: str) -> None:
    m = message("stored & <kept>")
    SubElement(SubElement(m, "{urn:xmpp:delay}delay", {"stamp": "2026-01-01T00:00:00Z"}), "x")
    back = parse_element(serialize(m, stream_ns), content_ns=stream_ns)
    assert back.tag == C + "message" and back[0].text == "stored & <kept>"
    assert back[1].tag == "{urn:xmpp:delay}delay" and back[1][0].tag == "x"
    assert parse_element(serialize(m).decode() + "\n").tag == C + "message"  # str and whitespace are fine


def test_parse_element_keeps_the_stream_prefix_bound() -> None:
    f = Element("{http://etherx.jabber.org/streams}features")
    assert parse_element(serialize(f)).tag == "{http://etherx.jabber.org/streams}features"


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<message/><message/>", "bad-format"),
        (b"", "bad-format"),
        (b"<message>", "not-well-formed"),
        (b"<message><!-- x --></message>", "restricted-xml"),
        (b"<message>" + b"x" * 2000 + b"</message>", "policy-violation"),
        (b"</stream:stream>", "bad-format"),
        (b"<message/></stream:stream><junk", "bad-format"),
    ],
)
def test_parse_element_refuses_anything_but_one_element(data: bytes, condition: str) -> None:
    with pytest.raises(ValueError, match=f"^{condition}:"):
        parse_element(data, max_bytes=1000)
