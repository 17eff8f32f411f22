"""Account storage: the ``AccountStore`` protocol and its SQLAlchemy implementation."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from ...auth.credentials import ScramKeys, derive_keys
from ..db import sessionmaker
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
_KEYS = select(_ACCOUNTS).where(_ACCOUNTS.c.username == bindparam("u"), _ACCOUNTS.c.domain == bindparam("d"))


class SQLAccountStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sm = sessionmaker(engine)
        self._engine = engine

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
        """One prebuilt Core SELECT (no ORM identity map, no statement rebuilt): this runs at every login."""
        async with self._engine.connect() as conn:
            row = (await conn.execute(_KEYS, {"u": username, "d": domain})).first()
        if row is None:
            return None
        return ScramKeys(
            row.salt,
            row.iterations,
            row.sha1_stored_key,
            row.sha1_server_key,
            row.sha256_stored_key,
            row.sha256_server_key,
        )

    async def exists(self, username: str, domain: str) -> bool:
        async with self._sm() as s:
            r = await s.execute(select(Account.id).where(Account.username == username, Account.domain == domain))
            return r.first() is not None

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
