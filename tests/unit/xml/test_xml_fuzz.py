"""Property tests: chunking never changes what is parsed, garbage never raises, serialize/parse round trip."""

from __future__ import annotations

from xml.etree.ElementTree import Element

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmppim.xml import ns
from xmppim.xml.parser import Event, StanzaReceived, StreamClosed, StreamFault, StreamOpened, StreamParser
from xmppim.xml.serialize import STREAM_CLOSE, STREAM_ERROR_CONDITIONS, serialize, stream_header

C = "{jabber:client}"
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Characters XML 1.0 can carry, weighted towards the interesting ones: markup, the five entities,
# whitespace XML normalises, non-ASCII and astral characters (4-byte UTF-8).
xml_chars = st.one_of(
    st.sampled_from(list("&<>\"' \t\r\n]") + ["é", "€", "😀", "\U0010fffd", "\ue000"]),
    st.characters(
        codec="utf-8",
        exclude_characters="\ufffe\uffff",
        min_codepoint=0x20,
    ),
)
texts = st.text(xml_chars, max_size=12)
optional_texts = st.none() | texts
local_names = st.sampled_from(["message", "body", "x", "item", "a-b", "q.r", "z_1", "ÿname"])
namespaces = st.sampled_from(
    [ns.CLIENT, "urn:x", "urn:y:1", "http://jabber.org/protocol/disco#info", "", ns.XML, 'a&b"<c>']
)
attr_names = st.sampled_from(["to", "from", "id", "type", "a", ns.XML_LANG, "{urn:attr}k", "{urn:x}v"])


@st.composite
def elements(draw: st.DrawFn, depth: int = 0) -> Element:
    ns_ = draw(namespaces)
    el = Element(f"{{{ns_}}}{draw(local_names)}" if ns_ else draw(local_names))
    for name in draw(st.lists(attr_names, max_size=3, unique=True)):
        el.set(name, draw(texts))
    el.text = draw(optional_texts)
    if depth < 3:
        for child in draw(st.lists(elements(depth + 1), max_size=3)):
            child.tail = draw(optional_texts)
            el.append(child)
    return el


def norm(el: Element) -> tuple[object, ...]:
    """Structure for comparison: '' and None text are the same thing in XML."""
    return (el.tag, dict(el.attrib), el.text or "", el.tail or "", [norm(c) for c in el])


def norm_top(el: Element) -> tuple[object, ...]:
    t = norm(el)
    return (*t[:3], "", t[4])


def stream_bytes(stanzas: list[Element], gaps: list[str], content_ns: str = ns.CLIENT) -> bytes:
    out = [stream_header(from_="example.com", to="juliet@example.com", id_="i", content_ns=content_ns)]
    for el, gap in zip(stanzas, gaps, strict=False):
        out.append(gap.encode())
        out.append(serialize(el, content_ns))
    out.append(STREAM_CLOSE)
    return b"".join(out)


def parse_chunks(data: bytes, cuts: list[int], content_ns: str = ns.CLIENT) -> list[Event]:
    p = StreamParser(content_ns=content_ns)
    events: list[Event] = []
    prev = 0
    for cut in sorted(set(cuts)) + [len(data)]:
        events += p.feed(data[prev:cut])
        prev = cut
    return events


HAND_WRITTEN = (
    b"<message type='chat' xml:lang='en'><body>&amp;&lt;&gt;&quot;&apos;&#233;&#x1F600;"
    b"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80<![CDATA[<raw & stuff>]]>\r\nend</body>"
    b"<x xmlns='urn:x' xmlns:p='urn:p' p:a='&#x9;&#10;'><p:y/></x></message>"
)


@SETTINGS
@given(
    stanzas=st.lists(elements(), min_size=1, max_size=4),
    gaps=st.lists(st.sampled_from(["", " ", "\n", "\r\n\t "]), min_size=4, max_size=4),
    content_ns=st.sampled_from([ns.CLIENT, ns.SERVER, ns.COMPONENT]),
    data=st.data(),
)
def test_random_chunking_parses_like_feeding_whole(
    stanzas: list[Element], gaps: list[str], content_ns: str, data: st.DataObject
) -> None:
    stream = stream_bytes(stanzas, gaps, content_ns)
    stream = stream[: -len(STREAM_CLOSE)] + HAND_WRITTEN + STREAM_CLOSE
    whole = parse_chunks(stream, [], content_ns)
    assert isinstance(whole[0], StreamOpened) and whole[-1] == StreamClosed()
    assert not any(isinstance(e, StreamFault) for e in whole), whole
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=40))
    chunked = parse_chunks(stream, cuts, content_ns)
    assert [type(e) for e in chunked] == [type(e) for e in whole]
    got = [norm_top(e.element) for e in chunked if isinstance(e, StanzaReceived)]
    want = [norm_top(e.element) for e in whole if isinstance(e, StanzaReceived)]
    assert got == want
    # ...and it is what was serialized (the round-trip property through a whole stream).
    assert got[: len(stanzas)] == [norm_top(el) for el in stanzas]
    assert got[-1][2] == ""  # the hand-written message, parsed
    hand = [e.element for e in whole if isinstance(e, StanzaReceived)][-1]
    assert hand[0].text == "&<>\"'é😀é€😀<raw & stuff>\nend"
    assert hand[1][0].tag == "{urn:p}y" and hand[1].get("{urn:p}a") == "\t\n"


@SETTINGS
@given(el=elements(), stream_ns=st.sampled_from([ns.CLIENT, ns.SERVER, ns.COMPONENT]))
def test_serialize_parse_round_trip(el: Element, stream_ns: str) -> None:
    out = serialize(el, stream_ns)
    p = StreamParser(content_ns=stream_ns)
    events = p.feed(stream_header(from_=None, to=None, id_=None, content_ns=stream_ns) + out)
    assert len(events) == 2 and isinstance(events[1], StanzaReceived), events
    assert norm_top(events[1].element) == norm_top(el)


@SETTINGS
@given(el=elements())
def test_serialized_namespace_declarations_are_minimal(el: Element) -> None:
    """Count xmlns= in the output: exactly one per element whose namespace differs from its parent's."""

    def needed(e: Element, parent_ns: str) -> int:
        tag = e.tag
        e_ns = tag[1:].partition("}")[0] if tag[0] == "{" else ""
        if e_ns == ns.XML:  # written with the xml: prefix, leaves the default namespace alone
            return sum(needed(c, parent_ns) for c in e)
        return (e_ns != parent_ns) + sum(needed(c, e_ns) for c in e)

    out = serialize(el)
    # Generated attribute prefixes are declared with xmlns:aN=, which this does not count.
    assert out.count(b' xmlns="') == needed(el, ns.CLIENT)


@SETTINGS
@given(garbage=st.binary(max_size=300), data=st.data())
def test_garbage_never_raises(garbage: bytes, data: st.DataObject) -> None:
    for prefix in (b"", stream_header(from_=None, to=None, id_=None)):
        stream = prefix + garbage
        cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
        events = parse_chunks(stream, cuts)
        check_fault_is_last(events)


@SETTINGS
@given(
    stanzas=st.lists(elements(), min_size=1, max_size=3),
    data=st.data(),
)
def test_mutated_streams_never_raise(stanzas: list[Element], data: st.DataObject) -> None:
    stream = bytearray(stream_bytes(stanzas, [" "] * 3))
    for _ in range(data.draw(st.integers(1, 5))):
        i = data.draw(st.integers(0, len(stream) - 1))
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        b = data.draw(st.sampled_from([0, 0x26, 0x3C, 0x3E, 0x21, 0x3F, 0x80, 0xC3, 0xF0, 0xFF]))
        if op == "flip":
            stream[i] = b
        elif op == "insert":
            stream.insert(i, b)
        else:
            del stream[i]
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    check_fault_is_last(parse_chunks(bytes(stream), cuts))


def check_fault_is_last(events: list[Event]) -> None:
    """A fault or close ends the events; whatever was accepted can be relayed unchanged."""
    for i, e in enumerate(events):
        if isinstance(e, StanzaReceived):
            check_relayable(e.element)
        if isinstance(e, StreamFault):
            assert i == len(events) - 1, events
            assert e.condition in STREAM_ERROR_CONDITIONS
        if isinstance(e, StreamClosed):
            assert i == len(events) - 1, events


def fold_server(t: object) -> object:
    """Structure with jabber:server tags counted as jabber:client: an odd {jabber:server} element
    inside a stanza crosses to an s2s stream as content namespace, which is canonical on arrival."""
    if isinstance(t, tuple):
        return tuple(fold_server(x) for x in t)
    if isinstance(t, list):
        return [fold_server(x) for x in t]
    if isinstance(t, str) and t.startswith("{jabber:server}"):
        return C + t[len("{jabber:server}") :]
    return t


def check_relayable(el: Element, origin_ns: str = ns.CLIENT) -> None:
    """Anything the parser accepted must serialize (no ValueError) to XML that parses back the same:
    otherwise a peer could get a stanza relayed that kills the recipient's stream."""
    for stream_ns in (ns.CLIENT, ns.SERVER):
        p = StreamParser(content_ns=stream_ns)
        header = stream_header(from_=None, to=None, id_=None, content_ns=stream_ns)
        events = p.feed(header + serialize(el, stream_ns))
        assert len(events) == 2 and isinstance(events[1], StanzaReceived), events
        if stream_ns == origin_ns:
            assert norm_top(events[1].element) == norm_top(el)
        else:
            assert fold_server(norm_top(events[1].element)) == fold_server(norm_top(el))


@SETTINGS
@given(
    body=st.lists(
        st.sampled_from(
            [
                b"<a>",
                b"</a>",
                b"<b xmlns='urn:b'>",
                b"</b>",
                b"<xml:c>",
                b"</xml:c>",
                b"<p:d xmlns:p='urn:p'>",
                b"</p:d>",
                b"<xmlns>",
                b"</xmlns>",
                b" x='1'",
                b" xml:lang='en'",
                b" p:y='2'",
                b"text",
                b"&amp;",
                b"&#x10FFFF;",
                b"\xc3\xa9",
                b"\r\n",
                b"<![CDATA[]]>]]>",
                b"<e/>",
                b">",
                b"<",
            ]
        ),
        max_size=25,
    )
)
def test_tag_soup_stanzas_are_relayable_or_refused(body: list[bytes]) -> None:
    p = StreamParser()
    p.feed(stream_header(from_=None, to=None, id_=None))
    events = p.feed(b"<message xmlns:p='urn:p'>" + b"".join(body) + b"</message>")
    check_fault_is_last(events)


raw_text = st.lists(
    st.sampled_from(
        [
            b"t",
            b"&amp;",
            b"&lt;",
            b"&gt;",
            b"&quot;",
            b"&apos;",
            b"&#x10FFFF;",
            b"&#13;",
            b"\r\n",
            b"\r",
            b"\xc3\xa9",
            b"\xf0\x9f\x98\x80",
            b"<![CDATA[<&>]]>",
            b"]]&gt;",
            b"\t",
            b" ",
        ]
    ),
    max_size=5,
).map(b"".join)
raw_attr_value = st.lists(
    st.sampled_from([b"v", b"&amp;", b"&lt;", b"\t", b"\n", b"&#9;", b"&#10;", b'"', b"\xc3\xa9"]), max_size=4
).map(b"".join)


@st.composite
def raw_elements(draw: st.DrawFn, depth: int = 0) -> bytes:
    """Well-formed XML written the many ways a peer may write it (prefixes, xml:*, CDATA, references)."""
    name = draw(st.sampled_from([b"a", b"p:b", b"q:c", b"xml:d", b"xmlns", b"\xc3\xa9l\xc3\xa9ment"]))
    decls = b""
    if name.startswith(b"p:") or draw(st.booleans()):
        decls += b" xmlns:p='urn:p'"
    if name.startswith(b"q:"):
        decls += draw(st.sampled_from([b" xmlns:q='urn:q'", b" xmlns:q='jabber:client'"]))
    decls += draw(
        st.sampled_from([b"", b" xmlns='urn:d'", b" xmlns='jabber:client'", b" xmlns='jabber:server'"])
    )
    attrs = b""
    for i, attr in enumerate(
        draw(st.lists(st.sampled_from([b"x", b"p:y", b"xml:lang", b"xml:space"]), unique=True, max_size=3))
    ):
        if attr == b"p:y" and b"xmlns:p" not in decls:
            decls += b" xmlns:p='urn:p'"
        quote = b"'" if i % 2 else b'"'
        value = draw(raw_attr_value).replace(quote, b"")
        attrs += b" " + attr + b"=" + quote + value + quote
    if depth >= 3 or draw(st.booleans()):
        return b"<" + name + decls + attrs + b"/>"
    inner = draw(raw_text)
    for child in draw(st.lists(raw_elements(depth + 1), max_size=3)):
        inner += child + draw(raw_text)
    return b"<" + name + decls + attrs + b">" + inner + b"</" + name + b">"


@SETTINGS
@given(stanza=raw_elements(), content_ns=st.sampled_from([ns.CLIENT, ns.SERVER]))
def test_any_well_formed_stanza_is_accepted_and_relayable(stanza: bytes, content_ns: str) -> None:
    p = StreamParser(content_ns=content_ns)
    p.feed(stream_header(from_=None, to=None, id_=None, content_ns=content_ns))
    events = p.feed(b"<message xmlns:p='urn:p'>" + stanza + b"</message>")
    assert len(events) == 1 and isinstance(events[0], StanzaReceived), events
    check_relayable(events[0].element, content_ns)
