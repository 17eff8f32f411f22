"""Wallet plugin: a double-entry virtual-currency ledger (issue 5).

Public API: :class:`~plugins.wallet.ledger.Ledger`, :class:`~plugins.wallet.ledger.WalletConfig`, the
tables' ``metadata``, :func:`~plugins.wallet.webhook.make_topup_handler` and the CLI in ``cli.py``.
"""

from .ledger import (
    CONDITIONS,
    BadAmount,
    Duplicate,
    Frozen,
    HistoryEntry,
    Hold,
    HoldClosed,
    InsufficientFunds,
    InvalidRequest,
    Ledger,
    LimitExceeded,
    Transfer,
    UnknownHold,
    UnknownRecipient,
    VerifyReport,
    WalletConfig,
    WalletError,
)
from .tables import metadata

NAMESPACE = "urn:xmppim:wallet:0"

__all__ = [
    "CONDITIONS",
    "NAMESPACE",
    "BadAmount",
    "Duplicate",
    "Frozen",
    "HistoryEntry",
    "Hold",
    "HoldClosed",
    "InsufficientFunds",
    "InvalidRequest",
    "Ledger",
    "LimitExceeded",
    "Transfer",
    "UnknownHold",
    "UnknownRecipient",
    "VerifyReport",
    "WalletConfig",
    "WalletError",
    "metadata",
]
