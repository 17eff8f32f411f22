"""``xmppim wallet ...`` commands (a contract used by outside tools: names and output stay as they are).

* ``wallet balance JID [--currency C]`` prints the integer balance and nothing else.
* ``wallet mint JID AMOUNT [--memo TEXT] [--key IDEMPOTENCY_KEY] [--currency C]`` prints
  ``minted AMOUNT CURRENCY to JID (transfer SEQ)`` (``replayed`` instead of ``minted`` when the key was
  used before for the same request).
* ``wallet history JID [--after SEQ] [--limit N] [--currency C]`` prints one tab-separated line per transfer:
  ``seq  created_at(ISO, UTC)  kind  signed-amount  currency  counterparty  memo``.
* ``wallet export [--output FILE]`` writes every transfer as CSV (header line first).
* ``wallet verify`` prints ``OK ...`` and exits 0 only when the hash chain, its signature, zero-sum,
  non-negative balances and escrow all hold; otherwise prints ``FAIL first bad row: SEQ`` and the problems
  and exits 1.

Errors print ``error: CONDITION: text`` on stderr and exit 1.  The lead's ``xmppim`` CLI calls
:func:`add_wallet_commands` on its sub-parsers and :func:`run` with its engine and data_dir; ``python -m
plugins.wallet.cli --db URL --data-dir DIR wallet ...`` runs the same commands standalone.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TextIO

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from .ledger import Ledger, UserExists, WalletConfig, WalletError
from .tables import metadata


def add_wallet_commands(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``wallet`` and its sub-commands; the chosen one is in ``args.wallet_command``."""
    wallet = subparsers.add_parser("wallet", help="coin ledger: balance, mint, history, export, verify")
    sub = wallet.add_subparsers(dest="wallet_command", required=True)
    p = sub.add_parser("balance", help="print a user's balance (integer minor units)")
    p.add_argument("jid")
    p.add_argument("--currency", default=None)
    p = sub.add_parser("mint", help="create coins for a user (issuance -> user)")
    p.add_argument("jid")
    p.add_argument("amount", type=int)
    p.add_argument("--memo", default="")
    p.add_argument("--key", default=None, help="idempotency key (initiator 'admin')")
    p.add_argument("--currency", default=None)
    p = sub.add_parser("history", help="a user's transfers, oldest first")
    p.add_argument("jid")
    p.add_argument("--after", type=int, default=None, help="only transfers after this seq (paging)")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--currency", default=None)
    p = sub.add_parser("export", help="all transfers as CSV")
    p.add_argument("--output", default=None, help="file to write (default: stdout)")
    sub.add_parser("verify", help="check hash chain, signature and invariants; exit 0 only if all hold")


async def cmd_balance(ledger: Ledger, jid: str, currency: str | None = None) -> int:
    print(await ledger.balance(jid, currency))
    return 0


async def cmd_mint(
    ledger: Ledger, jid: str, amount: int, memo: str = "", key: str | None = None, currency: str | None = None
) -> int:
    t = await ledger.mint(jid, amount, memo=memo, idem_key=key, currency=currency)
    verb = "replayed" if t.replayed else "minted"
    print(f"{verb} {t.amount} {t.currency} to {t.credit.split(':', 1)[1]} (transfer {t.seq})")
    return 0


async def cmd_history(
    ledger: Ledger, jid: str, after: int | None = None, limit: int = 100, currency: str | None = None
) -> int:
    for e in await ledger.history(jid, after_id=after, limit=limit, currency=currency):
        memo = e.memo.replace("\t", " ").replace("\n", " ")
        print(
            f"{e.seq}\t{e.created_at.isoformat()}\t{e.kind}\t{e.amount:+d}\t{e.currency}\t{e.counterparty}\t{memo}"
        )
    return 0


def _open_output(path: str) -> TextIO:
    # Blocking open of a local file before the export starts (not on a hot path).
    return open(path, "w", newline="", encoding="utf-8")


async def cmd_export(ledger: Ledger, output: str | None = None) -> int:
    if output is None:
        await ledger.export_csv(sys.stdout)
    else:
        with _open_output(output) as fh:
            n = await ledger.export_csv(fh)
        print(f"exported {n} transfers to {output}", file=sys.stderr)
    return 0


async def cmd_verify(ledger: Ledger) -> int:
    rep = await ledger.verify()
    if rep.ok:
        print(f"OK {rep.transfers} transfers, {rep.accounts} accounts")
        return 0
    first = rep.first_bad_seq if rep.first_bad_seq is not None else "-"
    print(f"FAIL first bad row: {first}")
    for p in rep.problems:
        print(f"  {p}")
    return 1


async def run(
    args: argparse.Namespace,
    engine: AsyncEngine,
    data_dir: str | Path,
    *,
    config: WalletConfig | None = None,
    user_exists: UserExists | None = None,
) -> int:
    """Run the parsed ``wallet`` command; returns the exit status."""
    ledger = Ledger(engine, config, user_exists=user_exists, data_dir=data_dir)
    cmd = args.wallet_command
    try:
        if cmd == "balance":
            return await cmd_balance(ledger, args.jid, args.currency)
        if cmd == "mint":
            return await cmd_mint(ledger, args.jid, args.amount, args.memo, args.key, args.currency)
        if cmd == "history":
            return await cmd_history(ledger, args.jid, args.after, args.limit, args.currency)
        if cmd == "export":
            return await cmd_export(ledger, args.output)
        if cmd == "verify":
            return await cmd_verify(ledger)
    except WalletError as exc:
        print(f"error: {exc.condition}: {exc}", file=sys.stderr)
        return 1
    print(f"error: unknown wallet command {cmd!r}", file=sys.stderr)
    return 2


async def _main(argv: list[str] | None) -> int:
    parser = argparse.ArgumentParser(prog="python -m plugins.wallet.cli")
    parser.add_argument("--db", required=True, help="SQLAlchemy async URL")
    parser.add_argument("--data-dir", required=True, help="where the chain-signing key lives")
    parser.add_argument("--create-tables", action="store_true", help="create missing wallet tables first")
    add_wallet_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    engine = create_async_engine(args.db)
    try:
        if args.create_tables:
            async with engine.begin() as conn:
                await conn.run_sync(metadata.create_all)
        return await run(args, engine, args.data_dir)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    return asyncio.run(_main(argv))


if __name__ == "__main__":
    sys.exit(main())
