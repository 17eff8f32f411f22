"""Wallet tables on the plugin's own ``MetaData`` (prefixed ``wallet_``).

Double-entry model (see ``ledger.py`` for the rules):

* ``wallet_accounts``: one row per (kind, owner, currency).  ``kind`` is ``user`` (owner = bare JID) or
  ``system`` (owner = ``issuance`` / ``fees`` / ``revenue`` / ``escrow``).  ``balance`` is a cache that is
  only ever changed in the same DB transaction that inserts the transfer moving it; ``verify`` recomputes it
  from the transfers.  ``allow_negative`` is true only for ``issuance`` (it goes negative as coins are
  minted, so the sum over all accounts stays zero).  Accounts are never deleted: a deleted user's account is
  ``frozen``.
* ``wallet_transfers``: immutable, one debit and one credit account each, ``seq`` is both the primary key
  and the position in the hash chain (no gaps: it is allocated under the chain lock).  ``(initiator,
  idem_key)`` is unique; ``request_hash`` fingerprints the request so a reused key with a different request
  can be refused.
* ``wallet_holds``: two-phase transfers.  The money of an open hold sits in the ``escrow`` system account;
  ``captured`` grows with each (partial) post.  Holds change state; the money moves are transfers.
* ``wallet_chain``: a single row with the chain head (last seq, its hash) and an Ed25519 signature over it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

metadata = MetaData()

#: BIGINT on PostgreSQL, INTEGER on SQLite (so that an INTEGER PRIMARY KEY is the rowid alias).
BigId = BigInteger().with_variant(Integer(), "sqlite")

accounts = Table(
    "wallet_accounts",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("kind", String(16), nullable=False),
    Column("owner", String(3071), nullable=False),
    Column("currency", String(16), nullable=False),
    Column("balance", BigInteger, nullable=False, default=0),
    Column("allow_negative", Boolean, nullable=False, default=False),
    Column("frozen", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("kind", "owner", "currency", name="uq_wallet_accounts_kind_owner_currency"),
    CheckConstraint("allow_negative OR balance >= 0", name="ck_wallet_accounts_nonnegative"),
)

holds = Table(
    "wallet_holds",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("currency", String(16), nullable=False),
    Column("debit_account_id", BigId, ForeignKey("wallet_accounts.id"), nullable=False),
    Column("credit_account_id", BigId, ForeignKey("wallet_accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("captured", BigInteger, nullable=False, default=0),
    # pending | posted | voided | expired
    Column("status", String(16), nullable=False),
    Column("initiator", String(3071), nullable=False),
    Column("memo", String(256), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("closed_at", DateTime(timezone=True), nullable=True),
    CheckConstraint("amount > 0 AND captured >= 0 AND captured <= amount", name="ck_wallet_holds_amounts"),
    Index("ix_wallet_holds_status_expires", "status", "expires_at"),
)

transfers = Table(
    "wallet_transfers",
    metadata,
    Column("seq", BigId, primary_key=True, autoincrement=False),
    Column("currency", String(16), nullable=False),
    Column("debit_account_id", BigId, ForeignKey("wallet_accounts.id"), nullable=False),
    Column("credit_account_id", BigId, ForeignKey("wallet_accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("memo", String(256), nullable=False, default=""),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("initiator", String(3071), nullable=False),
    Column("idem_key", String(256), nullable=True),
    Column("request_hash", String(64), nullable=True),
    Column("hold_id", BigId, ForeignKey("wallet_holds.id"), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    UniqueConstraint("initiator", "idem_key", name="uq_wallet_transfers_initiator_idem_key"),
    CheckConstraint("amount > 0", name="ck_wallet_transfers_positive"),
    CheckConstraint("debit_account_id <> credit_account_id", name="ck_wallet_transfers_distinct"),
    Index("ix_wallet_transfers_debit_kind_created", "debit_account_id", "kind", "created_at"),
    Index("ix_wallet_transfers_credit", "credit_account_id"),
    Index("ix_wallet_transfers_hold", "hold_id"),
)

chain = Table(
    "wallet_chain",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("head_hash", String(64), nullable=False),
    Column("signature", String(128), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

__all__ = ["metadata", "accounts", "holds", "transfers", "chain"]
