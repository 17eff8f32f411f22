"""ads: initial tables (campaigns, per-user preferences, premium periods)

Revision ID: 0001_ads
Revises:
Create Date: 2026-11-29 04:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0001_ads"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = ("ads",)
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ads_campaigns",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("advertiser", sa.String(length=3071), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("link", sa.String(length=2048), nullable=False),
        sa.Column("image_url", sa.String(length=2048), nullable=False),
        sa.Column("target_domains", sa.Text(), nullable=False),
        sa.Column("target_topics", sa.Text(), nullable=False),
        sa.Column("target_locales", sa.Text(), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("budget", sa.BigInteger(), nullable=False),
        sa.Column("price_impression", sa.BigInteger(), nullable=False),
        sa.Column("price_click", sa.BigInteger(), nullable=False),
        sa.Column("cap_hour", sa.Integer(), nullable=False),
        sa.Column("cap_day", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column("impressions", sa.BigInteger(), nullable=False),
        sa.Column("clicks", sa.BigInteger(), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("batches", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ads_campaigns_advertiser", "ads_campaigns", ["advertiser"])
    op.create_index("ix_ads_campaigns_status", "ads_campaigns", ["status"])
    op.create_table(
        "ads_prefs",
        sa.Column("user", sa.String(length=3071), nullable=False),
        sa.Column("opt_out", sa.Boolean(), nullable=False),
        sa.Column("topics", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user"),
    )
    op.create_table(
        "ads_premium",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("user", sa.String(length=3071), nullable=False),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("hold_id", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("user", "starts_at", name="uq_ads_premium_user_start"),
    )


def downgrade() -> None:
    op.drop_table("ads_premium")
    op.drop_table("ads_prefs")
    op.drop_index("ix_ads_campaigns_status", table_name="ads_campaigns")
    op.drop_index("ix_ads_campaigns_advertiser", table_name="ads_campaigns")
    op.drop_table("ads_campaigns")
