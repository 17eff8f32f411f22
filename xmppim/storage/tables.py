"""The core's tables (SQLAlchemy 2 ORM). Plugins keep their own tables on their own ``MetaData``.

Alembic's trunk in ``alembic/`` must match this module exactly (``alembic check`` is part of the tests).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Account(Base):
    """A local user. Passwords exist only as salted SCRAM keys (RFC 5802): never plaintext, never reversible."""

    __tablename__ = "accounts"
    __table_args__ = (UniqueConstraint("username", "domain", name="uq_accounts_user_domain"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(1023))
    domain: Mapped[str] = mapped_column(String(255))
    iterations: Mapped[int] = mapped_column(Integer)
    salt: Mapped[bytes] = mapped_column(LargeBinary(64))
    sha1_stored_key: Mapped[bytes] = mapped_column(LargeBinary(20))
    sha1_server_key: Mapped[bytes] = mapped_column(LargeBinary(20))
    sha256_stored_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    sha256_server_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class RosterItem(Base):
    """One contact on a user's roster with its RFC 6121 subscription state."""

    __tablename__ = "roster_items"
    __table_args__ = (UniqueConstraint("owner", "contact", name="uq_roster_owner_contact"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(3071), index=True)
    contact: Mapped[str] = mapped_column(String(3071))
    name: Mapped[str | None] = mapped_column(String(1023), nullable=True)
    subscription: Mapped[str] = mapped_column(String(8), default="none")
    ask: Mapped[bool] = mapped_column(Boolean, default=False)
    """Pending-out: we sent subscribe and await an answer (RFC 6121 §3.1.2 'ask')."""
    pending_in: Mapped[bool] = mapped_column(Boolean, default=False)
    """Pending-in: the contact asked to subscribe to us; stanza kept to re-deliver at login (§3.1.3)."""
    pending_in_stanza: Mapped[str | None] = mapped_column(Text, nullable=True)
    approved: Mapped[bool] = mapped_column(Boolean, default=False)
    """Pre-approved subscription (RFC 6121 §3.4)."""
    groups: Mapped[str] = mapped_column(Text, default="[]")
    """JSON list of group names."""
    in_roster: Mapped[bool] = mapped_column(Boolean, default=True)
    """False for a pending-in-only entry the user has not added (RFC 6121 §3.1.3: not shown)."""


class RosterVersion(Base):
    __tablename__ = "roster_versions"
    owner: Mapped[str] = mapped_column(String(3071), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0)


class OfflineMessage(Base):
    """A message stored for an offline user (XEP-0160), committed before the sender goes on."""

    __tablename__ = "offline_messages"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(3071), index=True)
    stanza: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PrivateXML(Base):
    """XEP-0049 private XML storage and XEP-0054 vCards (namespace 'vcard-temp'), keyed by namespace."""

    __tablename__ = "private_xml"
    __table_args__ = (UniqueConstraint("owner", "namespace", name="uq_private_owner_ns"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(3071), index=True)
    namespace: Mapped[str] = mapped_column(String(1023))
    xml: Mapped[str] = mapped_column(Text)


class BlockedJID(Base):
    """XEP-0191 blocklist entry."""

    __tablename__ = "blocklist"
    __table_args__ = (UniqueConstraint("owner", "jid", name="uq_blocklist_owner_jid"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(3071), index=True)
    jid: Mapped[str] = mapped_column(String(3071))


class LastActivity(Base):
    """XEP-0012: when a user last logged out, with the status of their last unavailable presence."""

    __tablename__ = "last_activity"
    owner: Mapped[str] = mapped_column(String(3071), primary_key=True)
    timestamp: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[str] = mapped_column(Text, default="")
