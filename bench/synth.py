"""A synthetic but fully valid ledger, written straight into PostgreSQL with COPY.

The benchmarks of settlement and verify need millions of postings; posting them through the API
would take longer than the benchmark itself. So this writes what the engine would have written:
real partners and accounts (through the services), then money-ledger transactions shaped like
conversions (the source brand owes the destination brand and the operator), each posting chained,
hashed and balanced exactly as ``exchange.ledger.engine`` does, and the account heads to match.
``litestar ledger verify`` passes on the result, which the verify benchmark checks."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from dataclasses import dataclass, replace

import asyncpg
import uuid_utils

from exchange.db import create_engine
from exchange.ledger.engine import GENESIS_HASH, posting_hash
from exchange.migrate import upgrade_async
from exchange.settings import get_settings
from partners.service import PartnerInfo, create_partner


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
    """Write about ``postings`` money postings created during ``day`` (UTC)."""
    brand_list, charity, operator = await create_partners(url, brands, shards)
    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    rng = random.Random(seed)
    try:
        rows = await conn.fetch(
            "SELECT id, partner_id, shard FROM account WHERE kind = 'settlement' ORDER BY id"
        )
        accounts: dict[tuple[uuid.UUID, int], int] = {
            (r["partner_id"], r["shard"]): r["id"] for r in rows
        }
        heads: dict[int, tuple[int, int, bytes]] = {r["id"]: (0, 0, GENESIS_HASH) for r in rows}
        start = dt.datetime.combine(day, dt.time(0, 0), tzinfo=dt.UTC)
        span_us = 24 * 3600 * 1_000_000 - 1
        brand_ids = [b.id for b in brand_list]
        transactions: list[tuple] = []
        lines: list[tuple] = []
        written = 0
        count_tx = 0
        await conn.execute("SET session_replication_role = replica")  # bulk load: skip triggers

        async def flush() -> None:
            nonlocal transactions, lines
            if transactions:
                await conn.copy_records_to_table(
                    "ledger_transaction",
                    records=transactions,
                    columns=["id", "kind", "partner_id", "points", "created_at"],
                )
            if lines:
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
                        "created_at",
                    ],
                )
            transactions, lines = [], []

        offsets = sorted(rng.randrange(span_us) for _ in range(postings // 3 + 1))
        for offset in offsets:
            if written >= postings:
                break
            source, target = rng.sample(brand_ids, 2)
            shard = rng.randrange(shards)
            out_micros = rng.randrange(1_000, 50_000_000)
            fee_micros = rng.randrange(0, 500_000)
            created = start + dt.timedelta(microseconds=offset)
            tx_id = uuid.UUID(bytes=uuid_utils.uuid7().bytes)
            legs = [
                (accounts[(source, shard)], -(out_micros + fee_micros)),
                (accounts[(target, shard)], out_micros),
            ]
            if fee_micros:
                legs.append((accounts[(operator.id, shard)], fee_micros))
            transactions.append((tx_id, "convert", source, 1, created))
            for account_id, amount in legs:
                balance, seq, head = heads[account_id]
                balance += amount
                seq += 1
                digest = posting_hash(account_id, seq, tx_id, amount, balance, head)
                lines.append(
                    (tx_id, account_id, "EUR", seq, amount, balance, head, digest, created)
                )
                heads[account_id] = (balance, seq, digest)
            written += len(legs)
            count_tx += 1
            if len(lines) >= chunk:
                await flush()
        await flush()
        await conn.executemany(
            "UPDATE account SET balance = $2, seq = $3, head_hash = $4 WHERE id = $1",
            [(account_id, b, s, h) for account_id, (b, s, h) in heads.items() if s],
        )
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return SynthLedger(url, brand_list, charity, operator, written, count_tx)
