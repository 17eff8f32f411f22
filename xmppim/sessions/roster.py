"""RFC 6121 §3 subscription states as pure data: the tables of Appendix A, with no I/O.

A roster item's state is (subscription, pending-out, pending-in, pre-approved). Each of the eight
subscription stanzas (four outbound, four inbound) maps a state to a new state; the functions below are
those tables, each row checked by ``tests/unit/test_rfc6121_appendix_a.py``. "No change" rows return the
state unchanged, and the caller neither pushes nor (for the rows the RFC names) delivers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace

NONE, TO, FROM, BOTH = "none", "to", "from", "both"
SUBSCRIPTION_TYPES = frozenset({"subscribe", "subscribed", "unsubscribe", "unsubscribed"})


@dataclass(frozen=True)
class SubState:
    sub: str = NONE
    pending_out: bool = False
    pending_in: bool = False
    approved: bool = False
    """Pre-approval (RFC 6121 §3.4): the next inbound subscribe is accepted automatically."""

    @property
    def label(self) -> str:
        """The RFC's name of this state, e.g. 'None + Pending Out/In' (for tests and logs)."""
        base = {NONE: "None", TO: "To", FROM: "From", BOTH: "Both"}[self.sub]
        if self.pending_out and self.pending_in:
            return base + " + Pending Out/In"
        if self.pending_out:
            return base + " + Pending Out"
        if self.pending_in:
            return base + " + Pending In"
        return base

    @property
    def subscribed_to(self) -> bool:
        """The user receives the contact's presence."""
        return self.sub in (TO, BOTH)

    @property
    def subscribed_from(self) -> bool:
        """The contact receives the user's presence."""
        return self.sub in (FROM, BOTH)


def _add(sub: str, direction: str) -> str:
    if direction == TO:
        return {NONE: TO, FROM: BOTH}.get(sub, sub)
    return {NONE: FROM, TO: BOTH}.get(sub, sub)


def _remove(sub: str, direction: str) -> str:
    if direction == TO:
        return {TO: NONE, BOTH: FROM}.get(sub, sub)
    return {FROM: NONE, BOTH: TO}.get(sub, sub)


# ---------------------------------------------------------- outbound (A.2)
def outbound(state: SubState, type_: str) -> SubState:
    """The user sends ``type_`` to the contact: the user's roster item for the contact changes so."""
    if type_ == "subscribe":  # A.2.1
        if state.subscribed_to:
            return state
        return replace(state, pending_out=True)
    if type_ == "unsubscribe":  # A.2.2
        return replace(state, pending_out=False, sub=_remove(state.sub, TO))
    if type_ == "subscribed":  # A.2.3
        if not state.pending_in:
            if state.subscribed_from:
                return state
            return replace(state, approved=True)  # §3.4 pre-approval
        return replace(state, pending_in=False, sub=_add(state.sub, FROM), approved=False)
    if type_ == "unsubscribed":  # A.2.4
        return replace(state, pending_in=False, approved=False, sub=_remove(state.sub, FROM))
    raise ValueError(type_)


def outbound_routes(before: SubState, after: SubState, type_: str) -> bool:
    """Whether the user's server routes the outbound stanza on to the contact (RFC 6121 §3.1.2-§3.3.2)."""
    if type_ == "subscribed":
        # §3.1.5: only an answer to a pending request travels; pre-approval stays local (§3.4).
        return before.pending_in
    return True


# ----------------------------------------------------------- inbound (A.3)
def inbound(state: SubState, type_: str) -> SubState:
    """The contact's ``type_`` arrives for the user: the user's roster item for the contact changes so."""
    if type_ == "subscribe":  # A.3.1
        if state.subscribed_from or state.pending_in:
            return state
        if state.approved:
            return replace(state, approved=False, sub=_add(state.sub, FROM))
        return replace(state, pending_in=True)
    if type_ == "unsubscribe":  # A.3.2
        return replace(state, pending_in=False, sub=_remove(state.sub, FROM))
    if type_ == "subscribed":  # A.3.3
        if not state.pending_out:
            return state
        return replace(state, pending_out=False, sub=_add(state.sub, TO))
    if type_ == "unsubscribed":  # A.3.4
        return replace(state, pending_out=False, sub=_remove(state.sub, TO))
    raise ValueError(type_)


def _core(s: SubState) -> tuple[str, bool, bool]:
    return s.sub, s.pending_out, s.pending_in


def inbound_delivers(before: SubState, after: SubState, type_: str) -> bool:
    """Whether the inbound stanza is delivered to the user (only when it changed the state, Appendix A.3)."""
    if type_ == "subscribe":
        return after.pending_in and not before.pending_in
    return _core(before) != _core(after)


def inbound_auto_reply(before: SubState, after: SubState, type_: str) -> bool:
    """An inbound subscribe to an already-subscribed (or pre-approved) contact is answered 'subscribed'."""
    return type_ == "subscribe" and after.subscribed_from


@dataclass
class RosterEntry:
    """One roster item with its state, name and groups, as stored and as pushed."""

    contact: str
    state: SubState = field(default_factory=SubState)
    name: str | None = None
    groups: list[str] = field(default_factory=list)
    in_roster: bool = True
    """False while the item exists only to remember a pending inbound request (§3.1.3: not shown)."""
    pending_in_stanza: str | None = None

    @property
    def visible(self) -> bool:
        return self.in_roster

    def groups_json(self) -> str:
        return json.dumps(self.groups)

    def is_empty(self) -> bool:
        """An invisible entry whose only reason to exist is gone can be deleted."""
        s = self.state
        return not self.in_roster and not s.pending_in and not s.approved and s.sub == NONE and not s.pending_out
