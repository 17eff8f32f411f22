"""Which stanzas ad logic may look at (``plugins.ads.e2ee``): encryption by element first, then the rest."""

from __future__ import annotations

from xml.etree.ElementTree import Element, SubElement

import pytest

from plugins.ads.e2ee import E2EE_NAMESPACES, is_encrypted, plain_body

C = "{jabber:client}"


def msg(body: str | None = "hello", type_: str | None = "chat", *children: str) -> Element:
    m = Element(f"{C}message", {"to": "bob@localhost"} | ({"type": type_} if type_ else {}))
    for ns in children:
        SubElement(m, f"{{{ns}}}encrypted")
    if body is not None:
        SubElement(m, f"{C}body").text = body
    return m


class TrapBody(Element):
    """A message whose body must never be read: finding it fails the test."""

    def find(self, path: str, namespaces: object = None) -> Element | None:  # type: ignore[override]
        raise AssertionError("ad logic looked at the body of an encrypted message")


@pytest.mark.parametrize("ns", sorted(E2EE_NAMESPACES))
def test_encrypted_messages_are_refused_before_anything_is_read(ns: str) -> None:
    m = TrapBody(f"{C}message", {"type": "chat"})
    SubElement(m, f"{{{ns}}}encrypted")
    SubElement(m, f"{C}body").text = "fallback text"
    assert is_encrypted(m)
    assert plain_body(m) is None  # would raise if the body were looked at first


def test_nested_encryption_counts_too() -> None:
    m = msg("x")
    fwd = SubElement(m, "{urn:xmpp:forward:0}forwarded")
    SubElement(fwd, "{urn:xmpp:omemo:2}encrypted")
    assert plain_body(m) is None


@pytest.mark.parametrize(
    "m",
    [
        msg("hi", "groupchat"),
        msg("hi", "error"),
        msg("hi", "headline"),
        msg(None, "chat"),  # receipts, chat states, markers
        msg("   ", "chat"),
        msg("?OTRv23? query", "chat"),
        msg("  ?OTR:AAMG", "normal"),
    ],
)
def test_private_or_bodyless_messages_are_refused(m: Element) -> None:
    assert plain_body(m) is None


def test_plain_chat_and_normal_bodies_pass() -> None:
    assert plain_body(msg("hello there", "chat")) == "hello there"
    assert plain_body(msg("hello", None)) == "hello"
    assert plain_body(msg("about OTR?", "normal")) == "about OTR?"
