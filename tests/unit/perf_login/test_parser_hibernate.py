"""StreamParser.hibernate(): an idle stream drops its expat parser and parses on as if nothing happened."""

from __future__ import annotations

import tracemalloc
from xml.etree.ElementTree import tostring

from hypothesis import given, settings
from hypothesis import strategies as st

from xmppim.xml.parser import Event, StanzaReceived, StreamClosed, StreamFault, StreamOpened, StreamParser

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" to='localhost' version='1.0'>"
)
STANZAS = [
    b"<iq type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>r</resource></bind></iq>",
    b"<presence/>",
    b"\n ",
    b"<message to='a@b' id='1'><body>caf\xc3\xa9 &amp; &lt;tea&gt;</body></message>",
    b"<presence><status>a&gt;b</status><x:c xmlns:x='urn:x'/></presence>",
    b"  ",
    b"<message to='c@d'><body>2</body></message>\r\n",
]


def summary(events: list[Event]) -> list[str]:
    out = []
    for ev in events:
        if isinstance(ev, StanzaReceived):
            out.append(tostring(ev.element, encoding="unicode"))
        else:
            out.append(repr(ev))
    return out


def test_a_hibernated_parser_goes_on_with_the_next_stanza() -> None:
    p = StreamParser()
    opened = p.feed(HEADER + STANZAS[0])
    assert isinstance(opened[0], StreamOpened) and isinstance(opened[1], StanzaReceived)
    assert p.hibernate()
    assert p._parser is None  # expat and its buffers are gone
    got = p.feed(STANZAS[3])
    assert summary(got) == summary(StreamParser().feed(HEADER + STANZAS[3])[1:])
    assert not any(isinstance(e, StreamOpened) for e in got)  # the primed header is not reported
    assert isinstance(p.feed(b"</stream:stream>")[-1], StreamClosed)


def test_the_header_prefix_and_extra_namespace_declarations_survive() -> None:
    """The end tag must match the peer's prefix, and prefixes bound on the header stay bound."""
    p = StreamParser()
    p.feed(b"<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client' xmlns:f='urn:f&apos;&#10;'>")
    p.feed(b"<presence/>")
    assert p.hibernate()
    ev = p.feed(b"<message><f:x/></message>")
    assert isinstance(ev[0], StanzaReceived)
    assert ev[0].element[0].tag == "{urn:f'\n}x"
    assert p.hibernate()
    assert isinstance(p.feed(b"</s:stream>")[-1], StreamClosed)


def test_no_hibernation_inside_a_stanza_or_a_tag() -> None:
    p = StreamParser()
    p.feed(HEADER)
    p.feed(b"<message><body>half")
    assert not p.hibernate()  # inside a stanza
    p.feed(b"</body></message><pres")
    assert not p.hibernate()  # a start tag is half read
    ev = p.feed(b"ence/>")
    assert isinstance(ev[0], StanzaReceived) and ev[0].element.tag == "{jabber:client}presence"
    assert p.hibernate()


def test_empty_element_stanzas_and_markup_in_attributes() -> None:
    """Expat reports an empty-element stanza's end just after its "/>": a ">" in an attribute is no trap."""
    p = StreamParser()
    p.feed(HEADER)
    ev = p.feed(b"<presence id='a>b'/>")
    assert isinstance(ev[0], StanzaReceived)
    assert p.hibernate()
    ev = p.feed(b"<message id='c>d'><body>e</body></message>")
    assert isinstance(ev[0], StanzaReceived) and ev[0].element.get("id") == "c>d"
    assert p.hibernate()
    p.feed(b"<presence/><iq")
    assert not p.hibernate()


def test_limits_and_errors_still_apply_after_waking() -> None:
    p = StreamParser(max_stanza_bytes=100)
    p.feed(HEADER + b"<presence/>")
    assert p.hibernate()
    ev = p.feed(b"<message><body>" + b"x" * 200 + b"</body></message>")
    assert isinstance(ev[-1], StreamFault) and ev[-1].condition == "policy-violation"

    p = StreamParser()
    p.feed(HEADER + b"<presence/>")
    assert p.hibernate()
    ev = p.feed(b"<!-- no -->")
    assert isinstance(ev[-1], StreamFault) and ev[-1].condition == "restricted-xml"

    p = StreamParser()
    p.feed(HEADER + b"<presence/>")
    assert p.hibernate()
    ev = p.feed(b"</wrong>")
    assert isinstance(ev[-1], StreamFault) and ev[-1].condition == "not-well-formed"


def test_a_restart_or_a_dead_parser_does_not_hibernate() -> None:
    p = StreamParser()
    p.feed(HEADER + b"<presence/>")
    p.reset()
    assert not p.hibernate()  # waiting for a new header
    p.feed(HEADER + b"<presence/>")
    p.feed(b"<x>\x00</x>")
    assert not p.hibernate()
    assert p.feed(b"<presence/>") == []


def test_hibernation_frees_most_of_an_idle_parser() -> None:
    tracemalloc.start()
    try:
        parsers = []
        for _ in range(200):
            p = StreamParser()
            p.feed(HEADER)
            for s in STANZAS:
                p.feed(s)
            parsers.append(p)
        awake = tracemalloc.get_traced_memory()[0]
        for p in parsers:
            assert p.hibernate()
        asleep = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert (awake - asleep) / 200 > 8000  # an expat parser holds ~14 KB once it has seen a login


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30), st.booleans())
def test_any_chunking_with_hibernation_parses_the_same(cuts: list[int], close: bool) -> None:
    data = HEADER + b"".join(STANZAS) + (b"</stream:stream>" if close else b"")
    chunks, i = [], 0
    for c in cuts:
        chunks.append(data[i : i + c])
        i += c
    chunks.append(data[i:])
    plain, sleepy = StreamParser(), StreamParser()
    a: list[Event] = []
    b: list[Event] = []
    for ch in chunks:
        if not ch:
            continue
        a += plain.feed(ch)
        b += sleepy.feed(ch)
        sleepy.hibernate()
    assert summary(a) == summary(b)
    assert not any(isinstance(e, StreamFault) for e in b)
