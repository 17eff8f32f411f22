"""Which messages ad logic may look at: plain, one-to-one chat bodies only.

The order of the checks is the safety rule (issue 6, design note "Ads: stay out of the user's
conversation"): end-to-end encryption is detected **by element first**, before the type, the body or
anything else is read, so no later code path can touch an encrypted message:

* XEP-0384 OMEMO (``eu.siacs.conversations.axolotl`` legacy and ``urn:xmpp:omemo:2``),
* XEP-0373/0374 OpenPGP for XMPP (``urn:xmpp:openpgp:0``),
* XEP-0027 legacy OpenPGP (``jabber:x:encrypted``),
* XEP-0380 explicit encryption marks (``urn:xmpp:eme:0``), which name any of the above or OTR.

Then groupchat (rooms are out of scope until a room-owner switch exists), errors and headlines, and
stanzas without a body (receipts, chat states, markers) are refused.  Only then is the body read, and only
to refuse OTR (its messages are plain bodies beginning ``?OTR``, XEP-0364).
"""

from __future__ import annotations

from xml.etree.ElementTree import Element

BODY = "{jabber:client}body"

E2EE_NAMESPACES = frozenset(
    {
        "eu.siacs.conversations.axolotl",
        "urn:xmpp:omemo:2",
        "urn:xmpp:openpgp:0",
        "jabber:x:encrypted",
        "urn:xmpp:eme:0",
    }
)


def namespace(tag: str) -> str:
    return tag[1:].partition("}")[0] if tag.startswith("{") else ""


def is_encrypted(stanza: Element) -> bool:
    """True when any child (direct or nested, e.g. inside a forwarded wrapper) is end-to-end encrypted."""
    for el in stanza.iter():
        if el is not stanza and namespace(el.tag) in E2EE_NAMESPACES:
            return True
    return False


def plain_body(stanza: Element) -> str | None:
    """The body of a plain one-to-one message ads may react to, else None (see the module docstring)."""
    if is_encrypted(stanza):
        return None
    if stanza.get("type", "normal") not in ("chat", "normal"):
        return None
    body = stanza.find(BODY)
    if body is None or not body.text or not body.text.strip():
        return None
    text = body.text
    if text.lstrip().startswith("?OTR"):
        return None
    return text
