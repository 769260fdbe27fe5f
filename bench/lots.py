"""Lots' benchmark, on a scratch PostgreSQL database (``exchange_bench_lots_<pid>``, dropped after).

    .venv/bin/python -m bench.lots [--members 50] [--lots 1000] [--redemptions 2000]
                                   [--expire 1000000] [--lots-per-member 10]

1. Redemptions: ``--members`` members hold one lot each and as many hold ``--lots`` lots each
   (credited through the engine's batch path, a month apart in expiry); then ``--redemptions``
   single redemptions of 1 point, each its own database transaction through the one engine,
   alternate between the two groups. Prints each group's mean time per redemption and their
   ratio (target: within 1.2x).
2. Expiry: ``--expire`` due lots, ``--lots-per-member`` per member, written by set-based SQL
   (members, accounts whose balance is their lots' sum, the lots: no postings behind them, which
   the run does not read), then one expiry run. Prints its time and lots per second.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import time
from dataclasses import replace

from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.pg import drop_database, recreate_database, scratch_name
from exchange.base import utcnow
from exchange.db import create_engine, session_maker
from exchange.ledger.engine import post_transaction, post_transactions
from exchange.ledger.lot_expiry import expire_lots
from exchange.ledger.members import MemberAccount, enrol_member
from exchange.ledger.models import Account
from exchange.ledger.operations import issue_spec, redeem_spec
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.policies import set_policy
from exchange.migrate import upgrade_async
from exchange.settings import get_settings
from partners.service import create_partner

Sessions = async_sessionmaker[AsyncSession]


async def _brand(sessions: Sessions, currency: str) -> PartnerInfo:
    async with sessions() as s, s.begin():
        return await create_partner(
            s, kind="brand", name=f"Brand {currency}", currency=currency,
            settlement_currency="EUR", shards=8,
        )  # fmt: skip


async def _members(
    sessions: Sessions, brand: PartnerInfo, prefix: str, count: int
) -> list[MemberAccount]:
    async with sessions() as s, s.begin():
        return [(await enrol_member(s, brand, f"{prefix}{n}"))[0] for n in range(count)]


async def _credit(
    sessions: Sessions, brand: PartnerInfo, members: list[MemberAccount], lots: int, points: int
) -> None:
    """``lots`` lots of ``points`` for each member, in batches through the engine; the policy
    moves on between rounds so that the lots expire in several orders."""
    for round_ in range(lots):
        if round_ % 100 == 0:
            async with sessions() as s, s.begin():
                await set_policy(s, brand.id, "months", 1 + (round_ // 100) % 24)
        specs = [issue_spec(brand, member, points) for member in members]
        async with sessions() as s, s.begin():
            await post_transactions(s, specs)


async def _redeem_each(
    sessions: Sessions, brand: PartnerInfo, groups: list[list[MemberAccount]], count: int
) -> list[float]:
    spent = [0.0] * len(groups)
    for n in range(count):
        group = groups[n % len(groups)]
        member = group[(n // len(groups)) % len(group)]
        started = time.perf_counter()
        async with sessions() as s, s.begin():
            await post_transaction(s, redeem_spec(brand, member, 1))
        spent[n % len(groups)] += time.perf_counter() - started
    return [total / (count / len(groups)) for total in spent]


async def redemptions(sessions: Sessions, members: int, lots: int, count: int) -> None:
    brand = await _brand(sessions, "RDM")
    few = await _members(sessions, brand, "one-", members)
    many = await _members(sessions, brand, "many-", members)
    started = time.perf_counter()
    await _credit(sessions, brand, few, 1, 10 * lots)
    await _credit(sessions, brand, many, lots, 10)
    took = time.perf_counter() - started
    print(f"credited {members} x 1 and {members} x {lots} lots in {took:.1f} s")
    async with sessions() as s, s.begin():
        await s.execute(text("ANALYZE lot"))
    await _redeem_each(sessions, brand, [few, many], count // 10)  # warm up
    one, thousand = await _redeem_each(sessions, brand, [few, many], count)
    print(
        f"redemption, members with 1 lot: {one * 1000:.3f} ms; with {lots} lots:"
        f" {thousand * 1000:.3f} ms; ratio {thousand / one:.2f} (target <= 1.2)"
    )


_WORLD = """
WITH members AS (
    INSERT INTO member (id, partner_id, member_ref, created_at)
    SELECT gen_random_uuid(), :brand, 'exp-' || n, now() FROM generate_series(1, :members) AS n
    RETURNING id
), accounts AS (
    INSERT INTO account (ledger, kind, partner_id, member_id, shard, balance, held, seq,
                         head_hash, created_at)
    SELECT :currency, 'member', :brand, id, 0, 10 * :per_member, 0, 0, :genesis, now()
    FROM members
    RETURNING id
)
INSERT INTO lot (id, account_id, transaction_id, points, remaining, expires_at, noticed,
                 created_at)
SELECT gen_random_uuid(), accounts.id, gen_random_uuid(), 10, 10,
       CAST(:expires_at AS timestamptz) - make_interval(secs => k), false, now()
FROM accounts CROSS JOIN generate_series(1, :per_member) AS k
"""


async def expiry(sessions: Sessions, lots: int, per_member: int) -> None:
    brand = await _brand(sessions, "EXP")
    members = lots // per_member
    started = time.perf_counter()
    async with sessions() as s, s.begin():
        await s.execute(
            text(_WORLD),
            {
                "brand": brand.id, "currency": "EXP", "members": members,
                "per_member": per_member, "genesis": bytes(32),
                "expires_at": utcnow() - dt.timedelta(days=1),
            },
        )  # fmt: skip
        await s.execute(text("ANALYZE lot"))
        await s.execute(text("ANALYZE account"))
    took = time.perf_counter() - started
    print(f"wrote {members * per_member} due lots of {members} members in {took:.1f} s")
    started = time.perf_counter()
    totals = await expire_lots(sessions, utcnow())
    elapsed = time.perf_counter() - started
    async with sessions() as s:
        breakage = await s.scalar(
            select(Account.balance).where(
                Account.partner_id == brand.id, Account.kind == "breakage"
            )
        )
    assert totals.points == breakage == 10 * members * per_member, (totals, breakage)
    print(
        f"expiry run: {members * per_member} lots of {totals.members} members, {totals.points}"
        f" points, in {elapsed:.1f} s ({members * per_member / elapsed:,.0f} lots/s)"
    )


async def main(args: argparse.Namespace) -> None:
    name = scratch_name("lots")
    url = await recreate_database(name)
    try:
        settings = replace(get_settings(), database_url=url, auto_migrate=False)
        await upgrade_async(settings)
        engine = create_engine(settings)
        try:
            sessions = session_maker(engine)
            if args.redemptions:
                await redemptions(sessions, args.members, args.lots, args.redemptions)
            if args.expire:
                await expiry(sessions, args.expire, args.lots_per_member)
        finally:
            await engine.dispose()
    finally:
        await drop_database(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=50)
    parser.add_argument("--lots", type=int, default=1000)
    parser.add_argument("--redemptions", type=int, default=2000)
    parser.add_argument("--expire", type=int, default=1_000_000)
    parser.add_argument("--lots-per-member", type=int, default=10)
    asyncio.run(main(parser.parse_args()))
