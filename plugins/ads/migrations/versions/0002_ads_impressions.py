"""ads: durable impressions and clicks (frequency-cap history, unbilled events survive restarts)

Revision ID: 0002_ads
Revises: 0001_ads
Create Date: 2026-11-29 05:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002_ads"
down_revision: str | Sequence[str] | None = "0001_ads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "ads_impressions",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("campaign_id", sa.BigInteger(), nullable=False),
        sa.Column("user", sa.String(length=3071), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("price", sa.BigInteger(), nullable=False),
        sa.Column("batch", sa.Integer(), nullable=True),
        sa.Column("final", sa.Boolean(), nullable=False),
        sa.Column("posted", sa.Boolean(), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_ads_impressions_campaign_posted", "ads_impressions", ["campaign_id", "posted"])
    op.create_index("ix_ads_impressions_at", "ads_impressions", ["at"])


def downgrade() -> None:
    op.drop_index("ix_ads_impressions_at", table_name="ads_impressions")
    op.drop_index("ix_ads_impressions_campaign_posted", table_name="ads_impressions")
    op.drop_table("ads_impressions")
