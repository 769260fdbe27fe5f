"""A synthetic but fully valid ledger, written straight into PostgreSQL with COPY.

The benchmarks of settlement and verify need millions of postings; posting them through the API
would take longer than the benchmark itself. So this writes what the engine would have written:
real partners and accounts (through the services), then money-ledger transactions shaped like
conversions (the source brand owes the destination brand and the operator), each posting chained,
hashed and balanced exactly as ``exchange.ledger.engine`` does, and the account heads to match.
``litestar ledger verify`` passes on the result, which the verify benchmark checks."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import uuid
from dataclasses import dataclass, replace
from typing import Any

import asyncpg
import uuid_utils

from exchange.db import create_engine
from exchange.ledger.chain import GENESIS_HASH, posting_hash
from exchange.ledger.parties import PartnerInfo
from exchange.migrate import upgrade_async
from exchange.settings import get_settings
from partners.service import create_partner


@dataclass
class SynthLedger:
    url: str
    brands: list[PartnerInfo]
    charity: PartnerInfo
    operator: PartnerInfo
    postings: int
    transactions: int


async def create_partners(
    url: str, brands: int, shards: int
) -> tuple[list[PartnerInfo], PartnerInfo, PartnerInfo]:
    settings = replace(get_settings(), database_url=url, auto_migrate=False)
    await upgrade_async(settings)
    engine = create_engine(settings)
    from sqlalchemy.ext.asyncio import AsyncSession

    try:
        async with AsyncSession(engine) as session, session.begin():
            made = [
                await create_partner(
                    session,
                    kind="brand",
                    name=f"Brand {i}",
                    currency=f"B{i:03d}",
                    settlement_currency="EUR",
                    shards=shards,
                )
                for i in range(brands)
            ]
            charity = await create_partner(
                session,
                kind="charity",
                name="Charity",
                currency=None,
                settlement_currency="EUR",
                shards=shards,
            )
            operator = await create_partner(
                session,
                kind="operator",
                name="Operator",
                currency=None,
                settlement_currency="EUR",
                shards=shards,
            )
    finally:
        await engine.dispose()
    return made, charity, operator


class _DayWriter:
    """Makes the day's rows in chunks, in posting order: money transactions shaped like
    conversions, each posting chained and hashed as the engine would."""

    def __init__(
        self,
        accounts: dict[tuple[uuid.UUID, int], int],
        brand_ids: list[uuid.UUID],
        operator_id: uuid.UUID,
        shards: int,
        day: dt.date,
        postings: int,
        seed: int,
    ) -> None:
        self.accounts = accounts
        self.brand_ids = brand_ids
        self.operator_id = operator_id
        self.shards = shards
        self.rng = random.Random(seed)
        self.heads: dict[int, tuple[int, int, bytes]] = {
            a: (0, 0, GENESIS_HASH) for a in accounts.values()
        }
        self.start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=dt.UTC)
        span_us = 24 * 3600 * 1_000_000 - 1
        self.offsets = sorted(self.rng.randrange(span_us) for _ in range(postings // 3 + 1))
        self.position = 0
        self.postings = postings
        self.written = 0
        self.transactions = 0

    def next_chunk(self, size: int) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """The next transactions and postings (about ``size`` postings); empty at the end."""
        rng, accounts, heads = self.rng, self.accounts, self.heads
        transactions: list[tuple[Any, ...]] = []
        lines: list[tuple[Any, ...]] = []
        while len(lines) < size and self.written < self.postings:
            if self.position >= len(self.offsets):
                break
            offset = self.offsets[self.position]
            self.position += 1
            source, target = rng.sample(self.brand_ids, 2)
            shard = rng.randrange(self.shards)
            out_micros = rng.randrange(1_000, 50_000_000)
            fee_micros = rng.randrange(0, 500_000)
            created = self.start + dt.timedelta(microseconds=offset)
            tx_id = uuid.UUID(bytes=uuid_utils.uuid7().bytes)
            # The source brand alone owes: the other legs name its account (as the engine does).
            debited = accounts[(source, shard)]
            legs = [
                (debited, -(out_micros + fee_micros), debited),
                (accounts[(target, shard)], out_micros, debited),
            ]
            if fee_micros:
                legs.append((accounts[(self.operator_id, shard)], fee_micros, debited))
            transactions.append((tx_id, "convert", source, 1, created))
            for account_id, amount, counterparty in legs:
                balance, seq, head = heads[account_id]
                balance += amount
                seq += 1
                digest = posting_hash(account_id, seq, tx_id, amount, balance, head, counterparty)
                lines.append(
                    (tx_id, account_id, "EUR", seq, amount, balance, head, digest, counterparty,
                     created)
                )  # fmt: skip
                heads[account_id] = (balance, seq, digest)
            self.written += len(legs)
            self.transactions += 1
        return transactions, lines


async def synthesize_money_day(
    url: str,
    *,
    postings: int,
    day: dt.date,
    brands: int = 20,
    shards: int = 8,
    seed: int = 7,
    chunk: int = 200_000,
) -> SynthLedger:
    """Write about ``postings`` money postings created during ``day`` (UTC).

    The next chunk is made in a thread while the server takes the last one (COPY, and the
    indexes and checks that come with it), so both cores work."""
    brand_list, charity, operator = await create_partners(url, brands, shards)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        rows = await conn.fetch(
            "SELECT id, partner_id, shard FROM account WHERE kind = 'settlement' ORDER BY id"
        )
        accounts: dict[tuple[uuid.UUID, int], int] = {
            (r["partner_id"], r["shard"]): r["id"] for r in rows
        }
        writer = _DayWriter(
            accounts, [b.id for b in brand_list], operator.id, shards, day, postings, seed
        )
        await conn.execute("SET session_replication_role = replica")  # bulk load: skip triggers

        async def copy(transactions: list[tuple[Any, ...]], lines: list[tuple[Any, ...]]) -> None:
            await conn.copy_records_to_table(
                "ledger_transaction",
                records=transactions,
                columns=["id", "kind", "partner_id", "points", "created_at"],
            )
            await conn.copy_records_to_table(
                "posting",
                records=lines,
                columns=[
                    "transaction_id",
                    "account_id",
                    "ledger",
                    "seq",
                    "amount",
                    "balance_after",
                    "prev_hash",
                    "hash",
                    "counterparty_account_id",
                    "created_at",
                ],
            )

        pending: asyncio.Task[None] | None = None
        while True:
            transactions, lines = await asyncio.to_thread(writer.next_chunk, chunk)
            if pending is not None:
                await pending
            if not lines:
                break
            pending = asyncio.create_task(copy(transactions, lines))
        await conn.executemany(
            "UPDATE account SET balance = $2, seq = $3, head_hash = $4 WHERE id = $1",
            [(account_id, b, s, h) for account_id, (b, s, h) in writer.heads.items() if s],
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return SynthLedger(url, brand_list, charity, operator, writer.written, writer.transactions)
