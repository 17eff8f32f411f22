"""Account storage: the ``AccountStore`` protocol and its SQLAlchemy implementation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ...auth.credentials import ScramKeys, derive_keys
from ..db import FastPathUnavailable, sessionmaker, sqlite_reader
from ..tables import Account


class AccountExists(Exception):
    pass


class AccountStore(Protocol):
    async def create(self, username: str, domain: str, password: str) -> None: ...
    async def get_keys(self, username: str, domain: str) -> ScramKeys | None: ...
    async def exists(self, username: str, domain: str) -> bool: ...
    async def set_password(self, username: str, domain: str, password: str) -> bool: ...
    async def delete(self, username: str, domain: str) -> bool: ...
    async def list(self, domain: str | None = None) -> list[str]: ...


_ACCOUNTS = Account.__table__
_KEY_COLUMNS = ("salt", "iterations", "sha1_stored_key", "sha1_server_key", "sha256_stored_key", "sha256_server_key")
_KEYS = select(*(_ACCOUNTS.c[c] for c in _KEY_COLUMNS)).where(
    _ACCOUNTS.c.username == bindparam("u"), _ACCOUNTS.c.domain == bindparam("d")
)
_KEYS_SQLITE = f"SELECT {', '.join(_KEY_COLUMNS)} FROM {Account.__tablename__} WHERE username = ? AND domain = ?"
"""The same query for :class:`~xmppim.storage.db.SQLiteReader` (plain SQLite text, no SQLAlchemy)."""
_EXISTS = select(_ACCOUNTS.c.id).where(_ACCOUNTS.c.username == bindparam("u"), _ACCOUNTS.c.domain == bindparam("d"))
_EXISTS_SQLITE = f"SELECT id FROM {Account.__tablename__} WHERE username = ? AND domain = ?"


class SQLAccountStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sm = sessionmaker(engine)
        self._engine = engine
        self._fast = sqlite_reader(engine)

    async def create(self, username: str, domain: str, password: str) -> None:
        k = derive_keys(password)
        try:
            async with self._sm.begin() as s:
                s.add(
                    Account(
                        username=username,
                        domain=domain,
                        iterations=k.iterations,
                        salt=k.salt,
                        sha1_stored_key=k.sha1_stored_key,
                        sha1_server_key=k.sha1_server_key,
                        sha256_stored_key=k.sha256_stored_key,
                        sha256_server_key=k.sha256_server_key,
                        created_at=datetime.now(UTC),
                    )
                )
        except IntegrityError:
            raise AccountExists(f"{username}@{domain}") from None

    async def get_keys(self, username: str, domain: str) -> ScramKeys | None:
        """The account's SCRAM keys; this runs at every login.

        On an SQLite file it is one indexed read on the loop's thread (:class:`~xmppim.storage.db.SQLiteReader`:
        no hop to aiosqlite's thread); otherwise (PostgreSQL, or when that read is unavailable) one prebuilt
        Core SELECT, no ORM.
        """
        row = await self._one(_KEYS_SQLITE, _KEYS, username, domain)
        if row is None:
            return None
        salt, iterations, sha1_stored, sha1_server, sha256_stored, sha256_server = row
        return ScramKeys(
            bytes(salt), iterations, bytes(sha1_stored), bytes(sha1_server), bytes(sha256_stored), bytes(sha256_server)
        )

    async def _one(self, fast_sql: str, stmt: Any, username: str, domain: str) -> Any:
        """One row by (username, domain): the sqlite3 fast path when there is one, else the Core query."""
        if self._fast is not None:
            try:
                return self._fast.fetchone(fast_sql, (username, domain))
            except FastPathUnavailable:
                pass
        async with self._engine.connect() as conn:
            return (await conn.execute(stmt, {"u": username, "d": domain})).first()

    async def exists(self, username: str, domain: str) -> bool:
        """Asked for every message to an offline user and every inbound subscription: same fast path."""
        return await self._one(_EXISTS_SQLITE, _EXISTS, username, domain) is not None

    async def set_password(self, username: str, domain: str, password: str) -> bool:
        k = derive_keys(password)
        async with self._sm.begin() as s:
            r = await s.execute(
                update(Account)
                .where(Account.username == username, Account.domain == domain)
                .values(
                    iterations=k.iterations,
                    salt=k.salt,
                    sha1_stored_key=k.sha1_stored_key,
                    sha1_server_key=k.sha1_server_key,
                    sha256_stored_key=k.sha256_stored_key,
                    sha256_server_key=k.sha256_server_key,
                )
            )
            return bool(r.rowcount)

    async def delete(self, username: str, domain: str) -> bool:
        async with self._sm.begin() as s:
            r = await s.execute(delete(Account).where(Account.username == username, Account.domain == domain))
            return bool(r.rowcount)

    async def list(self, domain: str | None = None) -> list[str]:
        q = select(Account.username, Account.domain).order_by(Account.domain, Account.username)
        if domain:
            q = q.where(Account.domain == domain)
        async with self._sm() as s:
            return [f"{u}@{d}" for u, d in (await s.execute(q)).all()]
