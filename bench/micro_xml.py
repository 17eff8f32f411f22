"""Micro-benchmark of the XML hot path: µs per stanza for parse, serialize and both.

Run: ``.venv/bin/python bench/micro_xml.py [--number N] [--repeat R]``.  Prints the best of R runs of N
stanzas each (best-of filters out noise from other processes on a shared machine).  Baselines:
``ElementTree.fromstring``/``tostring`` (what "plain ElementTree" costs) and ``XMLPullParser`` fed the same
open stream (C callbacks, no RFC 6120 rules enforced).
"""

from __future__ import annotations

import argparse
import sys
import timeit
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from xmppim.xml import StanzaReceived, StreamParser, serialize  # noqa: E402

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' to='example.com' version='1.0' xml:lang='en'>"
)
SMALL = b"<message to='juliet@example.com/balcony' type='chat' id='abc123'><body>hello</body></message>"
BIG = (
    b"<message from='romeo@example.net/orchard' to='juliet@example.com/balcony' type='chat' "
    b"id='ktx72v49' xml:lang='en'>"
    b"<body>Art thou not Romeo, and a Montague? &amp; more text with &lt;escapes&gt; "
    b"\xc3\xa9\xe2\x82\xac</body>"
    b"<thread>e0ffe42b28561960c6b12b944a092794b9683a38</thread>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/>"
    b"<request xmlns='urn:xmpp:receipts'/>"
    b"<stanza-id xmlns='urn:xmpp:sid:0' id='5f3dbc5e-e1d3-4077-a492-693f3769c7ad' by='juliet@example.com'/>"
    b"<forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2010-07-10T23:08:25Z'/>"
    b"<message xmlns='jabber:client' from='a@b/c' to='d@e' type='chat'><body>inner</body>"
    b"<x xmlns='jabber:x:data' type='form'><field var='f1' type='text-single'><value>v</value></field>"
    b"<field var='f2'><value>w</value></field></x></message></forwarded>"
    b"</message>"
)


def best(fn: Callable[[], object], number: int, repeat: int) -> float:
    """Best µs per call over ``repeat`` runs of ``number`` calls."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def bench(name: str, stanza: bytes, number: int, repeat: int) -> None:
    parser = StreamParser()
    parser.feed(HEADER)
    events = parser.feed(stanza)
    assert len(events) == 1 and isinstance(events[0], StanzaReceived), events
    element = events[0].element

    def parse() -> object:
        return parser.feed(stanza)

    def ser() -> object:
        return serialize(element)

    def both() -> object:
        ev = parser.feed(stanza)[0]
        assert isinstance(ev, StanzaReceived)
        return serialize(ev.element)

    pull: ET.XMLPullParser[ET.Element] = ET.XMLPullParser(events=("end",))
    pull.feed(HEADER)

    def pull_parse() -> object:
        pull.feed(stanza)
        return list(pull.read_events())

    plain = ET.fromstring(stanza)

    def et_both() -> object:
        return ET.tostring(ET.fromstring(stanza))

    print(f"{name} stanza ({len(stanza)} bytes), µs per stanza, best of {repeat} x {number}:")
    print(f"  xmppim parse              {best(parse, number, repeat):7.2f}")
    print(f"  xmppim serialize          {best(ser, number, repeat):7.2f}")
    print(f"  xmppim parse+serialize    {best(both, number, repeat):7.2f}")
    print(f"  ET.XMLPullParser parse    {best(pull_parse, number, repeat):7.2f}   (baseline, no rules)")
    et_parse = best(lambda: ET.fromstring(stanza), number, repeat)
    print(f"  ET.fromstring             {et_parse:7.2f}   (baseline)")
    print(f"  ET.tostring               {best(lambda: ET.tostring(plain), number, repeat):7.2f}   (baseline)")
    print(f"  ET.fromstring+tostring    {best(et_both, number, repeat):7.2f}   (baseline)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--number", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    bench("small", SMALL, args.number, args.repeat)
    bench("big", BIG, max(1, args.number // 4), args.repeat)


if __name__ == "__main__":
    main()
