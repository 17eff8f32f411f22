"""XML streams for xmppim: the sans-I/O stream parser, the serializer and namespace constants.

RFC 6120 §4 (streams) and §11 (restricted XML).  Elements are plain ``xml.etree.ElementTree`` elements
in Clark notation, with the stream's content namespace made canonical as ``jabber:client``.
"""

from . import ns
from .parser import (
    Event,
    StanzaReceived,
    StreamClosed,
    StreamFault,
    StreamOpened,
    StreamParser,
    parse_element,
)
from .serialize import STREAM_CLOSE, serialize, stream_error, stream_header

__all__ = [
    "STREAM_CLOSE",
    "Event",
    "StanzaReceived",
    "StreamClosed",
    "StreamFault",
    "StreamOpened",
    "StreamParser",
    "ns",
    "parse_element",
    "serialize",
    "stream_error",
    "stream_header",
]
