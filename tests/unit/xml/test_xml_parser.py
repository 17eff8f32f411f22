"""StreamParser: events, namespaces, RFC 6120 §11.1 restricted XML, §13.12 size limits, restarts."""

from __future__ import annotations

import time
import tracemalloc
from xml.etree.ElementTree import Element

import pytest

from xmppim.xml import ns
from xmppim.xml.parser import (
    Event,
    StanzaReceived,
    StreamClosed,
    StreamFault,
    StreamOpened,
    StreamParser,
)

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>"
)
S2S_HEADER = (
    b"<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' "
    b"xmlns:db='jabber:server:dialback' from='a.example' to='b.example' version='1.0'>"
)
C = "{jabber:client}"


def opened(parser: StreamParser | None = None, header: bytes = HEADER) -> StreamParser:
    p = parser or StreamParser()
    events = p.feed(header)
    assert len(events) == 1 and isinstance(events[0], StreamOpened)
    return p


def stanzas(events: list[Event]) -> list[Element]:
    out = []
    for e in events:
        assert isinstance(e, StanzaReceived), events
        out.append(e.element)
    return out


def only_fault(events: list[Event]) -> StreamFault:
    assert events and isinstance(events[-1], StreamFault), events
    return events[-1]


def feed_bytewise(p: StreamParser, data: bytes) -> list[Event]:
    out: list[Event] = []
    for i in range(len(data)):
        out += p.feed(data[i : i + 1])
    return out


# -- stream header and stanzas -----------------------------------------------------------------------


def test_header_gives_attrs_with_xml_lang_in_clark_notation_and_default_ns() -> None:
    [ev] = StreamParser().feed(HEADER)
    assert ev == StreamOpened(
        {"to": "example.com", "version": "1.0", ns.XML_LANG: "en"}, default_ns="jabber:client"
    )


def test_header_without_default_namespace_reports_empty_default_ns() -> None:
    [ev] = StreamParser().feed(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='x'>")
    assert ev == StreamOpened({"to": "x"}, default_ns="")


def test_header_split_at_every_byte_gives_one_event() -> None:
    events = feed_bytewise(StreamParser(), HEADER)
    assert len(events) == 1 and isinstance(events[0], StreamOpened)


def test_message_is_built_with_canonical_tags_attributes_and_exact_text() -> None:
    p = opened()
    [msg] = stanzas(
        p.feed(
            b"<message to='juliet@example.com' type='chat' xml:lang='fr' id='1'>"
            b"<body>a &amp; b &lt; c &gt; d &quot;&apos; &#233;&#x1F600;\xf0\x9f\x98\x80</body>"
            b"tail text<x xmlns='urn:x' xmlns:q='urn:q' q:k='v'><y/>mid</x>\n</message>"
        )
    )
    assert msg.tag == C + "message"
    assert msg.attrib == {"to": "juliet@example.com", "type": "chat", ns.XML_LANG: "fr", "id": "1"}
    body, x = list(msg)
    assert body.tag == C + "body"
    assert body.text == "a & b < c > d \"' é\U0001f600\U0001f600"
    assert body.tail == "tail text"
    assert x.tag == "{urn:x}x" and x.attrib == {"{urn:q}k": "v"}
    assert x[0].tag == "{urn:x}y" and x[0].tail == "mid"
    assert x.tail == "\n"
    assert msg.text is None


def test_whitespace_keepalives_produce_no_events() -> None:
    p = opened()
    assert p.feed(b" ") == []
    assert p.feed(b"\n\r\n\t  ") == []
    [el] = stanzas(p.feed(b"  <presence/>  \n"))
    assert el.tag == C + "presence"
    assert p.feed(b" " * 100000) == []  # whitespace between stanzas never counts toward a stanza


def test_stream_level_elements_are_delivered_as_stanzas() -> None:
    p = opened()
    events = p.feed(
        b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>"
        b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>"
        b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    )
    tags = [e.tag for e in stanzas(events)]
    assert tags == [
        "{urn:ietf:params:xml:ns:xmpp-tls}starttls",
        "{urn:ietf:params:xml:ns:xmpp-sasl}auth",
        "{http://etherx.jabber.org/streams}features",
        "{http://etherx.jabber.org/streams}error",
    ]
    auth = stanzas(events)[1]
    assert auth.text == "AGEAYg==" and auth.attrib == {"mechanism": "PLAIN"}


def test_server_stream_content_namespace_is_made_canonical_including_descendants() -> None:
    p = opened(StreamParser(content_ns=ns.SERVER), S2S_HEADER)
    [msg, db] = stanzas(
        p.feed(
            b"<message from='a@a.example' to='b@b.example'><body>hi</body>"
            b"<forwarded xmlns='urn:xmpp:forward:0'><message xmlns='jabber:client'><body>x</body></message>"
            b"</forwarded></message><db:result from='a.example' to='b.example'>key</db:result>"
        )
    )
    assert msg.tag == C + "message" and msg[0].tag == C + "body"
    assert msg[1].tag == "{urn:xmpp:forward:0}forwarded"
    assert msg[1][0].tag == C + "message" and msg[1][0][0].tag == C + "body"
    assert db.tag == "{jabber:server:dialback}result" and db.text == "key"


def test_component_stream_content_namespace_is_made_canonical() -> None:
    p = StreamParser(content_ns=ns.COMPONENT)
    header = (
        b"<stream:stream xmlns='jabber:component:accept' "
        b"xmlns:stream='http://etherx.jabber.org/streams' to='comp.example'>"
    )
    [ev] = p.feed(header)
    assert isinstance(ev, StreamOpened) and ev.default_ns == ns.COMPONENT
    [hs, iq] = stanzas(p.feed(b"<handshake>abc</handshake><iq type='get' id='1'/>"))
    assert hs.tag == C + "handshake" and iq.tag == C + "iq"


def test_client_parser_leaves_foreign_content_namespace_alone() -> None:
    # The machine sees default_ns='jabber:server' and refuses the stream (invalid-namespace).
    p = StreamParser()
    [ev] = p.feed(S2S_HEADER)
    assert isinstance(ev, StreamOpened) and ev.default_ns == ns.SERVER
    [msg] = stanzas(p.feed(b"<message/>"))
    assert msg.tag == "{jabber:server}message"


def test_stream_close_is_reported_and_nothing_after_it_is_parsed() -> None:
    p = opened()
    events = p.feed(b"<presence/></stream:stream><garbage")
    assert isinstance(events[0], StanzaReceived) and events[1:] == [StreamClosed()]
    assert p.feed(b"<message/>") == []


def test_many_stanzas_in_one_chunk_come_out_in_order() -> None:
    p = opened()
    data = b"".join(b"<message id='%d'/>" % i for i in range(50))
    assert [e.get("id") for e in stanzas(p.feed(data))] == [str(i) for i in range(50)]


def test_cdata_section_is_plain_text() -> None:
    p = opened()
    [msg] = stanzas(p.feed(b"<message><body><![CDATA[<b>&amp;</b>]]></body></message>"))
    assert msg[0].text == "<b>&amp;</b>"


def test_utf8_split_inside_a_multibyte_sequence() -> None:
    p = opened()
    data = "<message><body>é€😀</body></message>".encode()
    cut = data.index(b"\xf0") + 2
    assert p.feed(data[:cut]) == []
    [msg] = stanzas(p.feed(data[cut:]))
    assert msg[0].text == "é€😀"


# -- restricted XML (RFC 6120 §11.1) and other faults ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<!DOCTYPE stream:stream>", "restricted-xml"),
        (b"<!DOCTYPE x [<!ENTITY e 'v'>]>", "restricted-xml"),
        (b"<!DOCTYPE x SYSTEM 'file:///etc/passwd'>", "restricted-xml"),
        (b"<!-- hi -->", "restricted-xml"),
        (b"<?php echo 1; ?>", "restricted-xml"),
        (b"<?xml version='1.0' encoding='ISO-8859-1'?>", "unsupported-encoding"),
        (b"<?xml version='1.0' encoding='UTF-16'?>", "unsupported-encoding"),
        (b"<html><body>", "invalid-namespace"),
        (b"<stream:stream xmlns:stream='urn:wrong'>", "invalid-namespace"),
        (b"<stream xmlns='jabber:client'>", "invalid-namespace"),
        (b"GET / HTTP/1.1\r\n\r\n", "not-well-formed"),
        (b"\xff\xfe<\x00s\x00", "unsupported-encoding"),
        (b"\xfe\xff\x00<\x00s", "unsupported-encoding"),
        (b"<\x00s\x00", "unsupported-encoding"),  # UTF-16LE without a BOM: expat would detect it
        (b"\x00<\x00s", "unsupported-encoding"),
        (b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' a='1' a='2'", "not-well-formed"),
    ],
)
def test_before_the_header(data: bytes, condition: str) -> None:
    events = StreamParser().feed(data + b">")
    assert len(events) == 1
    assert only_fault(events).condition == condition


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<!-- comment between stanzas -->", "restricted-xml"),
        (b"<message><!-- comment in a stanza --></message>", "restricted-xml"),
        (b"<?pi data?>", "restricted-xml"),
        (b"<message><?pi data?></message>", "restricted-xml"),
        (b"<?xml version='1.0'?>", "not-well-formed"),  # XML declaration is only allowed first
        (b"<!DOCTYPE x>", "not-well-formed"),  # a DTD inside the document is not even XML
        (b"<message><body>&nbsp;</body></message>", "restricted-xml"),
        (b"<message to='&foo;'/>", "restricted-xml"),
        (b"<message></presence>", "not-well-formed"),
        (b"<message><body>\xc3\x28</body></message>", "not-well-formed"),
        (b"<message><body>\x00</body></message>", "not-well-formed"),
        (b"<message><body>&#0;</body></message>", "not-well-formed"),
        (b"<message a='1' a='2'/>", "not-well-formed"),
        (b"<foo:message/>", "not-well-formed"),  # unbound prefix
        (b"hello", "bad-format"),
        # '}' (expat's namespace separator) would break Clark notation; expat >= 2.4.5 refuses it.
        (b"<message><x xmlns='urn:a}b'/></message>", "not-well-formed"),
        (b"<message xmlns:p='urn:a}b' p:k='v'/>", "not-well-formed"),
        (b"</stream:wrong>", "not-well-formed"),
    ],
)
def test_inside_the_stream(data: bytes, condition: str) -> None:
    p = opened()
    events = p.feed(data)
    assert only_fault(events).condition == condition
    assert events == [events[-1]]
    assert p.feed(b"<message/>") == []  # the stream is dead


def test_billion_laughs_is_refused_fast_without_expanding() -> None:
    lol = b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    for i in range(1, 10):
        prev = b"&lol%d;" % (i - 1) if i > 1 else b"&lol;"
        lol += b"<!ENTITY lol%d '%s'>" % (i, prev * 10)
    lol += b"]><stream:stream xmlns:stream='http://etherx.jabber.org/streams'>&lol9;"
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        events = StreamParser().feed(lol)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert events == [events[-1]] and only_fault(events).condition == "restricted-xml"
    assert time.perf_counter() - t0 < 0.5
    assert peak < 2_000_000


def test_entity_declared_after_doctype_start_is_never_reached_even_bytewise() -> None:
    events = feed_bytewise(StreamParser(), b"<!DOCTYPE x [<!ENTITY e 'v'>]><stream:stream>")
    assert events == [events[-1]] and only_fault(events).condition == "restricted-xml"


def test_events_before_a_fault_in_the_same_chunk_are_kept() -> None:
    p = opened()
    events = p.feed(b"<presence/><message><!-- x --></message>")
    assert isinstance(events[0], StanzaReceived)
    assert only_fault(events).condition == "restricted-xml" and len(events) == 2


@pytest.mark.parametrize("bytewise", [False, True])
@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_utf16_stream_is_refused_even_though_expat_could_read_it(bytewise: bool, codec: str) -> None:
    data = HEADER.decode().encode(codec)
    p = StreamParser()
    events = feed_bytewise(p, data) if bytewise else p.feed(data)
    assert events == [events[-1]] and only_fault(events).condition == "unsupported-encoding"
    p.reset()
    events = p.feed(b"\x00")
    events += p.feed(b"<")
    assert events == [events[-1]] and only_fault(events).condition == "unsupported-encoding"


def test_utf8_bom_is_tolerated() -> None:
    p = StreamParser()
    assert p.feed(b"\xef") == []
    assert isinstance(p.feed(b"\xbb\xbf" + HEADER)[0], StreamOpened)


def test_utf8_xml_declaration_is_accepted() -> None:
    p = StreamParser()
    events = p.feed(b"<?xml version='1.0' encoding='UTF-8'?>" + HEADER[len(b"<?xml version='1.0'?>") :])
    assert isinstance(events[0], StreamOpened)


def test_predefined_and_character_references_work_in_attributes() -> None:
    p = opened()
    [m] = stanzas(p.feed(b"<message id='&lt;&amp;&gt;&quot;&apos;&#10;&#x9;'/>"))
    assert m.get("id") == "<&>\"'\n\t"


# -- size limits (RFC 6120 §13.12) --------------------------------------------------------------------


def sized_stanza(size: int) -> bytes:
    """A message of exactly ``size`` bytes from '<' of the start tag to '>' of the end tag."""
    frame = b"<message><body></body></message>"
    return frame[:15] + b"x" * (size - len(frame)) + frame[15:]


@pytest.mark.parametrize("bytewise", [False, True])
def test_stanza_of_exactly_the_limit_is_accepted_one_byte_more_is_not(bytewise: bool) -> None:
    limit = 2000
    for size, ok in ((limit, True), (limit + 1, False)):
        p = opened(StreamParser(max_stanza_bytes=limit))
        data = b"  " + sized_stanza(size) + b"  <presence/>"
        events = feed_bytewise(p, data) if bytewise else p.feed(data)
        if ok:
            assert [e.tag for e in stanzas(events)] == [C + "message", C + "presence"]
        else:
            assert events == [events[-1]] and only_fault(events).condition == "policy-violation"


def test_empty_element_stanza_size_is_measured_exactly() -> None:
    limit = 1000
    frame = b"<presence id=''/>"
    exact = frame[:14] + b"x" * (limit - len(frame)) + frame[14:]
    assert len(exact) == limit
    assert stanzas(opened(StreamParser(max_stanza_bytes=limit)).feed(exact))
    over = exact[:14] + b"x" + exact[14:]
    assert only_fault(opened(StreamParser(max_stanza_bytes=limit)).feed(over)).condition == "policy-violation"


def test_many_small_stanzas_may_exceed_the_limit_together() -> None:
    p = opened(StreamParser(max_stanza_bytes=1000))
    data = b"<message><body>" + b"y" * 900 + b"</body></message>"
    assert len(stanzas(p.feed(data * 20))) == 20


def test_oversize_stanza_is_caught_while_arriving_bytewise() -> None:
    limit = 500
    p = opened(StreamParser(max_stanza_bytes=limit))
    fed = 0
    events: list[Event] = []
    p.feed(b"<message><body>")
    fed = len(b"<message><body>")
    while not events:
        events = p.feed(b"z")
        fed += 1
        assert fed < 10_000
    assert only_fault(events).condition == "policy-violation"
    assert fed == limit + 1
    assert p.feed(b"</body></message>") == []


def test_endless_attribute_value_is_caught_and_memory_stays_bounded() -> None:
    limit = 262144
    p = opened(StreamParser(max_stanza_bytes=limit))
    chunk = b"a" * 65536
    tracemalloc.start()
    try:
        events = p.feed(b"<message to='")
        fed = 0
        while not events:
            events = p.feed(chunk)
            fed += len(chunk)
            assert fed < 10 * limit
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert only_fault(events).condition == "policy-violation"
    assert fed <= limit + 2 * len(chunk)
    assert peak < 4 * limit


def test_endless_start_tag_name_is_caught() -> None:
    p = opened(StreamParser(max_stanza_bytes=10_000))
    events = p.feed(b"<m" + b"e" * 20_000)
    assert only_fault(events).condition == "policy-violation"


def test_endless_stream_header_is_caught() -> None:
    p = StreamParser(max_stanza_bytes=10_000)
    events = p.feed(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='" + b"x" * 30_000)
    assert only_fault(events).condition == "policy-violation"


def test_one_huge_chunk_is_refused_without_building_it_all() -> None:
    p = opened(StreamParser(max_stanza_bytes=262144))
    data = b"<message>" + b"<b>t</b>" * 500_000 + b"</message>"  # 4 MB in one call
    tracemalloc.start()
    try:
        events = p.feed(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert only_fault(events).condition == "policy-violation"
    assert peak < 8_000_000  # a 4 MB tree of elements would take ~100 MB


def test_nesting_of_exactly_max_depth_is_accepted_deeper_is_not() -> None:
    p = opened(StreamParser(max_depth=100))
    ok = b"<message>" + b"<a>" * 99 + b"</a>" * 99 + b"</message>"
    [el] = stanzas(p.feed(ok))
    depth = 1
    while len(el):
        el = el[0]
        depth += 1
    assert depth == 100
    deep = b"<message>" + b"<a>" * 100
    assert only_fault(p.feed(deep)).condition == "policy-violation"


# -- stream restart (RFC 6120 §5.4.3.3, §6.4.6) --------------------------------------------------------


def test_reset_accepts_a_new_xml_declaration_and_header() -> None:
    p = opened()
    [auth] = stanzas(p.feed(b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>x</auth>"))
    assert auth.tag == "{urn:ietf:params:xml:ns:xmpp-sasl}auth"
    p.reset()
    events = p.feed(HEADER + b"<iq type='set' id='b'/>")
    assert isinstance(events[0], StreamOpened)
    assert stanzas(events[1:])[0].tag == C + "iq"


def test_reset_drops_a_half_received_stanza() -> None:
    p = opened()
    assert p.feed(b"<message><body>half") == []
    p.reset()
    events = p.feed(HEADER + b"<presence/>")
    assert isinstance(events[0], StreamOpened) and len(stanzas(events[1:])) == 1


def test_without_reset_a_second_header_is_just_a_stream_child() -> None:
    p = opened()
    # A new <stream:stream> inside the old stream is an open first-level element, not a header.
    assert p.feed(HEADER[len(b"<?xml version='1.0'?>") :]) == []


def test_reset_revives_a_parser_after_a_fault() -> None:
    p = opened()
    only_fault(p.feed(b"<!-- -->"))
    p.reset()
    assert isinstance(p.feed(HEADER)[0], StreamOpened)


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError):
        StreamParser(max_stanza_bytes=0)
    with pytest.raises(ValueError):
        StreamParser(max_depth=0)


def test_whitespace_flood_between_stanzas_never_counts_toward_the_limit() -> None:
    p = opened(StreamParser(max_stanza_bytes=100))
    assert p.feed(b" " * 50_000) == []
    assert p.feed(b"\r\n\t " * 10_000) == []
    for _ in range(300):
        assert p.feed(b"\n") == []
    assert len(stanzas(p.feed(b"<presence/>"))) == 1


def test_any_prefix_bound_to_the_streams_namespace_is_accepted() -> None:
    p = StreamParser()
    [ev] = p.feed(b"<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client' to='x'>")
    assert ev == StreamOpened({"to": "x"}, "jabber:client")
    assert p.feed(b"<s:features/></s:stream>")[1] == StreamClosed()


def test_stream_header_namespace_declarations_are_inherited_by_stanzas() -> None:
    p = opened(
        header=b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' "
        b"xmlns:p='urn:pre'>"
    )
    [m] = stanzas(p.feed(b"<message><p:x p:a='1'/></message>"))
    assert m[0].tag == "{urn:pre}x" and m[0].attrib == {"{urn:pre}a": "1"}
