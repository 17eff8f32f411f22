"""A double-entry coin ledger that never creates or loses a coin.

Rules (issue 5; design note ``value-added-services.md`` "Money"):

* Every balance change is an immutable transfer from one account to another of the same currency, inserted
  in the same DB transaction that changes the two cached balances.  Minting is a transfer from the system
  account ``issuance`` (which may go negative), so the sum over all accounts of a currency is always zero.
* User accounts (and the system accounts ``fees``, ``revenue``, ``escrow``) never go below zero: the debit
  is a conditional ``UPDATE ... WHERE balance >= :amount`` whose row count decides, and a CHECK constraint
  backs it up.
* Paid and bonus coins are separate currency codes (``COIN`` / ``COIN_BONUS`` by default); which of them
  users may send to each other is configuration (``transferable_currencies``).  Nothing here ever redeems
  coins for money.
* Idempotency (Stripe's rule): ``(initiator, idem_key)`` is unique.  A repeat with the same key and the same
  request returns the first result (``replayed=True``) and moves nothing; the same key with a different
  request raises ``duplicate``.  Failed requests do not consume their key.
* Two-phase transfers: ``hold`` moves the amount from the payer into the per-currency ``escrow`` account and
  records a pending hold with a deadline; ``post`` captures part or all of it for the payee (several
  partial posts are allowed, e.g. ad impressions in batches; a ``final`` post releases the rest); ``void``
  (or ``expire_holds`` after the deadline) releases what is left.  So escrow is modelled as *holds with
  partial posts*; a campaign's escrow is its hold, and the escrow account's balance always equals the sum of
  the open holds' remaining amounts (``verify`` checks it).
* Audit trail: each transfer row stores ``hash = sha256(canonical content + prev_hash)``; the chain head
  (seq, hash) is signed with an Ed25519 key kept in ``data_dir`` after every write.  ``verify`` recomputes
  the chain, checks the signature and all invariants and reports the first bad row.

Concurrency and isolation: every write transaction first takes one global write lock and then works under
it, so writes are serialized (the hash chain needs a total order anyway):

* SQLite: the transaction is opened with ``BEGIN IMMEDIATE`` (driver autocommit + explicit BEGIN), so the
  database write lock is taken before anything is read; ``busy_timeout`` makes other processes wait.
* PostgreSQL: READ COMMITTED, and the first statement is ``SELECT ... FROM wallet_chain WHERE id = 1 FOR
  UPDATE``, which every writer takes in the same order (first and only), so there are no deadlocks and no
  serialization failures to retry.  Reads for ``verify``/``export`` use one REPEATABLE READ snapshot.
* Within one process an ``asyncio.Lock`` additionally queues writers so they do not hold pool connections
  while waiting for the DB lock (an optimisation; correctness comes from the DB lock, which is what
  protects several processes, e.g. the server and the CLI).
* Group commit: requests that arrive while a write transaction runs are queued and then executed together
  (up to ``batch_max``) in one transaction, each inside its own SAVEPOINT, so a refused request undoes only
  its own statements; one lock acquisition, one chain-head signature and one commit (one fsync) serve the
  whole batch.  Callers get their result only after the commit.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from slixmpp import JID
from slixmpp.jid import InvalidJID
from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from xmppim.files import create_once

from .tables import accounts, chain, holds, transfers

GENESIS_HASH = "0" * 64
SYSTEM_ACCOUNTS = ("issuance", "fees", "revenue", "escrow")
PAYEES = ("revenue", "fees")
KEY_FILE = "wallet_ed25519.pem"
MEMO_MAX = 256
KEY_MAX = 256

UserExists = Callable[[str], Awaitable[bool]]
T = TypeVar("T")


# --------------------------------------------------------------------------------------------- errors
class WalletError(Exception):
    """A refused wallet operation; ``condition`` is the application condition sent to XMPP clients
    (element name in namespace ``urn:xmppim:wallet:0``)."""

    condition = "invalid-request"

    def __init__(self, text: str = "") -> None:
        super().__init__(text or self.condition)
        self.text = text


class InsufficientFunds(WalletError):
    condition = "insufficient-funds"


class LimitExceeded(WalletError):
    condition = "limit-exceeded"


class UnknownRecipient(WalletError):
    condition = "unknown-recipient"


class Duplicate(WalletError):
    """The idempotency key was already used by this initiator for a different request."""

    condition = "duplicate"


class Frozen(WalletError):
    condition = "frozen"


class BadAmount(WalletError):
    condition = "bad-amount"


class InvalidRequest(WalletError):
    """Unknown currency, non-transferable currency, sending to oneself, memo or key too long."""

    condition = "invalid-request"


class UnknownHold(WalletError):
    condition = "unknown-hold"


class HoldClosed(WalletError):
    """The hold was already posted, voided or expired (or its deadline passed)."""

    condition = "hold-closed"


CONDITIONS = (
    "insufficient-funds",
    "limit-exceeded",
    "unknown-recipient",
    "duplicate",
    "frozen",
    "bad-amount",
    "invalid-request",
    "unknown-hold",
    "hold-closed",
)


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class WalletConfig:
    """Wallet settings.  Amounts are integer minor units (no floats anywhere).

    - ``currency``: the paid currency code used when a call names none (``COIN``).
    - ``bonus_currency``: free/bonus coins kept apart from paid ones (``COIN_BONUS``).
    - ``transferable_currencies``: what users may send each other; default paid only, so bonus coins can
      only be spent on the operator's services (``charge``/``hold``), never passed on.
    - ``max_transfer``: per-operation maximum for every move (1,000,000).
    - ``daily_send_limit``: per user per UTC day, user-to-user sends only (5,000,000; 0 = no limit).
    - ``hold_timeout_s``: default deadline of a hold (900 s); ``hold(timeout_s=...)`` overrides it.
    - ``admins``: bare JIDs allowed to mint from XMPP (the XMPP layer enforces it; the CLI is admin).
    - ``webhook_secret``: HMAC secret of the top-up webhook (empty = webhook refuses everything).
    - ``webhook_tolerance_s``: accepted clock skew of a top-up notification's timestamp (300 s).
    """

    currency: str = "COIN"
    bonus_currency: str = "COIN_BONUS"
    transferable_currencies: tuple[str, ...] = ("COIN",)
    max_transfer: int = 1_000_000
    daily_send_limit: int = 5_000_000
    hold_timeout_s: float = 900.0
    admins: tuple[str, ...] = ()
    webhook_secret: str = ""
    webhook_tolerance_s: int = 300

    @property
    def currencies(self) -> tuple[str, ...]:
        return (self.currency, self.bonus_currency)


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class Transfer:
    """One immutable ledger row.  ``debit``/``credit`` are labels ``user:JID`` or ``system:NAME``."""

    seq: int
    currency: str
    debit: str
    credit: str
    amount: int
    kind: str
    memo: str
    created_at: datetime
    initiator: str
    idem_key: str | None
    hold_id: int | None
    hash: str
    replayed: bool = False


@dataclass(frozen=True)
class Hold:
    """A two-phase transfer: ``amount`` reserved from ``payer`` for ``payee``; ``captured`` posted so far."""

    id: int
    currency: str
    payer: str
    payee: str
    amount: int
    captured: int
    status: str
    memo: str
    initiator: str
    created_at: datetime
    expires_at: datetime
    closed_at: datetime | None
    replayed: bool = False

    @property
    def remaining(self) -> int:
        return self.amount - self.captured if self.status == "pending" else 0


@dataclass(frozen=True)
class HistoryEntry:
    """A transfer seen from one user's account: ``amount`` is negative when coins left it."""

    seq: int
    created_at: datetime
    kind: str
    currency: str
    amount: int
    counterparty: str
    memo: str


@dataclass
class VerifyReport:
    ok: bool = True
    problems: list[str] = field(default_factory=list)
    first_bad_seq: int | None = None
    transfers: int = 0
    accounts: int = 0

    def fail(self, text: str, seq: int | None = None) -> None:
        self.ok = False
        if seq is not None and self.first_bad_seq is None:
            self.first_bad_seq = seq
        if len(self.problems) < 50:
            self.problems.append(text)


@dataclass
class _Acct:
    id: int
    kind: str
    owner: str
    currency: str
    balance: int
    allow_negative: bool
    frozen: bool

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.owner}"


@dataclass
class _Tx:
    conn: AsyncConnection
    now: datetime
    seq: int
    head: str
    dirty: bool = False


# --------------------------------------------------------------------------------------------- helpers
def utc(dt: datetime) -> datetime:
    """Normalise DB datetimes: SQLite returns naive values (stored as UTC), PostgreSQL aware ones."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _ts(dt: datetime) -> str:
    return utc(dt).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_hash(
    *,
    seq: int,
    prev_hash: str,
    created_at: datetime,
    currency: str,
    debit: str,
    credit: str,
    amount: int,
    kind: str,
    memo: str,
    initiator: str,
    idem_key: str | None,
    request_hash: str | None,
    hold_id: int | None,
) -> str:
    """SHA-256 over a canonical JSON array of the row's content and the previous row's hash."""
    payload = [
        "xmppim-wallet-v1",
        seq,
        prev_hash,
        _ts(created_at),
        currency,
        debit,
        credit,
        amount,
        kind,
        memo,
        initiator,
        idem_key,
        request_hash,
        hold_id,
    ]
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(data).hexdigest()


def _request_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def _chain_message(seq: int, head: str) -> bytes:
    return f"xmppim-wallet-chain:v1:{seq}:{head}".encode()


def load_or_create_key(data_dir: str | Path) -> Ed25519PrivateKey:
    """The chain-signing key, created (mode 0600) on first use; processes starting at once (the server's
    workers, the CLI) all get the same complete key (:func:`xmppim.files.create_once`)."""

    def make() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    path = Path(data_dir) / KEY_FILE
    loaded = serialization.load_pem_private_key(create_once(path, make), password=None)
    if not isinstance(loaded, Ed25519PrivateKey):
        raise RuntimeError(f"{path} is not an Ed25519 private key")
    return loaded


def bare_user(jid: str) -> str:
    """A user's bare JID (normalised by slixmpp); raises InvalidJID when it is not ``local@domain``."""
    j = JID(jid)
    if not j.user:
        raise InvalidJID("a user JID needs a local part")
    return j.bare


# --------------------------------------------------------------------------------------------- ledger
class Ledger:
    """The wallet ledger over an async SQLAlchemy engine (SQLite via aiosqlite or PostgreSQL via asyncpg).

    ``user_exists`` is asked before coins go to a user (the core's account store provides it); ``None``
    means every syntactically valid JID counts as existing (CLI without a core).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        config: WalletConfig | None = None,
        *,
        user_exists: UserExists | None = None,
        data_dir: str | Path | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        clock: Callable[[], datetime] | None = None,
        batch_max: int = 64,
    ) -> None:
        if signing_key is None:
            if data_dir is None:
                raise ValueError("Ledger needs data_dir (for the chain-signing key) or signing_key")
            signing_key = load_or_create_key(data_dir)
        self.engine = engine
        self.config = config or WalletConfig()
        self._user_exists = user_exists
        self._key = signing_key
        self.public_key: Ed25519PublicKey = signing_key.public_key()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._sqlite = engine.dialect.name == "sqlite"
        self._local_lock = asyncio.Lock()
        self._ready = False
        self.batch_max = batch_max
        self._pending: list[tuple[Callable[[_Tx], Awaitable[Any]], asyncio.Future[Any]]] = []
        self._drainer: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ transactions
    def now(self) -> datetime:
        return utc(self._clock())

    @asynccontextmanager
    async def _begin_locked(self) -> AsyncIterator[AsyncConnection]:
        """A transaction that holds the database write lock from its first statement."""
        async with self.engine.connect() as conn:
            if self._sqlite:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("PRAGMA busy_timeout = 60000")
                # Money commits survive a power loss too (an fsync per commit), whatever the server's
                # [storage] sqlite_synchronous says for the rest; the pooled connection is put back as it was.
                before = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
                await conn.exec_driver_sql("PRAGMA synchronous = FULL")
                try:
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                    try:
                        yield conn
                    except BaseException:
                        await conn.exec_driver_sql("ROLLBACK")
                        raise
                    await conn.exec_driver_sql("COMMIT")
                finally:
                    await conn.exec_driver_sql(f"PRAGMA synchronous = {int(before or 2)}")
            else:
                async with conn.begin():
                    yield conn

    @asynccontextmanager
    async def _snapshot(self) -> AsyncIterator[AsyncConnection]:
        """One consistent read snapshot (REPEATABLE READ on PostgreSQL, a deferred read txn on SQLite)."""
        async with self.engine.connect() as conn:
            if self._sqlite:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("PRAGMA busy_timeout = 60000")
                await conn.exec_driver_sql("BEGIN")
                try:
                    yield conn
                finally:
                    await conn.exec_driver_sql("COMMIT")
            else:
                await conn.execution_options(isolation_level="REPEATABLE READ")
                async with conn.begin():
                    yield conn

    async def init(self) -> None:
        """Create the chain head row and the system accounts of every currency (idempotent)."""
        for attempt in range(5):
            try:
                async with self._local_lock, self._begin_locked() as conn:
                    now = self.now()
                    row = (
                        await conn.execute(select(chain.c.seq).where(chain.c.id == 1).with_for_update())
                    ).first()
                    if row is None:
                        sig = self._key.sign(_chain_message(0, GENESIS_HASH)).hex()
                        await conn.execute(
                            insert(chain).values(
                                id=1, seq=0, head_hash=GENESIS_HASH, signature=sig, updated_at=now
                            )
                        )
                    for cur in self.config.currencies:
                        for name in SYSTEM_ACCOUNTS:
                            await self._account(conn, "system", name, cur, create=True, now=now)
                self._ready = True
                return
            except IntegrityError:
                # Another process created the same rows at the same moment (PostgreSQL): try again.
                if attempt == 4:
                    raise
                await asyncio.sleep(0.05 * (attempt + 1))

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[_Tx]:
        if not self._ready:
            await self.init()
        async with self._local_lock, self._begin_locked() as conn:
            head = (
                await conn.execute(
                    select(chain.c.seq, chain.c.head_hash).where(chain.c.id == 1).with_for_update()
                )
            ).one()
            tx = _Tx(conn=conn, now=self.now(), seq=int(head.seq), head=str(head.head_hash))
            yield tx
            if tx.dirty:
                sig = self._key.sign(_chain_message(tx.seq, tx.head)).hex()
                await conn.execute(
                    update(chain)
                    .where(chain.c.id == 1)
                    .values(seq=tx.seq, head_hash=tx.head, signature=sig, updated_at=tx.now)
                )

    async def _submit(self, body: Callable[[_Tx], Awaitable[T]]) -> T:
        """Run ``body`` in the next write transaction (group commit).

        Requests that arrive while a transaction is running are queued and then run together in one
        transaction, each inside its own SAVEPOINT: a refused request rolls back only its own statements,
        the others commit together under one lock acquisition, one chain-head signature and one commit.
        The order inside a batch is arrival order; every request sees the effects of the ones before it
        (a repeated idempotency key in the same batch is a replay).  The caller's result is set only after
        the commit succeeded.
        """
        if not self._ready:
            await self.init()
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((body, fut))
        if self._drainer is None or self._drainer.done():
            self._drainer = asyncio.get_running_loop().create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        while self._pending:
            batch = self._pending[: self.batch_max]
            del self._pending[: len(batch)]
            try:
                await self._run_batch(batch)
            except BaseException as exc:  # the transaction as a whole failed: nobody's request committed
                for _, fut in batch:
                    if not fut.done():
                        if isinstance(exc, Exception):
                            fut.set_exception(exc)
                        else:
                            fut.cancel()
                if not isinstance(exc, Exception):
                    for _, fut in self._pending:
                        fut.cancel()
                    self._pending.clear()
                    raise

    async def _run_batch(self, batch: list[tuple[Callable[[_Tx], Awaitable[Any]], asyncio.Future[Any]]]) -> None:
        outcomes: list[tuple[asyncio.Future[Any], BaseException | None, Any]] = []
        live = [(body, fut) for body, fut in batch if not fut.done()]  # skip callers already cancelled
        if not live:
            return
        single = len(live) == 1
        async with self._write() as tx:
            for body, fut in live:
                if single:  # no savepoint needed: an error rolls back the whole (one-request) transaction
                    outcomes.append((fut, None, await body(tx)))
                    continue
                seq0, head0, dirty0 = tx.seq, tx.head, tx.dirty
                await tx.conn.exec_driver_sql("SAVEPOINT wallet_op")
                try:
                    result = await body(tx)
                except Exception as exc:
                    await tx.conn.exec_driver_sql("ROLLBACK TO SAVEPOINT wallet_op")
                    await tx.conn.exec_driver_sql("RELEASE SAVEPOINT wallet_op")
                    tx.seq, tx.head, tx.dirty = seq0, head0, dirty0
                    outcomes.append((fut, exc, None))
                else:
                    await tx.conn.exec_driver_sql("RELEASE SAVEPOINT wallet_op")
                    outcomes.append((fut, None, result))
        for fut, error, result in outcomes:  # committed: now tell the callers
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(result)

    # ------------------------------------------------------------------ accounts
    async def _account(
        self,
        conn: AsyncConnection,
        kind: str,
        owner: str,
        currency: str,
        *,
        create: bool,
        now: datetime | None = None,
    ) -> _Acct | None:
        cols = (
            accounts.c.id,
            accounts.c.kind,
            accounts.c.owner,
            accounts.c.currency,
            accounts.c.balance,
            accounts.c.allow_negative,
            accounts.c.frozen,
        )
        q = select(*cols).where(
            accounts.c.kind == kind, accounts.c.owner == owner, accounts.c.currency == currency
        )
        row = (await conn.execute(q)).first()
        if row is None:
            if not create:
                return None
            await conn.execute(
                insert(accounts).values(
                    kind=kind,
                    owner=owner,
                    currency=currency,
                    balance=0,
                    allow_negative=(kind == "system" and owner == "issuance"),
                    frozen=False,
                    created_at=now or self.now(),
                )
            )
            row = (await conn.execute(q)).one()
        return _Acct(
            id=int(row.id),
            kind=str(row.kind),
            owner=str(row.owner),
            currency=str(row.currency),
            balance=int(row.balance),
            allow_negative=bool(row.allow_negative),
            frozen=bool(row.frozen),
        )

    async def _system(self, tx: _Tx, name: str, currency: str) -> _Acct:
        acct = await self._account(tx.conn, "system", name, currency, create=True, now=tx.now)
        assert acct is not None
        return acct

    async def _labels(self, conn: AsyncConnection, ids: Sequence[int]) -> dict[int, str]:
        rows = await conn.execute(
            select(accounts.c.id, accounts.c.kind, accounts.c.owner).where(accounts.c.id.in_(list(ids)))
        )
        return {int(r.id): f"{r.kind}:{r.owner}" for r in rows}

    # ------------------------------------------------------------------ validation
    def _currency(self, currency: str | None) -> str:
        cur = currency or self.config.currency
        if cur not in self.config.currencies:
            raise InvalidRequest(f"unknown currency {cur!r}")
        return cur

    def _amount(self, amount: int) -> int:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise BadAmount("amounts are integers (minor units)")
        if amount <= 0:
            raise BadAmount("amount must be positive")
        if amount > self.config.max_transfer:
            raise BadAmount(f"amount exceeds the per-transfer maximum {self.config.max_transfer}")
        return amount

    @staticmethod
    def _text(memo: str, key: str | None) -> None:
        if len(memo) > MEMO_MAX:
            raise InvalidRequest(f"memo longer than {MEMO_MAX} characters")
        if key is not None and (not key or len(key) > KEY_MAX):
            raise InvalidRequest(f"idempotency key must be 1..{KEY_MAX} characters")

    async def _existing_user(self, jid: str) -> str:
        """Bare JID of a user who may receive coins, else ``unknown-recipient``."""
        try:
            bare = bare_user(jid)
        except InvalidJID as exc:
            raise UnknownRecipient(f"not a user JID: {jid!r}") from exc
        if self._user_exists is not None and not await self._user_exists(bare):
            raise UnknownRecipient(f"no such user {bare}")
        return bare

    @staticmethod
    def _user(jid: str) -> str:
        try:
            return bare_user(jid)
        except InvalidJID as exc:
            raise InvalidRequest(f"not a user JID: {jid!r}") from exc

    # ------------------------------------------------------------------ core move
    async def _replay(self, tx: _Tx, initiator: str, key: str | None, request_hash: str) -> Any | None:
        """The row of an earlier request with this key, or None; ``duplicate`` if the request differs."""
        if key is None:
            return None
        row = (
            await tx.conn.execute(
                select(transfers).where(transfers.c.initiator == initiator, transfers.c.idem_key == key)
            )
        ).first()
        if row is not None and row.request_hash != request_hash:
            raise Duplicate(f"idempotency key {key!r} was used for a different request")
        return row

    async def _move(
        self,
        tx: _Tx,
        debit: _Acct,
        credit: _Acct,
        amount: int,
        kind: str,
        *,
        memo: str = "",
        initiator: str,
        idem_key: str | None = None,
        request_hash: str | None = None,
        hold_id: int | None = None,
        check_credit_frozen: bool = True,
    ) -> Transfer:
        """Append one transfer: conditional debit, credit, hash-chained row.  Raises before any change
        that would break an invariant (the caller's transaction is rolled back on any error)."""
        assert debit.currency == credit.currency and debit.id != credit.id and amount > 0
        res = await tx.conn.execute(
            update(accounts)
            .where(
                accounts.c.id == debit.id,
                or_(accounts.c.allow_negative, accounts.c.balance >= amount),
            )
            .values(balance=accounts.c.balance - amount)
        )
        if res.rowcount != 1:
            raise InsufficientFunds(f"{debit.label} cannot pay {amount}")
        conds = [accounts.c.id == credit.id]
        if check_credit_frozen:
            conds.append(accounts.c.frozen.is_(False))
        res = await tx.conn.execute(
            update(accounts).where(and_(*conds)).values(balance=accounts.c.balance + amount)
        )
        if res.rowcount != 1:
            raise Frozen(f"{credit.label} is frozen")
        seq = tx.seq + 1
        h = row_hash(
            seq=seq,
            prev_hash=tx.head,
            created_at=tx.now,
            currency=debit.currency,
            debit=debit.label,
            credit=credit.label,
            amount=amount,
            kind=kind,
            memo=memo,
            initiator=initiator,
            idem_key=idem_key,
            request_hash=request_hash,
            hold_id=hold_id,
        )
        await tx.conn.execute(
            insert(transfers).values(
                seq=seq,
                currency=debit.currency,
                debit_account_id=debit.id,
                credit_account_id=credit.id,
                amount=amount,
                kind=kind,
                memo=memo,
                created_at=tx.now,
                initiator=initiator,
                idem_key=idem_key,
                request_hash=request_hash,
                hold_id=hold_id,
                prev_hash=tx.head,
                hash=h,
            )
        )
        tx.seq, tx.head, tx.dirty = seq, h, True
        debit.balance -= amount
        credit.balance += amount
        return Transfer(
            seq=seq,
            currency=debit.currency,
            debit=debit.label,
            credit=credit.label,
            amount=amount,
            kind=kind,
            memo=memo,
            created_at=tx.now,
            initiator=initiator,
            idem_key=idem_key,
            hold_id=hold_id,
            hash=h,
        )

    async def _transfer_from_row(self, conn: AsyncConnection, row: Any, replayed: bool) -> Transfer:
        labels = await self._labels(conn, [int(row.debit_account_id), int(row.credit_account_id)])
        return Transfer(
            seq=int(row.seq),
            currency=str(row.currency),
            debit=labels[int(row.debit_account_id)],
            credit=labels[int(row.credit_account_id)],
            amount=int(row.amount),
            kind=str(row.kind),
            memo=str(row.memo),
            created_at=utc(row.created_at),
            initiator=str(row.initiator),
            idem_key=row.idem_key,
            hold_id=None if row.hold_id is None else int(row.hold_id),
            hash=str(row.hash),
            replayed=replayed,
        )

    # ------------------------------------------------------------------ public operations
    async def mint(
        self,
        jid: str,
        amount: int,
        *,
        memo: str = "",
        idem_key: str | None = None,
        initiator: str = "admin",
        currency: str | None = None,
    ) -> Transfer:
        """Create coins for a user (top-up or admin grant): ``issuance`` -> user."""
        cur = self._currency(currency)
        self._amount(amount)
        self._text(memo, idem_key)
        user = await self._existing_user(jid)
        rh = _request_hash("mint", user, amount, cur, memo)

        async def body(tx: _Tx) -> Transfer:
            old = await self._replay(tx, initiator, idem_key, rh)
            if old is not None:
                return await self._transfer_from_row(tx.conn, old, True)
            acct = await self._account(tx.conn, "user", user, cur, create=True, now=tx.now)
            assert acct is not None
            if acct.frozen:
                raise Frozen(f"{user} is frozen")
            issuance = await self._system(tx, "issuance", cur)
            return await self._move(
                tx, issuance, acct, amount, "mint", memo=memo, initiator=initiator, idem_key=idem_key,
                request_hash=rh,
            )
        return await self._submit(body)

    async def transfer(
        self,
        sender: str,
        recipient: str,
        amount: int,
        *,
        memo: str = "",
        idem_key: str | None = None,
        currency: str | None = None,
    ) -> Transfer:
        """User-to-user send; the idempotency key is scoped to the sender."""
        cur = self._currency(currency)
        if cur not in self.config.transferable_currencies:
            raise InvalidRequest(f"{cur} cannot be sent to other users")
        self._amount(amount)
        self._text(memo, idem_key)
        src = self._user(sender)
        dst = await self._existing_user(recipient)
        if src == dst:
            raise InvalidRequest("cannot send coins to oneself")
        rh = _request_hash("transfer", dst, amount, cur, memo)

        async def body(tx: _Tx) -> Transfer:
            old = await self._replay(tx, src, idem_key, rh)
            if old is not None:
                return await self._transfer_from_row(tx.conn, old, True)
            a = await self._account(tx.conn, "user", src, cur, create=False)
            if a is None:
                raise InsufficientFunds(f"{src} has no {cur}")
            if a.frozen:
                raise Frozen(f"{src} is frozen")
            limit = self.config.daily_send_limit
            if limit > 0:
                day = tx.now.replace(hour=0, minute=0, second=0, microsecond=0)
                sent = (
                    await tx.conn.execute(
                        select(func.coalesce(func.sum(transfers.c.amount), 0)).where(
                            transfers.c.debit_account_id == a.id,
                            transfers.c.kind == "transfer",
                            transfers.c.created_at >= day,
                        )
                    )
                ).scalar_one()
                if int(sent) + amount > limit:
                    raise LimitExceeded(f"daily send limit {limit} reached ({sent} sent today)")
            b = await self._account(tx.conn, "user", dst, cur, create=True, now=tx.now)
            assert b is not None
            if b.frozen:
                raise Frozen(f"{dst} is frozen")
            return await self._move(
                tx, a, b, amount, "transfer", memo=memo, initiator=src, idem_key=idem_key, request_hash=rh
            )
        return await self._submit(body)

    async def charge(
        self,
        jid: str,
        amount: int,
        *,
        payee: str = "revenue",
        memo: str = "",
        idem_key: str | None = None,
        initiator: str | None = None,
        currency: str | None = None,
    ) -> Transfer:
        """Immediate purchase of the operator's own goods: user -> ``revenue`` (or ``fees``)."""
        cur = self._currency(currency)
        self._amount(amount)
        self._text(memo, idem_key)
        if payee not in PAYEES:
            raise InvalidRequest(f"payee must be one of {PAYEES}")
        user = self._user(jid)
        who = initiator or user
        rh = _request_hash("charge", user, payee, amount, cur, memo)

        async def body(tx: _Tx) -> Transfer:
            old = await self._replay(tx, who, idem_key, rh)
            if old is not None:
                return await self._transfer_from_row(tx.conn, old, True)
            a = await self._account(tx.conn, "user", user, cur, create=False)
            if a is None:
                raise InsufficientFunds(f"{user} has no {cur}")
            if a.frozen:
                raise Frozen(f"{user} is frozen")
            dst = await self._system(tx, payee, cur)
            return await self._move(
                tx, a, dst, amount, "charge", memo=memo, initiator=who, idem_key=idem_key, request_hash=rh
            )
        return await self._submit(body)

    async def hold(
        self,
        jid: str,
        amount: int,
        *,
        payee: str = "revenue",
        memo: str = "",
        idem_key: str | None = None,
        initiator: str | None = None,
        timeout_s: float | None = None,
        currency: str | None = None,
    ) -> Hold:
        """Phase one: reserve ``amount`` (user -> ``escrow``) until posted, voided or expired."""
        cur = self._currency(currency)
        self._amount(amount)
        self._text(memo, idem_key)
        if payee not in PAYEES:
            raise InvalidRequest(f"payee must be one of {PAYEES}")
        timeout = self.config.hold_timeout_s if timeout_s is None else timeout_s
        if timeout <= 0:
            raise InvalidRequest("hold timeout must be positive")
        user = self._user(jid)
        who = initiator or user
        rh = _request_hash("hold", user, payee, amount, cur, memo, timeout)

        async def body(tx: _Tx) -> Hold:
            old = await self._replay(tx, who, idem_key, rh)
            if old is not None:
                return await self._get_hold(tx.conn, int(old.hold_id), replayed=True)
            a = await self._account(tx.conn, "user", user, cur, create=False)
            if a is None:
                raise InsufficientFunds(f"{user} has no {cur}")
            if a.frozen:
                raise Frozen(f"{user} is frozen")
            escrow = await self._system(tx, "escrow", cur)
            dst = await self._system(tx, payee, cur)
            res = await tx.conn.execute(
                insert(holds)
                .values(
                    currency=cur,
                    debit_account_id=a.id,
                    credit_account_id=dst.id,
                    amount=amount,
                    captured=0,
                    status="pending",
                    initiator=who,
                    memo=memo,
                    created_at=tx.now,
                    expires_at=tx.now + timedelta(seconds=timeout),
                    closed_at=None,
                )
                .returning(holds.c.id)
            )
            hold_id = int(res.scalar_one())
            await self._move(
                tx, a, escrow, amount, "hold", memo=memo, initiator=who, idem_key=idem_key,
                request_hash=rh, hold_id=hold_id,
            )
            return await self._get_hold(tx.conn, hold_id)
        return await self._submit(body)

    async def _hold_row(self, tx: _Tx, hold_id: int) -> Any:
        row = (
            await tx.conn.execute(select(holds).where(holds.c.id == hold_id).with_for_update())
        ).first()
        if row is None:
            raise UnknownHold(f"no hold {hold_id}")
        return row

    async def _release(self, tx: _Tx, row: Any, kind: str, status: str, memo: str) -> None:
        """Return what is left of a pending hold to its payer and close it."""
        remaining = int(row.amount) - int(row.captured)
        if remaining > 0:
            escrow = await self._system(tx, "escrow", str(row.currency))
            payer = await self._account_by_id(tx.conn, int(row.debit_account_id))
            # The payer's own money goes back even if the account was frozen meanwhile.
            await self._move(
                tx, escrow, payer, remaining, kind, memo=memo, initiator=str(row.initiator),
                hold_id=int(row.id), check_credit_frozen=False,
            )
        await tx.conn.execute(
            update(holds).where(holds.c.id == row.id).values(status=status, closed_at=tx.now)
        )

    async def _account_by_id(self, conn: AsyncConnection, account_id: int) -> _Acct:
        row = (await conn.execute(select(accounts).where(accounts.c.id == account_id))).one()
        return _Acct(
            id=int(row.id),
            kind=str(row.kind),
            owner=str(row.owner),
            currency=str(row.currency),
            balance=int(row.balance),
            allow_negative=bool(row.allow_negative),
            frozen=bool(row.frozen),
        )

    async def post(
        self,
        hold_id: int,
        amount: int | None = None,
        *,
        final: bool = True,
        memo: str = "",
        idem_key: str | None = None,
    ) -> Transfer:
        """Phase two: pay ``amount`` (default: all that remains) of a pending hold to its payee.

        ``final=True`` closes the hold and releases the remainder to the payer; ``final=False`` keeps it
        pending for further posts (ad impressions in batches).  Pass ``idem_key`` (scoped to the hold's
        initiator) to make a batch safe to retry.  A hold past its deadline cannot be posted.
        """
        if amount is not None:
            self._amount(amount)
        self._text(memo, idem_key)

        async def body(tx: _Tx) -> Transfer:
            row = await self._hold_row(tx, hold_id)
            who = str(row.initiator)
            rh = _request_hash("post", hold_id, amount, final, memo)
            old = await self._replay(tx, who, idem_key, rh)
            if old is not None:
                return await self._transfer_from_row(tx.conn, old, True)
            if row.status != "pending":
                raise HoldClosed(f"hold {hold_id} is {row.status}")
            if utc(row.expires_at) <= tx.now:
                raise HoldClosed(f"hold {hold_id} expired")
            remaining = int(row.amount) - int(row.captured)
            amt = remaining if amount is None else amount
            if amt > remaining:
                raise BadAmount(f"hold {hold_id} has only {remaining} left")
            escrow = await self._system(tx, "escrow", str(row.currency))
            payee = await self._account_by_id(tx.conn, int(row.credit_account_id))
            t = await self._move(
                tx, escrow, payee, amt, "post", memo=memo, initiator=who, idem_key=idem_key,
                request_hash=rh, hold_id=hold_id,
            )
            captured = int(row.captured) + amt
            await tx.conn.execute(update(holds).where(holds.c.id == hold_id).values(captured=captured))
            if final or captured == int(row.amount):
                row = await self._hold_row(tx, hold_id)
                await self._release(tx, row, "release", "posted", memo)
            return t
        return await self._submit(body)

    async def void(self, hold_id: int, *, memo: str = "") -> Hold:
        """Cancel a pending hold: release what is left to the payer.  Voiding a voided/expired hold is a
        no-op; voiding a posted one is ``hold-closed``."""
        self._text(memo, None)

        async def body(tx: _Tx) -> Hold:
            row = await self._hold_row(tx, hold_id)
            if row.status in ("voided", "expired"):
                return await self._get_hold(tx.conn, hold_id)
            if row.status != "pending":
                raise HoldClosed(f"hold {hold_id} is {row.status}")
            await self._release(tx, row, "void", "voided", memo)
            return await self._get_hold(tx.conn, hold_id)
        return await self._submit(body)

    async def expire_holds(self, now: datetime | None = None, *, batch: int = 500) -> int:
        """Void every pending hold whose deadline passed (run periodically); returns how many."""
        count = 0
        async with self._write() as tx:
            cutoff = utc(now) if now is not None else tx.now
            rows = (
                await tx.conn.execute(
                    select(holds)
                    .where(holds.c.status == "pending", holds.c.expires_at <= cutoff)
                    .order_by(holds.c.id)
                    .limit(batch)
                )
            ).all()
            for row in rows:
                await self._release(tx, row, "expire", "expired", "hold expired")
                count += 1
        return count

    async def _get_hold(self, conn: AsyncConnection, hold_id: int, replayed: bool = False) -> Hold:
        row = (await conn.execute(select(holds).where(holds.c.id == hold_id))).first()
        if row is None:
            raise UnknownHold(f"no hold {hold_id}")
        labels = await self._labels(conn, [int(row.debit_account_id), int(row.credit_account_id)])
        return Hold(
            id=int(row.id),
            currency=str(row.currency),
            payer=labels[int(row.debit_account_id)].split(":", 1)[1],
            payee=labels[int(row.credit_account_id)],
            amount=int(row.amount),
            captured=int(row.captured),
            status=str(row.status),
            memo=str(row.memo),
            initiator=str(row.initiator),
            created_at=utc(row.created_at),
            expires_at=utc(row.expires_at),
            closed_at=None if row.closed_at is None else utc(row.closed_at),
            replayed=replayed,
        )

    async def get_hold(self, hold_id: int) -> Hold:
        async with self.engine.connect() as conn:
            return await self._get_hold(conn, hold_id)

    async def freeze_user(self, jid: str, frozen: bool = True) -> int:
        """Freeze (user deleted) or unfreeze a user's accounts; nothing is destroyed.  Returns how many
        accounts changed."""
        user = self._user(jid)
        async with self._write() as tx:
            res = await tx.conn.execute(
                update(accounts)
                .where(accounts.c.kind == "user", accounts.c.owner == user, accounts.c.frozen.is_(not frozen))
                .values(frozen=frozen)
            )
            return int(res.rowcount)

    # ------------------------------------------------------------------ reads
    async def balance(self, jid: str, currency: str | None = None) -> int:
        """The user's balance (0 without an account).  Held coins are not included: they sit in escrow."""
        cur = self._currency(currency)
        user = self._user(jid)
        async with self.engine.connect() as conn:
            v = (
                await conn.execute(
                    select(accounts.c.balance).where(
                        accounts.c.kind == "user", accounts.c.owner == user, accounts.c.currency == cur
                    )
                )
            ).scalar()
        return int(v or 0)

    async def system_balance(self, name: str, currency: str | None = None) -> int:
        cur = self._currency(currency)
        async with self.engine.connect() as conn:
            v = (
                await conn.execute(
                    select(accounts.c.balance).where(
                        accounts.c.kind == "system", accounts.c.owner == name, accounts.c.currency == cur
                    )
                )
            ).scalar()
        return int(v or 0)

    async def is_frozen(self, jid: str) -> bool:
        user = self._user(jid)
        async with self.engine.connect() as conn:
            v = (
                await conn.execute(
                    select(func.count())
                    .select_from(accounts)
                    .where(accounts.c.kind == "user", accounts.c.owner == user, accounts.c.frozen.is_(True))
                )
            ).scalar_one()
        return int(v) > 0

    async def history(
        self,
        jid: str,
        *,
        after_id: int | None = None,
        limit: int = 50,
        currency: str | None = None,
    ) -> list[HistoryEntry]:
        """The user's transfers in ledger order, paged: pass the last ``seq`` seen as ``after_id``."""
        user = self._user(jid)
        limit = max(1, min(limit, 1000))
        async with self.engine.connect() as conn:
            q = select(accounts.c.id).where(accounts.c.kind == "user", accounts.c.owner == user)
            if currency is not None:
                q = q.where(accounts.c.currency == self._currency(currency))
            ids = [int(r) for r in (await conn.execute(q)).scalars()]
            if not ids:
                return []
            tq = (
                select(transfers)
                .where(or_(transfers.c.debit_account_id.in_(ids), transfers.c.credit_account_id.in_(ids)))
                .order_by(transfers.c.seq)
                .limit(limit)
            )
            if after_id is not None:
                tq = tq.where(transfers.c.seq > after_id)
            rows = (await conn.execute(tq)).all()
            other = {int(r.debit_account_id) for r in rows} | {int(r.credit_account_id) for r in rows}
            labels = await self._labels(conn, sorted(other))
        out = []
        for r in rows:
            outgoing = int(r.debit_account_id) in ids
            cp = int(r.credit_account_id) if outgoing else int(r.debit_account_id)
            out.append(
                HistoryEntry(
                    seq=int(r.seq),
                    created_at=utc(r.created_at),
                    kind=str(r.kind),
                    currency=str(r.currency),
                    amount=-int(r.amount) if outgoing else int(r.amount),
                    counterparty=labels[cp],
                    memo=str(r.memo),
                )
            )
        return out

    async def export_csv(self, out: TextIO) -> int:
        """Write every transfer as CSV (audit export, kept >= 180 days by policy); returns the row count."""
        w = csv.writer(out)
        w.writerow(
            [
                "seq", "created_at", "kind", "currency", "debit", "credit", "amount", "memo", "initiator",
                "idem_key", "hold_id", "prev_hash", "hash",
            ]
        )
        n = 0
        async with self._snapshot() as conn:
            labels = await self._labels_all(conn)
            result = await conn.stream(select(transfers).order_by(transfers.c.seq))
            async for r in result:
                w.writerow(
                    [
                        r.seq, _ts(r.created_at), r.kind, r.currency, labels[int(r.debit_account_id)],
                        labels[int(r.credit_account_id)], r.amount, r.memo, r.initiator, r.idem_key or "",
                        "" if r.hold_id is None else r.hold_id, r.prev_hash, r.hash,
                    ]
                )
                n += 1
        return n

    async def _labels_all(self, conn: AsyncConnection) -> dict[int, str]:
        rows = await conn.execute(select(accounts.c.id, accounts.c.kind, accounts.c.owner))
        return {int(r.id): f"{r.kind}:{r.owner}" for r in rows}

    # ------------------------------------------------------------------ audit
    async def verify(self) -> VerifyReport:
        """Recompute the hash chain, check the head signature, zero-sum, non-negative balances, cached
        balances == replay, and escrow == open holds.  ``first_bad_seq`` is the first bad row."""
        rep = VerifyReport()
        async with self._snapshot() as conn:
            acct_rows = (await conn.execute(select(accounts))).all()
            acc = {int(r.id): r for r in acct_rows}
            rep.accounts = len(acc)
            computed: dict[int, int] = dict.fromkeys(acc, 0)
            posted: dict[int, int] = {}
            released: dict[int, int] = {}
            held: dict[int, int] = {}
            expect_seq, running = 1, GENESIS_HASH
            result = await conn.stream(select(transfers).order_by(transfers.c.seq))
            async for r in result:
                rep.transfers += 1
                seq = int(r.seq)
                if seq != expect_seq:
                    rep.fail(f"row {seq}: expected seq {expect_seq} (rows missing)", expect_seq)
                d, c = acc.get(int(r.debit_account_id)), acc.get(int(r.credit_account_id))
                if d is None or c is None:
                    rep.fail(f"row {seq}: unknown account", seq)
                    expect_seq, running = seq + 1, str(r.hash)
                    continue
                if r.prev_hash != running:
                    rep.fail(f"row {seq}: prev_hash does not match the previous row's hash", seq)
                h = row_hash(
                    seq=seq,
                    prev_hash=str(r.prev_hash),
                    created_at=r.created_at,
                    currency=str(r.currency),
                    debit=f"{d.kind}:{d.owner}",
                    credit=f"{c.kind}:{c.owner}",
                    amount=int(r.amount),
                    kind=str(r.kind),
                    memo=str(r.memo),
                    initiator=str(r.initiator),
                    idem_key=r.idem_key,
                    request_hash=r.request_hash,
                    hold_id=None if r.hold_id is None else int(r.hold_id),
                )
                if h != r.hash:
                    rep.fail(f"row {seq}: content does not match its hash (row altered)", seq)
                if int(r.amount) <= 0:
                    rep.fail(f"row {seq}: non-positive amount {r.amount}", seq)
                if not (d.currency == c.currency == r.currency):
                    rep.fail(f"row {seq}: currency mismatch", seq)
                computed[int(d.id)] -= int(r.amount)
                computed[int(c.id)] += int(r.amount)
                if r.hold_id is not None:
                    hid = int(r.hold_id)
                    bucket = {"hold": held, "post": posted}.get(str(r.kind), released)
                    bucket[hid] = bucket.get(hid, 0) + int(r.amount)
                expect_seq, running = seq + 1, h
            # Chain head and its signature.
            head = (await conn.execute(select(chain).where(chain.c.id == 1))).first()
            if head is None:
                if rep.transfers:
                    rep.fail("chain head row missing")
            else:
                if int(head.seq) != expect_seq - 1 or head.head_hash != running:
                    rep.fail(
                        f"chain head says seq {head.seq}, ledger ends at {expect_seq - 1} "
                        "(rows removed or added after the last signed write)",
                        min(int(head.seq), expect_seq - 1) + 1,
                    )
                try:
                    self.public_key.verify(
                        bytes.fromhex(str(head.signature)), _chain_message(int(head.seq), str(head.head_hash))
                    )
                except (InvalidSignature, ValueError):
                    rep.fail("chain head signature is invalid (head rewritten or wrong key)")
            # Balances.
            sums: dict[str, int] = {}
            stored: dict[str, int] = {}
            for aid, r in acc.items():
                label = f"{r.kind}:{r.owner}/{r.currency}"
                if int(r.balance) != computed[aid]:
                    rep.fail(f"account {label}: stored balance {r.balance} != ledger {computed[aid]}")
                if not r.allow_negative and (computed[aid] < 0 or int(r.balance) < 0):
                    rep.fail(f"account {label}: negative balance {computed[aid]}")
                sums[str(r.currency)] = sums.get(str(r.currency), 0) + computed[aid]
                stored[str(r.currency)] = stored.get(str(r.currency), 0) + int(r.balance)
            for cur in sums:
                if sums[cur] != 0 or stored[cur] != 0:
                    rep.fail(f"currency {cur}: balances sum to {stored[cur]} (ledger {sums[cur]}), not 0")
            # Holds against escrow.
            open_by_cur: dict[str, int] = {}
            for h_row in (await conn.execute(select(holds))).all():
                hid = int(h_row.id)
                amount, captured = int(h_row.amount), int(h_row.captured)
                if held.get(hid, 0) != amount:
                    rep.fail(f"hold {hid}: reserved {held.get(hid, 0)} != amount {amount}")
                if posted.get(hid, 0) != captured:
                    rep.fail(f"hold {hid}: posted {posted.get(hid, 0)} != captured {captured}")
                if h_row.status == "pending":
                    if released.get(hid, 0) != 0:
                        rep.fail(f"hold {hid}: pending but released {released[hid]}")
                    cur = str(h_row.currency)
                    open_by_cur[cur] = open_by_cur.get(cur, 0) + amount - captured
                elif posted.get(hid, 0) + released.get(hid, 0) != amount:
                    rep.fail(f"hold {hid}: {h_row.status} but posted+released != amount")
            for aid, r in acc.items():
                if r.kind == "system" and r.owner == "escrow":
                    if computed[aid] != open_by_cur.get(str(r.currency), 0):
                        rep.fail(
                            f"escrow/{r.currency}: balance {computed[aid]} != open holds "
                            f"{open_by_cur.get(str(r.currency), 0)}"
                        )
        return rep


__all__ = [
    "CONDITIONS",
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
    "load_or_create_key",
    "row_hash",
]
