"""Write ElementTree elements into an XMPP stream (RFC 6120 §4, §11).

``ElementTree.tostring`` is slow here (~13 µs for a small message) and invents ``ns0:`` prefixes for
namespaced elements.  This writer follows the stream conventions instead:

* Elements tagged ``{jabber:client}`` (the canonical content namespace the parser produces) are written
  in the target stream's content namespace ``stream_ns``, so one element can go to a c2s, s2s or
  component stream unchanged (RFC 6120 §4.8.2).  This applies to the top element and to descendants
  reached without leaving the content namespace (``<body/>``, ``<error/>``...).  A ``{jabber:client}``
  element below an element of another namespace (the stanza inside XEP-0297 ``<forwarded/>``, used by
  carbons and MAM) stays ``jabber:client``: XEP-0297 §3.2 says the forwarded stanza keeps its namespace,
  "typically jabber:client", and a client behind a server that relays it verbatim expects exactly that.
  (The parser folds ``jabber:server`` into ``jabber:client`` on the way in, so that is what comes out.)
* Only default-namespace declarations are used for elements, and only where the namespace differs from
  the parent's (the top element omits ``xmlns`` when its namespace is ``stream_ns``).  Elements in the
  streams namespace (``<stream:features/>``, ``<stream:error/>``) use the ``stream:`` prefix that the
  stream header binds, and elements in the XML namespace the reserved ``xml:`` prefix (it may not be
  declared as a default namespace, and a peer can send such an element for us to relay).
* ``xml:lang`` keeps the reserved ``xml:`` prefix; other namespaced attributes get prefixes ``a0``,
  ``a1``... declared on the element that uses them.
* Text escapes ``& < >`` and ``\\r`` (which XML would otherwise normalise to ``\\n``); attribute values
  (double-quoted) also escape ``"``, ``\\n`` and ``\\t`` (attribute-value normalisation).
* Characters XML 1.0 forbids (most C0 controls, U+FFFE/U+FFFF, lone surrogates) and element or
  attribute names that are not XML names (or an attribute called ``xmlns``) raise ``ValueError``:
  sending them would get our stream closed with ``not-well-formed`` by the peer.

Cost per element is a few dict lookups: the start-tag prefix for a (tag, parent namespace, stream
namespace) triple is computed once and cached, as are escaped attribute values that repeat (``type``,
JIDs).  Both caches are bounded because tags and values can come from peers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final
from xml.etree.ElementTree import Element

from . import ns

__all__ = [
    "STREAM_CLOSE",
    "STREAM_ERROR_CONDITIONS",
    "serialize",
    "stream_error",
    "stream_header",
]

STREAM_CLOSE: Final = b"</stream:stream>"

# RFC 6120 §4.9.3: the defined stream error conditions.
STREAM_ERROR_CONDITIONS: Final = frozenset(
    {
        "bad-format",
        "bad-namespace-prefix",
        "conflict",
        "connection-timeout",
        "host-gone",
        "host-unknown",
        "improper-addressing",
        "internal-server-error",
        "invalid-from",
        "invalid-namespace",
        "invalid-xml",
        "not-authorized",
        "not-well-formed",
        "policy-violation",
        "remote-connection-failed",
        "reset",
        "resource-constraint",
        "restricted-xml",
        "see-other-host",
        "system-shutdown",
        "undefined-condition",
        "unsupported-encoding",
        "unsupported-feature",
        "unsupported-stanza-type",
        "unsupported-version",
    }
)

_CACHE_MAX: Final = 4096
_VALUE_CACHE_MAX_LEN: Final = 200  # only short attribute values are worth caching

# XML 1.0 §2.2 Char production, negated.  Lone surrogates are caught by str.encode("utf-8").
_INVALID_CHAR: Final = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

# XML 1.0 (5th ed.) §2.3 Name without ":" (Namespaces in XML §3 NCName).
_NAME_START: Final = (
    "A-Z_a-z\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u02ff\u0370-\u037d\u037f-\u1fff\u200c-\u200d"
    "\u2070-\u218f\u2c00-\u2fef\u3001-\ud7ff\uf900-\ufdcf\ufdf0-\ufffd\U00010000-\U000effff"
)
_NCNAME: Final = re.compile(f"[{_NAME_START}][{_NAME_START}\\-.0-9\u00b7\u0300-\u036f\u203f-\u2040]*")

_CLIENT_NS: Final = ns.CLIENT
_STREAMS_NS: Final = ns.STREAMS
_XML_NS: Final = ns.XML
_XML_LANG: Final = ns.XML_LANG
_XMLNS_NS: Final = "http://www.w3.org/2000/xmlns/"


def _escape_text(s: str) -> str:
    """Escape character data (``>`` too, so ``]]>`` can never appear)."""
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    if "\r" in s:
        s = s.replace("\r", "&#13;")
    return s


def _escape_attr_uncached(s: str) -> str:
    if "&" in s:
        s = s.replace("&", "&amp;")
    if "<" in s:
        s = s.replace("<", "&lt;")
    if ">" in s:
        s = s.replace(">", "&gt;")
    if '"' in s:
        s = s.replace('"', "&quot;")
    if "\n" in s:
        s = s.replace("\n", "&#10;")
    if "\r" in s:
        s = s.replace("\r", "&#13;")
    if "\t" in s:
        s = s.replace("\t", "&#9;")
    return s


_attr_cache: dict[str, str] = {}


def _escape_attr(s: str) -> str:
    """Escape a double-quoted attribute value; short values are cached (``type``, JIDs, ``xml:lang``)."""
    r = _attr_cache.get(s)
    if r is None:
        r = _escape_attr_uncached(s)
        if len(s) <= _VALUE_CACHE_MAX_LEN:
            if len(_attr_cache) >= _CACHE_MAX:
                _attr_cache.clear()
            _attr_cache[s] = r
    return r


# (tag, namespace in scope, stream namespace) -> (start-tag prefix, end tag, namespace for children)
_Open = tuple[str, str, str]
_open_cache: dict[tuple[str, str, str], _Open] = {}


def _open_tag(tag: str, scope_ns: str, stream_ns: str) -> _Open:
    """Work out how to write ``tag`` where ``scope_ns`` is the default namespace in scope."""
    if not isinstance(tag, str):
        raise TypeError(f"cannot serialize element with tag {tag!r} (comments/PIs are not allowed)")
    if tag[:1] == "{":
        elem_ns, _, local = tag[1:].partition("}")
        if elem_ns == _CLIENT_NS and scope_ns == stream_ns:
            elem_ns = stream_ns
    else:
        elem_ns, local = "", tag
    _check_name(local, tag)
    if elem_ns == _STREAMS_NS or elem_ns == _XML_NS:
        # Prefixes already bound (by the stream header; ``xml`` always): children keep scope_ns.  The
        # XML namespace may not be declared as a default namespace at all (Namespaces in XML §3).
        name = ("stream:" if elem_ns == _STREAMS_NS else "xml:") + local
        result = ("<" + name, "</" + name + ">", scope_ns)
    elif elem_ns == _XMLNS_NS:
        raise ValueError(f"{tag!r}: no element can be in the xmlns namespace")
    elif elem_ns == scope_ns:
        result = ("<" + local, "</" + local + ">", scope_ns)
    else:
        result = (f'<{local} xmlns="{_escape_attr_uncached(elem_ns)}"', "</" + local + ">", elem_ns)
    if len(_open_cache) >= _CACHE_MAX:
        _open_cache.clear()
    _open_cache[(tag, scope_ns, stream_ns)] = result
    return result


def _check_name(local: str, full: str) -> None:
    """Refuse names that would make the output malformed; the peer would close our stream over it."""
    if _NCNAME.fullmatch(local) is None:
        raise ValueError(f"{full!r} is not a name that can be serialized")


_checked_attr_names: set[str] = set()


def _check_attr_name(k: str) -> None:
    """As :func:`_check_name`; also refuse ``xmlns``, a classic ElementTree mistake
    (``el.set("xmlns", ...)``) that would forge a second namespace declaration."""
    if k[0] == "{":
        _check_name(k[1:].partition("}")[2], k)
    else:
        _check_name(k, k)
    if k == "xmlns":
        raise ValueError("'xmlns' is a namespace declaration, not an attribute: put the namespace in the tag")
    if len(_checked_attr_names) >= _CACHE_MAX:
        _checked_attr_names.clear()
    _checked_attr_names.add(k)


def _namespaced_attr(k: str, v: str, generated: int) -> str:
    """`` xml:lang="..."`` or a generated prefix declared right here (``{ns}local`` attribute names)."""
    attr_ns, _, local = k[1:].partition("}")
    if attr_ns == _XML_NS:
        return f' xml:{local}="{_escape_attr(v)}"'
    if not attr_ns:  # "{}name" is just an attribute without namespace
        return f' {local}="{_escape_attr(v)}"'
    if attr_ns == _XMLNS_NS:
        raise ValueError(f"{k!r}: namespace declarations are not attributes here")
    prefix = f"a{generated}"
    decl = f' xmlns:{prefix}="{_escape_attr_uncached(attr_ns)}"'
    return f'{decl} {prefix}:{local}="{_escape_attr(v)}"'


def _write(append: Callable[[str], object], el: Element, scope_ns: str, stream_ns: str) -> None:
    tag = el.tag
    opened = _open_cache.get((tag, scope_ns, stream_ns)) or _open_tag(tag, scope_ns, stream_ns)
    append(opened[0])
    attrib = el.attrib
    if attrib:
        generated = 0
        for k, v in attrib.items():
            if k not in _checked_attr_names:
                _check_attr_name(k)
            if k[0] == "{":
                if k == _XML_LANG:
                    append(f' xml:lang="{_escape_attr(v)}"')
                else:
                    append(_namespaced_attr(k, v, generated))
                    generated += 1
            else:
                append(f' {k}="{_escape_attr(v)}"')
    text = el.text
    if len(el):
        append(">")
        if text:
            append(_escape_text(text))
        child_ns = opened[2]
        for child in el:
            _write(append, child, child_ns, stream_ns)
            tail = child.tail
            if tail:
                append(_escape_text(tail))
        append(opened[1])
    elif text:
        append(">")
        append(_escape_text(text))
        append(opened[1])
    else:
        append("/>")


def serialize(el: Element, stream_ns: str = ns.CLIENT) -> bytes:
    """Serialize one first-level element (a stanza, ``<stream:features/>``...) for a stream whose
    content namespace is ``stream_ns``.  The element's own ``tail`` is not written.

    Raises ``ValueError`` for characters XML 1.0 cannot carry (RFC 6120 §11: the peer would close the
    stream) and ``TypeError`` for comment or processing-instruction nodes (RFC 6120 §11.1).
    """
    parts: list[str] = []
    _write(parts.append, el, stream_ns, stream_ns)
    s = "".join(parts)
    # isprintable() is a fast C scan and every printable character is a legal XML character; only
    # strings with newlines, tabs, format characters... need the slower exact check.
    bad = None if s.isprintable() else _INVALID_CHAR.search(s)
    if bad is not None:
        raise ValueError(f"character U+{ord(bad.group()):04X} cannot be sent in XML (RFC 6120 §11)")
    return s.encode("utf-8")


def _escape_header_attr(s: str) -> str:
    """Escape a single-quoted attribute value of the stream header."""
    return _escape_attr_uncached(s).replace("'", "&apos;")


def stream_header(
    *,
    from_: str | None,
    to: str | None,
    id_: str | None,
    version: str | None = "1.0",
    lang: str | None = "en",
    content_ns: str = ns.CLIENT,
) -> bytes:
    """The opening ``<stream:stream>`` tag, preceded by an XML declaration (RFC 6120 §4.7, §11.5).

    ``None`` leaves an attribute out (e.g. ``version`` for XEP-0114 component streams, which have none).
    """
    parts = [
        "<?xml version='1.0'?><stream:stream xmlns='",
        _escape_header_attr(content_ns),
        "' xmlns:stream='http://etherx.jabber.org/streams'",
    ]
    for name, value in (("from", from_), ("to", to), ("id", id_), ("version", version), ("xml:lang", lang)):
        if value is not None:
            parts.append(f" {name}='{_escape_header_attr(value)}'")
    parts.append(">")
    s = "".join(parts)
    if _INVALID_CHAR.search(s) is not None:
        raise ValueError("stream header attribute contains a character XML cannot carry")
    return s.encode("utf-8")


def stream_error(
    condition: str, text: str | None = None, *, lang: str | None = None, other_host: str | None = None
) -> bytes:
    """A ``<stream:error/>`` element (RFC 6120 §4.9).

    ``condition`` must be one of :data:`STREAM_ERROR_CONDITIONS` (a typo would otherwise reach the
    peer as an unknown condition).  ``other_host`` is the character data of ``see-other-host``
    (§4.9.3.19); ``lang`` is the ``xml:lang`` of the optional descriptive ``text`` (§4.9.2).
    """
    if condition not in STREAM_ERROR_CONDITIONS:
        raise ValueError(f"unknown stream error condition {condition!r} (RFC 6120 §4.9.3)")
    parts = ["<stream:error><", condition, " xmlns='urn:ietf:params:xml:ns:xmpp-streams'"]
    if other_host is not None:
        if condition != "see-other-host":
            raise ValueError("other_host only goes with see-other-host")
        parts += [">", _escape_text(other_host), "</", condition, ">"]
    else:
        parts.append("/>")
    if text is not None:
        parts.append("<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'")
        if lang is not None:
            parts.append(f" xml:lang='{_escape_header_attr(lang)}'")
        parts += [">", _escape_text(text), "</text>"]
    parts.append("</stream:error>")
    s = "".join(parts)
    if _INVALID_CHAR.search(s) is not None:
        raise ValueError("stream error text contains a character XML cannot carry")
    return s.encode("utf-8")
