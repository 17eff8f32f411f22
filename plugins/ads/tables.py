"""Ads tables on the plugin's own ``MetaData`` (prefixed ``ads_``), migrated by the alembic branch ``ads``.

* ``ads_campaigns``: one row per campaign.  Money never lives here: the budget sits in a wallet hold
  (``hold_id``, payer the advertiser, payee ``revenue``); ``impressions``/``clicks``/``spent`` are the
  counters of what was *posted* to that hold, ``batches`` numbers the posts (their idempotency keys).
* ``ads_prefs``: per-user settings (opt-out, opted-in topics).  Never any message text.
* ``ads_premium``: ad-free periods bought with coins; ``(user, starts_at)`` is unique and is also the
  idempotency key of the charge, so a retried activation never charges twice.
* ``ads_impressions``: every delivered impression (``kind='imp'``) and every recorded click
  (``kind='click'``, ``user`` empty) with its price, written when it happens so that neither the caps'
  windows nor unbilled events are lost on restart.  ``batch`` is set *before* the wallet post of the batch
  (the post's idempotency key is ``ads:c<campaign>:b<batch>``), ``posted`` after it; see ``engine.py``.
  ``final`` is the batch post's ``final`` flag (part of the post's request, needed to replay it);
  ``nonce`` is a charged click's token nonce (one charge per token, also after a restart).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

BigId = BigInteger().with_variant(Integer(), "sqlite")

campaigns = Table(
    "ads_campaigns",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("advertiser", String(3071), nullable=False),
    Column("text", Text, nullable=False),
    Column("link", String(2048), nullable=False),
    Column("image_url", String(2048), nullable=False),
    Column("target_domains", Text, nullable=False),
    Column("target_topics", Text, nullable=False),
    Column("target_locales", Text, nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("budget", BigInteger, nullable=False),
    Column("price_impression", BigInteger, nullable=False),
    Column("price_click", BigInteger, nullable=False),
    Column("cap_hour", Integer, nullable=False),
    Column("cap_day", Integer, nullable=False),
    Column("status", String(16), nullable=False),
    Column("hold_id", BigInteger, nullable=True),
    Column("impressions", BigInteger, nullable=False),
    Column("clicks", BigInteger, nullable=False),
    Column("spent", BigInteger, nullable=False),
    Column("batches", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_ads_campaigns_advertiser", "advertiser"),
    Index("ix_ads_campaigns_status", "status"),
)

prefs = Table(
    "ads_prefs",
    metadata,
    Column("user", String(3071), primary_key=True),
    Column("opt_out", Boolean, nullable=False),
    Column("topics", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

impressions = Table(
    "ads_impressions",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("campaign_id", BigInteger, nullable=False),
    Column("user", String(3071), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("batch", Integer, nullable=True),
    Column("final", Boolean, nullable=False),
    Column("posted", Boolean, nullable=False),
    Column("nonce", String(64), nullable=True),
    Index("ix_ads_impressions_campaign_posted", "campaign_id", "posted"),
    Index("ix_ads_impressions_at", "at"),
)

premium = Table(
    "ads_premium",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("user", String(3071), nullable=False),
    Column("starts_at", DateTime(timezone=True), nullable=False),
    Column("ends_at", DateTime(timezone=True), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("hold_id", BigInteger, nullable=True),
    Column("status", String(16), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("user", "starts_at", name="uq_ads_premium_user_start"),
)
