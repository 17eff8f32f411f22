"""RFC 6121 Appendix A: every row of the subscription state tables, one parametrised case per row."""

from __future__ import annotations

import pytest

from xmppim.sessions.roster import BOTH, FROM, NONE, TO, SubState, inbound, inbound_delivers, outbound

S = {
    "None": SubState(NONE),
    "None + Pending Out": SubState(NONE, pending_out=True),
    "None + Pending In": SubState(NONE, pending_in=True),
    "None + Pending Out/In": SubState(NONE, pending_out=True, pending_in=True),
    "To": SubState(TO),
    "To + Pending In": SubState(TO, pending_in=True),
    "From": SubState(FROM),
    "From + Pending Out": SubState(FROM, pending_out=True),
    "Both": SubState(BOTH),
}

# (stanza, existing state) -> new state, transcribed from Appendix A.2 (outbound) and A.3 (inbound).
OUTBOUND = {
    "subscribe": {
        "None": "None + Pending Out",
        "None + Pending Out": "None + Pending Out",
        "None + Pending In": "None + Pending Out/In",
        "None + Pending Out/In": "None + Pending Out/In",
        "To": "To",
        "To + Pending In": "To + Pending In",
        "From": "From + Pending Out",
        "From + Pending Out": "From + Pending Out",
        "Both": "Both",
    },
    "unsubscribe": {
        "None": "None",
        "None + Pending Out": "None",
        "None + Pending In": "None + Pending In",
        "None + Pending Out/In": "None + Pending In",
        "To": "None",
        "To + Pending In": "None + Pending In",
        "From": "From",
        "From + Pending Out": "From",
        "Both": "From",
    },
    "subscribed": {
        "None": "None",
        "None + Pending Out": "None + Pending Out",
        "None + Pending In": "From",
        "None + Pending Out/In": "From + Pending Out",
        "To": "To",
        "To + Pending In": "Both",
        "From": "From",
        "From + Pending Out": "From + Pending Out",
        "Both": "Both",
    },
    "unsubscribed": {
        "None": "None",
        "None + Pending Out": "None + Pending Out",
        "None + Pending In": "None",
        "None + Pending Out/In": "None + Pending Out",
        "To": "To",
        "To + Pending In": "To",
        "From": "None",
        "From + Pending Out": "None + Pending Out",
        "Both": "To",
    },
}
INBOUND = {
    "subscribe": {
        "None": "None + Pending In",
        "None + Pending Out": "None + Pending Out/In",
        "None + Pending In": "None + Pending In",
        "None + Pending Out/In": "None + Pending Out/In",
        "To": "To + Pending In",
        "To + Pending In": "To + Pending In",
        "From": "From",
        "From + Pending Out": "From + Pending Out",
        "Both": "Both",
    },
    "unsubscribe": {
        "None": "None",
        "None + Pending Out": "None + Pending Out",
        "None + Pending In": "None",
        "None + Pending Out/In": "None + Pending Out",
        "To": "To",
        "To + Pending In": "To",
        "From": "None",
        "From + Pending Out": "None + Pending Out",
        "Both": "To",
    },
    "subscribed": {
        "None": "None",
        "None + Pending Out": "To",
        "None + Pending In": "None + Pending In",
        "None + Pending Out/In": "To + Pending In",
        "To": "To",
        "To + Pending In": "To + Pending In",
        "From": "From",
        "From + Pending Out": "Both",
        "Both": "Both",
    },
    "unsubscribed": {
        "None": "None",
        "None + Pending Out": "None",
        "None + Pending In": "None + Pending In",
        "None + Pending Out/In": "None + Pending In",
        "To": "None",
        "To + Pending In": "None + Pending In",
        "From": "From",
        "From + Pending Out": "From",
        "Both": "From",
    },
}


def rows(table: dict[str, dict[str, str]]) -> list[tuple[str, str, str]]:
    return [(t, old, new) for t, m in table.items() for old, new in m.items()]


@pytest.mark.parametrize("stanza, old, new", rows(OUTBOUND))
def test_outbound_row(stanza: str, old: str, new: str) -> None:
    """A.2: the user's server processing the user's own outbound subscription stanza."""
    assert outbound(S[old], stanza).label == new


@pytest.mark.parametrize("stanza, old, new", rows(INBOUND))
def test_inbound_row(stanza: str, old: str, new: str) -> None:
    """A.3: the user's server processing an inbound subscription stanza from the contact."""
    after = inbound(S[old], stanza)
    assert after.label == new
    # Delivered to the user exactly when the row changes the state.
    assert inbound_delivers(S[old], after, stanza) == (old != new)


def test_preapproval_turns_the_next_subscribe_into_from() -> None:
    approved = outbound(S["None"], "subscribed")
    assert approved.approved and approved.label == "None"
    after = inbound(approved, "subscribe")
    assert after.label == "From" and not after.approved
