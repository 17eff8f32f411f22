"""wallet: initial tables (accounts, holds, transfers, chain head)

Revision ID: 0001_wallet
Revises:
Create Date: 2026-11-29 04:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001_wallet"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("wallet",)
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "wallet_accounts",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("owner", sa.String(length=3071), nullable=False),
        sa.Column("currency", sa.String(length=16), nullable=False),
        sa.Column("balance", sa.BigInteger(), nullable=False),
        sa.Column("allow_negative", sa.Boolean(), nullable=False),
        sa.Column("frozen", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("allow_negative OR balance >= 0", name="ck_wallet_accounts_nonnegative"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "owner", "currency", name="uq_wallet_accounts_kind_owner_currency"),
    )
    op.create_table(
        "wallet_chain",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "wallet_holds",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("currency", sa.String(length=16), nullable=False),
        sa.Column("debit_account_id", BigId, nullable=False),
        sa.Column("credit_account_id", BigId, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("captured", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("initiator", sa.String(length=3071), nullable=False),
        sa.Column("memo", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "amount > 0 AND captured >= 0 AND captured <= amount", name="ck_wallet_holds_amounts"
        ),
        sa.ForeignKeyConstraint(["credit_account_id"], ["wallet_accounts.id"]),
        sa.ForeignKeyConstraint(["debit_account_id"], ["wallet_accounts.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_wallet_holds_status_expires", "wallet_holds", ["status", "expires_at"], unique=False)
    op.create_table(
        "wallet_transfers",
        sa.Column("seq", BigId, autoincrement=False, nullable=False),
        sa.Column("currency", sa.String(length=16), nullable=False),
        sa.Column("debit_account_id", BigId, nullable=False),
        sa.Column("credit_account_id", BigId, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("memo", sa.String(length=256), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("initiator", sa.String(length=3071), nullable=False),
        sa.Column("idem_key", sa.String(length=256), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("hold_id", BigId, nullable=True),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.CheckConstraint("amount > 0", name="ck_wallet_transfers_positive"),
        sa.CheckConstraint("debit_account_id <> credit_account_id", name="ck_wallet_transfers_distinct"),
        sa.ForeignKeyConstraint(["credit_account_id"], ["wallet_accounts.id"]),
        sa.ForeignKeyConstraint(["debit_account_id"], ["wallet_accounts.id"]),
        sa.ForeignKeyConstraint(["hold_id"], ["wallet_holds.id"]),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("initiator", "idem_key", name="uq_wallet_transfers_initiator_idem_key"),
    )
    op.create_index("ix_wallet_transfers_credit", "wallet_transfers", ["credit_account_id"], unique=False)
    op.create_index(
        "ix_wallet_transfers_debit_kind_created",
        "wallet_transfers",
        ["debit_account_id", "kind", "created_at"],
        unique=False,
    )
    op.create_index("ix_wallet_transfers_hold", "wallet_transfers", ["hold_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_wallet_transfers_hold", table_name="wallet_transfers")
    op.drop_index("ix_wallet_transfers_debit_kind_created", table_name="wallet_transfers")
    op.drop_index("ix_wallet_transfers_credit", table_name="wallet_transfers")
    op.drop_table("wallet_transfers")
    op.drop_index("ix_wallet_holds_status_expires", table_name="wallet_holds")
    op.drop_table("wallet_holds")
    op.drop_table("wallet_chain")
    op.drop_table("wallet_accounts")
