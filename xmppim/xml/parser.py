"""Sans-I/O parser for one direction of an XML stream (RFC 6120 §4, §11).

``StreamParser.feed(bytes)`` returns the events found so far: :class:`StreamOpened` for the
``<stream:stream>`` header, :class:`StanzaReceived` for every complete first-level child (stanzas, but
also ``<starttls/>``, ``<auth/>``, ``<stream:features/>``...), :class:`StreamClosed` for
``</stream:stream>`` and :class:`StreamFault` (always last) when the peer broke a rule.  The parser never
touches a socket; the stream machine decides what each event means.

Why this design (numbers from ``bench/micro_xml.py`` on the shared 2-core build machine, CPython 3.11.7,
expat 2.5.0, best of 5 runs, µs per stanza fed to an open stream)::

                                                         small (93 B)   big (807 B, 15 elements)
    ElementTree.fromstring (one document per stanza)          6.1            18.5
    XMLPullParser on the open stream (C callbacks)            2.2            15.7
    this parser (pyexpat + Python callbacks + C TreeBuilder)  3.9            24.3

``XMLPullParser`` is faster because expat calls C code directly, but it enforces none of the rules: it
cannot refuse a DOCTYPE before the internal subset is read (entities would be expanded, up to expat's
amplification limit), reports comments and PIs only after the fact, gives no byte positions (so no exact
RFC 6120 §13.12 stanza size limit) and keeps every stanza attached to the stream root.  With pyexpat we
register our own handlers: the restricted constructs of RFC 6120 §11.1 raise as soon as expat reports
them (a DOCTYPE is refused at its start, so entity declarations are never read and "billion laughs" never
expands), and ``CurrentByteIndex`` gives the exact offset of each stanza's start tag.  Elements are still
built in C by ``xml.etree.ElementTree.TreeBuilder`` (one per stanza), and inside a stanza the
character-data callback *is* the C ``TreeBuilder.data`` method, so text costs no Python frame.  Parse plus
:func:`~xmppim.xml.serialize.serialize` of the small stanza costs ~6.4 µs, against ~20 µs for
``fromstring`` + ``tostring``.  Memory: an open parser holds ~13 KB, mostly expat's own buffers.

Size limits (RFC 6120 §13.12):

* A stanza is measured from the first byte of its start tag to the last byte of its end tag.  While it is
  open, the bytes fed since its start tag count (checked after every slice of at most
  :data:`_SLICE` bytes, so a huge chunk cannot build a huge tree first); when it closes, the exact size
  counts.  Over ``max_stanza_bytes`` → ``policy-violation`` and the stanza is never delivered.
* Between stanzas, bytes that expat has not turned into an event yet (a start tag or attribute still
  arriving) may not exceed ``max_stanza_bytes`` plus a little slack; whitespace keepalives between
  stanzas are events and so do not accumulate.
* Element nesting inside a stanza is bounded by ``max_depth`` (→ ``policy-violation``).

Error conditions chosen (RFC 6120 §4.9.3):

* DOCTYPE/DTD, entity/notation/element/attribute-list declarations, processing instructions (other than
  the XML declaration at the very start), comments → ``restricted-xml`` (§11.1).
* An undefined entity reference such as ``&nbsp;`` → ``restricted-xml``.  XML 1.0's "Entity Declared"
  constraint makes it a well-formedness error as well, but §11.1 names entity references other than the
  five predefined ones as restricted XML, which tells the peer more precisely what it did wrong.
* An XML declaration naming an encoding other than UTF-8 → ``unsupported-encoding`` (§11.6).
* Mismatched tags, garbage, invalid UTF-8, unbound prefixes → ``not-well-formed`` (§4.9.3.13).
* A first element other than ``{http://etherx.jabber.org/streams}stream`` → ``invalid-namespace``.  Any
  prefix bound to that namespace is accepted: RFC 6120 lets a server insist on ``stream:`` for
  historical reasons but does not require it (Prosody's util/xmppstream.lua also compares only the
  expanded name).
* A stream in UTF-16/32 (BOM, or ``<`` next to a NUL byte at the start) → ``unsupported-encoding``; expat
  would otherwise detect and accept it despite being created for UTF-8.
* Non-whitespace character data directly inside the stream (between stanzas) → ``bad-format``.
* A namespace name containing ``}`` (impossible in Clark notation): expat >= 2.4.5 already refuses it
  (``not-well-formed``, CVE-2022-25236); older expat would reach our own check → ``bad-format``.

Not checked here (the stream machine's job): whether ``StreamOpened.default_ns`` is the content namespace
this stream kind expects (``invalid-namespace``), ``version``, ``to``/``from`` and first-level element
names.  Elements are tagged with :data:`~xmppim.xml.ns.CLIENT` only when they are in this parser's
``content_ns``; a stream header declaring another default namespace therefore yields stanzas in that
other namespace and the machine should refuse the stream on seeing ``default_ns``.

Stream restarts (RFC 6120 §5.4.3.3, §6.4.6): :meth:`StreamParser.reset` starts a fresh expat parser.
Events that follow, in the same returned list, the element that triggers a restart (``<starttls/>``, SASL
``<success/>``) were parsed in the old stream; the machine must drop them (for STARTTLS this is also the
defence against plaintext command injection, cf. CVE-2011-0411).
"""

from __future__ import annotations

import re
import xml.parsers.expat as expat
from dataclasses import dataclass
from typing import Final, NoReturn
from xml.etree.ElementTree import Element, TreeBuilder

from . import ns

__all__ = [
    "Event",
    "parse_element",
    "StanzaReceived",
    "StreamClosed",
    "StreamFault",
    "StreamOpened",
    "StreamParser",
]


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer's ``<stream:stream>`` header (RFC 6120 §4.7).

    ``attrs`` has plain names (``to``, ``from``, ``id``, ``version``) and :data:`~xmppim.xml.ns.XML_LANG`
    for ``xml:lang``; ``default_ns`` is the default namespace declared on the header ('' when none).
    """

    attrs: dict[str, str]
    default_ns: str


@dataclass(frozen=True, slots=True)
class StanzaReceived:
    """A complete first-level child of the stream: a stanza or a stream-level element."""

    element: Element


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The peer sent ``</stream:stream>`` (RFC 6120 §4.4)."""


@dataclass(frozen=True, slots=True)
class StreamFault:
    """The input broke a rule; ``condition`` is an RFC 6120 §4.9.3 stream error condition name.

    Always the last event of a stream: the parser is dead afterwards.
    """

    condition: str
    text: str


Event = StreamOpened | StanzaReceived | StreamClosed | StreamFault

_STREAM_TAG: Final = ns.STREAMS + "}stream"  # as expat reports it with "}" as separator
_SLICE: Final = 65536  # feed expat at most this many bytes between two size checks
_PENDING_SLACK: Final = 4096  # allowance for the end tag and whitespace before a pending start tag
_NAME_CACHE_MAX: Final = 4096
_UTF16_BOMS: Final = (b"\xfe\xff", b"\xff\xfe")

_ENCODING_ERRORS: Final = frozenset(
    {
        expat.errors.codes[expat.errors.XML_ERROR_UNKNOWN_ENCODING],
        expat.errors.codes[expat.errors.XML_ERROR_INCORRECT_ENCODING],
    }
)
_RESTRICTED_ERRORS: Final = frozenset(
    expat.errors.codes[m]
    for m in (
        expat.errors.XML_ERROR_UNDEFINED_ENTITY,
        expat.errors.XML_ERROR_RECURSIVE_ENTITY_REF,
        expat.errors.XML_ERROR_PARAM_ENTITY_REF,
        expat.errors.XML_ERROR_BINARY_ENTITY_REF,
        expat.errors.XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF,
        expat.errors.XML_ERROR_EXTERNAL_ENTITY_HANDLING,
        expat.errors.XML_ERROR_ENTITY_DECLARED_IN_PE,
        expat.errors.XML_ERROR_AMPLIFICATION_LIMIT_BREACH,
    )
)


# expat name ("ns}local") -> element tag, one cache per content namespace, shared by all parsers of
# that stream kind (thousands of connections see the same few dozen names).
_NAME_CACHES: dict[str, dict[str, str]] = {}


class _Fault(Exception):
    """Raised inside expat callbacks to stop parsing; carries the stream error to report."""

    def __init__(self, condition: str, text: str) -> None:
        super().__init__(condition, text)
        self.condition = condition
        self.text = text


class _Closed(Exception):
    """Raised by the end handler of ``</stream:stream>``: nothing after it is parsed."""


def _fix_attrs(attrs: dict[str, str]) -> dict[str, str]:
    """Turn expat's ``ns}local`` attribute names into Clark notation ``{ns}local``."""
    fixed = {("{" + k if "}" in k else k): v for k, v in attrs.items()}
    for k in fixed:
        if k.count("}") > 1:
            StreamParser._fail_brace()
    return fixed


class StreamParser:
    """Incremental, sans-I/O parser for one direction of an XMPP stream.

    ``content_ns`` is the content namespace this stream kind uses (``jabber:client``, ``jabber:server``
    or ``jabber:component:accept``); elements in it are tagged ``{jabber:client}...``.
    """

    __slots__ = (
        "_asleep",
        "_builder",
        "_chunk",
        "_chunk_start",
        "_closed",
        "_content_prefix",
        "_default_ns",
        "_depth",
        "_events",
        "_fed",
        "_head",
        "_header_ns",
        "_header_tag",
        "_mark",
        "_max_depth",
        "_max_stanza_bytes",
        "_names",
        "_parser",
        "_stanza_start",
        "_waking",
    )

    def __init__(
        self, max_stanza_bytes: int = 262144, content_ns: str = ns.CLIENT, *, max_depth: int = 100
    ) -> None:
        if max_stanza_bytes < 1 or max_depth < 1:
            raise ValueError("limits must be positive")
        self._max_stanza_bytes = max_stanza_bytes
        self._max_depth = max_depth
        self._content_prefix = content_ns + "}"
        self._parser: expat.XMLParserType | None = None
        self._builder: TreeBuilder | None = None
        self._events: list[Event] = []
        self._names = _NAME_CACHES.setdefault(content_ns, {})
        self._depth = 0
        self._fed = 0
        self._head: bytes | None = None
        self._mark = 0
        self._stanza_start = 0
        self._default_ns = ""
        self._closed = False
        self._header_tag: bytes | None = None
        self._header_ns: list[tuple[str | None, str]] = []
        self._chunk: bytes | None = None
        self._chunk_start = 0
        self._asleep = False
        self._waking = False
        self.reset()

    # -- public API ---------------------------------------------------------------------------------

    def reset(self) -> None:
        """Start a new stream on the same connection (RFC 6120 §5.4.3.3 after STARTTLS, §6.4.6 after SASL).

        The new expat parser accepts a new XML declaration and stream header; a dead parser comes back
        to life, since a restart really is a new stream.
        """
        self._parser = self._new_expat()
        self._builder = None
        self._events = []
        self._depth = 0
        self._fed = 0
        self._head = None
        self._mark = 0
        self._stanza_start = 0
        self._default_ns = ""
        self._closed = False
        self._header_tag = None
        self._header_ns = []
        self._chunk = None
        self._chunk_start = 0
        self._asleep = False
        self._waking = False

    def _new_expat(self) -> expat.XMLParserType:
        p = expat.ParserCreate("utf-8", "}")
        # Refuse every construct of RFC 6120 §11.1 the moment expat reports it.
        p.StartDoctypeDeclHandler = self._on_doctype
        p.EntityDeclHandler = self._on_entity_decl
        p.UnparsedEntityDeclHandler = self._on_entity_decl
        p.NotationDeclHandler = self._on_entity_decl
        p.ElementDeclHandler = self._on_entity_decl
        p.AttlistDeclHandler = self._on_entity_decl
        p.ExternalEntityRefHandler = self._on_entity_ref
        p.SkippedEntityHandler = self._on_entity_ref
        p.ProcessingInstructionHandler = self._on_pi
        p.CommentHandler = self._on_comment
        p.XmlDeclHandler = self._on_xml_decl
        p.StartNamespaceDeclHandler = self._on_ns_decl
        p.StartElementHandler = self._on_start
        p.EndElementHandler = self._on_end
        p.CharacterDataHandler = self._on_stream_text
        return p

    # -- idle connections -----------------------------------------------------------------------------

    def hibernate(self) -> bool:
        """Drop the expat parser while the stream sits idle between stanzas; True if it was dropped.

        Why: an open expat parser keeps ~14 KB (its input buffer, name hash tables, string pools), the
        largest per-connection cost of an idle authenticated client after the TLS state (measured with
        tracemalloc over 1,000 idle connections). Between two stanzas the only context the stream needs
        is its header's element name and namespace declarations; the next :meth:`feed` builds a new expat
        parser and primes it with an equivalent header (no event is reported for it), so nothing the
        peer can observe changes — the stanzas, limits and errors that follow are the same. It is only
        done when every byte fed so far has been consumed: the last stanza's end tag followed by nothing
        but whitespace (which is insignificant between stanzas, RFC 6120 §11.7).
        """
        p = self._parser
        chunk = self._chunk
        if p is None or self._closed or self._depth != 1 or self._header_tag is None or chunk is None:
            return False
        # Where the last stanza's end event was reported: the "</" of its end tag, or just after the "/>"
        # of an empty-element tag (expat's positions).
        at = self._mark - self._chunk_start
        if at < 0 or at > len(chunk):
            return False
        if at < len(chunk) and chunk[at] == 0x3C:  # "<"
            # An end tag (no ">" can occur inside one): everything after its ">" must be whitespace. Were
            # this the start of something else, there is no ">" yet: refused.
            at = chunk.find(b">", at) + 1
            if not at:
                return False
        if chunk[at:].strip(b" \t\r\n"):
            return False
        self._parser = None
        self._chunk = None
        self._asleep = True
        return True

    def _wake(self) -> expat.XMLParserType:
        """A new expat parser inside an equivalent stream header (see :meth:`hibernate`)."""
        decls = b"".join(
            (b" xmlns='" if prefix is None else b" xmlns:" + prefix.encode() + b"='") + _attr(uri) + b"'"
            for prefix, uri in self._header_ns
        )
        header = b"<" + (self._header_tag or b"") + decls + b">"
        p = self._parser = self._new_expat()
        self._asleep = False
        self._depth = 0  # the synthetic header opens the stream again
        self._waking = True
        try:
            p.Parse(header, False)
        finally:
            self._waking = False
        # Byte offsets now count from this parser's start: the synthetic header is what was "fed".
        self._fed = self._mark = len(header)
        return p

    def feed(self, data: bytes) -> list[Event]:
        """Parse ``data`` (any chunking, even mid-UTF-8 sequence) and return the events it completed.

        After a :class:`StreamFault` or :class:`StreamClosed` the stream is over: later calls return [].
        """
        p = self._parser
        if p is None:
            if not self._asleep:
                return []
            p = self._wake()
        elif self._closed:
            return []
        if self._fed < 2:
            if self._head is not None or len(data) < 2:
                data = self._hold_head(data)
                if not data:
                    return []
            if data[:2] in _UTF16_BOMS or b"\x00" in data[:2]:
                # Expat detects UTF-16/32 from a BOM or from "<\0" / "\0<" even when created for
                # UTF-8, and would happily parse such a stream (RFC 6120 §11.6 wants UTF-8 only).
                self._events = []
                self._die("unsupported-encoding", "streams must be UTF-8 (RFC 6120 §11.6)")
                return self._events
        events: list[Event] = []
        self._events = events
        try:
            n = len(data)
            if n <= _SLICE:
                self._chunk = data  # for hibernate(): what follows the last stanza
                self._chunk_start = fed = self._fed
                p.Parse(data, False)
                fed = self._fed = fed + n
                # _check_pending() inlined for the common case: a whole stanza per read.
                if self._depth >= 2 or fed - self._mark > self._max_stanza_bytes:
                    self._check_pending()
            else:  # bound what one call can build before the size checks run
                for start in range(0, n, _SLICE):
                    chunk = self._chunk = data[start : start + _SLICE]
                    self._chunk_start = self._fed
                    p.Parse(chunk, False)
                    self._fed += len(chunk)
                    self._check_pending()
        except _Fault as f:
            self._die(f.condition, f.text)
        except _Closed:
            self._closed = True
            self._parser = None
        except expat.ExpatError as e:
            self._die(self._condition_for(e), f"{expat.errors.messages[e.code]} at byte {p.ErrorByteIndex}")
        return events

    def _hold_head(self, data: bytes) -> bytes:
        """Keep the first byte of a stream until the second arrives, to spot UTF-16/32."""
        head = (self._head or b"") + data
        if len(head) < 2:
            self._head = head
            return b""
        self._head = None
        return head

    # -- size accounting ----------------------------------------------------------------------------

    def _check_pending(self) -> None:
        """RFC 6120 §13.12: refuse an open stanza, or an unfinished tag, that is already too large."""
        if self._depth >= 2:
            if self._fed - self._stanza_start > self._max_stanza_bytes:
                self._fail("policy-violation", f"stanza larger than {self._max_stanza_bytes} bytes")
        elif self._fed - self._mark > self._max_stanza_bytes + _PENDING_SLACK:
            self._fail("policy-violation", f"unfinished tag larger than {self._max_stanza_bytes} bytes")

    def _die(self, condition: str, text: str) -> None:
        """Report the fault and drop expat and the partial stanza, so nothing stays buffered."""
        self._events.append(StreamFault(condition, text))
        self._parser = None
        self._builder = None
        self._chunk = None
        self._asleep = False

    @staticmethod
    def _fail(condition: str, text: str) -> NoReturn:
        raise _Fault(condition, text)

    @staticmethod
    def _fail_brace() -> NoReturn:
        """A namespace name containing "}" cannot be written in Clark notation: ElementTree would split
        it at the wrong brace, and relaying it would send malformed XML to someone else's stream."""
        raise _Fault("bad-format", "namespace names containing '}' are not supported")

    @staticmethod
    def _condition_for(err: expat.ExpatError) -> str:
        if err.code in _ENCODING_ERRORS:
            return "unsupported-encoding"
        if err.code in _RESTRICTED_ERRORS:
            return "restricted-xml"
        return "not-well-formed"

    # -- element callbacks --------------------------------------------------------------------------

    def _tag(self, name: str) -> str:
        """Map expat's ``ns}local`` to Clark notation, with the content namespace made canonical."""
        names = self._names
        if len(names) >= _NAME_CACHE_MAX:  # bound the cache: names are attacker-chosen
            names.clear()
        if "}" not in name:
            tag = name
        elif name.count("}") > 1:
            self._fail_brace()
        elif name.startswith(self._content_prefix):
            tag = "{jabber:client}" + name[len(self._content_prefix) :]
        else:
            tag = "{" + name
        names[name] = tag
        return tag

    def _on_start(self, name: str, attrs: dict[str, str]) -> None:
        depth = self._depth
        if depth == 1:  # a new first-level element: a stanza starts here
            p = self._parser
            self._stanza_start = p.CurrentByteIndex  # type: ignore[union-attr]
            builder = self._builder = TreeBuilder()
            p.CharacterDataHandler = builder.data  # type: ignore[union-attr]
        elif depth > 1:
            # No byte check here: feed() hands expat at most _SLICE bytes between two checks.
            if depth > self._max_depth:
                self._fail("policy-violation", f"elements nested deeper than {self._max_depth}")
            builder = self._builder  # type: ignore[assignment]
        else:
            self._open_stream(name, attrs)
            return
        self._depth = depth + 1
        tag = self._names.get(name) or self._tag(name)
        if attrs:
            for k in attrs:
                if "}" in k:
                    attrs = _fix_attrs(attrs)
                    break
        builder.start(tag, attrs)

    def _on_end(self, name: str) -> None:
        depth = self._depth - 1
        self._depth = depth
        builder = self._builder
        if depth >= 2:
            builder.end(name)  # type: ignore[union-attr]
            return
        if depth == 1:
            p = self._parser
            assert p is not None and builder is not None
            end = p.CurrentByteIndex  # offset of "</" (or just after the "/>" of an empty-element tag)
            if end - self._stanza_start > self._max_stanza_bytes // 2:
                # Rare: exact size including the end tag, which expat keeps in its buffer.
                ctx = p.GetInputContext() or b""
                end += ctx.find(b">") + 1
                if end - self._stanza_start > self._max_stanza_bytes:
                    self._fail("policy-violation", f"stanza larger than {self._max_stanza_bytes} bytes")
            self._events.append(StanzaReceived(builder.end(name)))
            self._builder = None
            self._mark = end
            p.CharacterDataHandler = self._on_stream_text
            return
        self._events.append(StreamClosed())
        raise _Closed

    def _on_stream_text(self, text: str) -> None:
        """Character data directly inside ``<stream:stream>``: only whitespace keepalives are allowed."""
        if text.strip(" \t\r\n"):
            self._fail("bad-format", "character data between stanzas")
        p = self._parser
        assert p is not None
        self._mark = p.CurrentByteIndex + len(text)  # whitespace is ASCII: characters == bytes

    def _open_stream(self, name: str, attrs: dict[str, str]) -> None:
        """RFC 6120 §4.7: the first element must be the stream header, in the streams namespace."""
        if name != _STREAM_TAG:
            self._fail("invalid-namespace", "the first element must be <stream:stream> in " + ns.STREAMS)
        p = self._parser
        assert p is not None
        p.StartNamespaceDeclHandler = None  # only the header's declarations are of interest
        self._depth = 1
        self._mark = p.CurrentByteIndex
        if self._waking:
            return  # the synthetic header of a woken parser: the peer's was reported long ago
        # The header's qualified name, for the end tag to match after hibernate() (expat reports names
        # without prefixes): the input at a start-tag event begins with that tag.
        ctx = p.GetInputContext()
        tag = _QNAME.match(ctx, 1) if ctx else None
        self._header_tag = tag.group() if tag else None
        self._events.append(StreamOpened(_fix_attrs(attrs), self._default_ns))

    def _on_ns_decl(self, prefix: str | None, uri: str | None) -> None:
        if prefix is None:
            self._default_ns = uri or ""
        if not self._waking:
            self._header_ns.append((prefix, uri or ""))

    # -- RFC 6120 §11.1 restricted XML ----------------------------------------------------------------

    def _on_doctype(self, *_: object) -> None:
        self._fail("restricted-xml", "DTDs are not allowed (RFC 6120 §11.1)")

    def _on_entity_decl(self, *_: object) -> None:
        self._fail("restricted-xml", "declarations are not allowed (RFC 6120 §11.1)")

    def _on_entity_ref(self, *_: object) -> int:
        self._fail("restricted-xml", "entity references are not allowed (RFC 6120 §11.1)")

    def _on_pi(self, target: str, _data: str) -> None:
        self._fail("restricted-xml", "processing instructions are not allowed (RFC 6120 §11.1)")

    def _on_comment(self, _data: str) -> None:
        self._fail("restricted-xml", "comments are not allowed (RFC 6120 §11.1)")

    def _on_xml_decl(self, _version: str | None, encoding: str | None, _standalone: int) -> None:
        """RFC 6120 §11.6: streams are UTF-8; a declaration naming another encoding is refused."""
        if encoding is not None and encoding.lower() != "utf-8":
            self._fail("unsupported-encoding", f"encoding {encoding!r} is not UTF-8 (RFC 6120 §11.6)")


def parse_element(
    data: bytes | str, *, content_ns: str = ns.CLIENT, max_bytes: int = 1 << 20, max_depth: int = 100
) -> Element:
    """Parse one first-level element written by :func:`~xmppim.xml.serialize.serialize` (a stanza kept
    in storage, a WebSocket frame) under the same rules as a live stream, into the same canonical form.

    Wraps ``data`` in a stream header whose default namespace is ``content_ns`` (and which binds the
    ``stream:`` prefix), so it must be exactly one element, optionally surrounded by whitespace.  Raises
    ``ValueError`` naming the RFC 6120 stream error condition otherwise.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    parser = StreamParser(max_bytes, content_ns, max_depth=max_depth)
    header = f"<stream:stream xmlns:stream='{ns.STREAMS}' xmlns='{_quote(content_ns)}'>".encode()
    events = parser.feed(header)
    events += parser.feed(raw)
    if events and isinstance(events[-1], StreamClosed):  # data closed our wrapper itself
        raise ValueError("bad-format: unexpected </stream:stream>")
    events += parser.feed(b"</stream:stream>")
    stanzas = [e.element for e in events if isinstance(e, StanzaReceived)]
    fault = events[-1] if events else None
    if isinstance(fault, StreamFault):
        raise ValueError(f"{fault.condition}: {fault.text}")
    if len(stanzas) != 1 or not isinstance(fault, StreamClosed):
        raise ValueError(f"bad-format: expected exactly one element, got {len(stanzas)}")
    return stanzas[0]


_QNAME: Final = re.compile(rb"[^\s/>]+")
_ATTR_ESCAPES: Final = {"&": "&amp;", "<": "&lt;", "'": "&apos;", "\t": "&#9;", "\n": "&#10;", "\r": "&#13;"}


def _attr(value: str) -> bytes:
    """``value`` as the content of a single-quoted attribute that parses back to exactly ``value``."""
    return "".join(_ATTR_ESCAPES.get(ch, ch) for ch in value).encode()


def _quote(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")
