"""Small helpers to build the stanzas the server itself answers with (errors, IQ results).

Elements are plain ElementTree elements with stanza tags in the canonical ``jabber:client`` namespace
(the parser maps every stream's content namespace onto it).
"""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

from .xml import ns

C = "{jabber:client}"
MESSAGE = C + "message"
PRESENCE = C + "presence"
IQ = C + "iq"
BODY = C + "body"
ERROR = C + "error"
STATUS = C + "status"
SHOW = C + "show"
PRIORITY = C + "priority"
THREAD = C + "thread"
SUBJECT = C + "subject"

# RFC 6120 §8.3.3: the error type that goes with each defined condition.
ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "gone": "cancel",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "redirect": "modify",
    "registration-required": "auth",
    "remote-server-not-found": "cancel",
    "remote-server-timeout": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "subscription-required": "auth",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}


def error_reply(
    stanza: Element,
    condition: str,
    text: str | None = None,
    *,
    type_: str | None = None,
    app_condition: Element | None = None,
    by: str | None = None,
) -> Element:
    """The error answer to ``stanza`` (RFC 6120 §8.3): addresses swapped, same id, no original payload."""
    reply = Element(stanza.tag)
    a = stanza.attrib
    if "from" in a:
        reply.set("to", a["from"])
    if "to" in a:
        reply.set("from", a["to"])
    if "id" in a:
        reply.set("id", a["id"])
    reply.set("type", "error")
    err = SubElement(reply, ERROR, {"type": type_ or ERROR_TYPES.get(condition, "cancel")})
    if by:
        err.set("by", by)
    SubElement(err, f"{{{ns.STANZA_ERRORS}}}{condition}")
    if text:
        t = SubElement(err, f"{{{ns.STANZA_ERRORS}}}text")
        t.text = text
    if app_condition is not None:
        err.append(app_condition)
    return reply


def iq_result(iq: Element, payload: Element | None = None) -> Element:
    reply = Element(IQ, {"type": "result", "id": iq.get("id", "")})
    if "from" in iq.attrib:
        reply.set("to", iq.attrib["from"])
    if "to" in iq.attrib:
        reply.set("from", iq.attrib["to"])
    if payload is not None:
        reply.append(payload)
    return reply


def error_condition(stanza: Element) -> str | None:
    """The defined condition of an error stanza, e.g. ``'service-unavailable'``."""
    err = stanza.find(ERROR)
    if err is None:
        return None
    for child in err:
        if child.tag.startswith("{" + ns.STANZA_ERRORS + "}") and not child.tag.endswith("}text"):
            return child.tag.split("}", 1)[1]
    return None


def payload_ns(iq: Element) -> str:
    """Namespace of an IQ's single payload child ('' when it has none)."""
    for child in iq:
        tag = child.tag
        if tag.startswith("{"):
            return tag[1 : tag.index("}")]
        return ""
    return ""
