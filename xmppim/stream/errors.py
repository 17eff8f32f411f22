"""Stream-level errors (RFC 6120 §4.9): conditions are plain strings, checked against one set.

The set lives with the serializer that writes them (:data:`xmppim.xml.serialize.STREAM_ERROR_CONDITIONS`).
"""

from ..xml.serialize import STREAM_ERROR_CONDITIONS as STREAM_CONDITIONS

__all__ = ["STREAM_CONDITIONS"]
