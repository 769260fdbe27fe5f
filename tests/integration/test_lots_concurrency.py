"""On PostgreSQL: an expiry run racing redemptions and conversions of the same members leaves
exact balances and no point both redeemed and expired; two processes expiring at one cutoff
expire each lot once."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.conversions.service import post_conversion
from exchange.errors import DomainError
from exchange.ledger.lot_expiry import expire_lots
from exchange.ledger.members import enrol_member
from exchange.ledger.models import Account, LedgerTransaction
from exchange.ledger.operations import issue, redeem
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.policies import add_months, set_policy
from exchange.ledger.reads import member_balance
from exchange.ledger.verify import verify_ledger
from exchange.pricing import service as rates
from exchange.settings import Settings
from tests.conftest import make_partner

pytestmark = pytest.mark.postgres_only

Sessions = async_sessionmaker[AsyncSession]
ROOT = Path(__file__).resolve().parents[2]
MEMBERS = 40


async def _world(sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo) -> None:
    """Each member: 100 SKY that expire in a month, then 100 that never do."""
    async with sessions() as s, s.begin():
        await rates.set_point_value(s, "SKY", 12_000)
        await rates.set_point_value(s, "HTL", 8_000)
        await rates.set_rate(s, "SKY", "HTL", from_points=1, to_points=1, fee_bps=0)
        await set_policy(s, sky.id, "months", 1)
        for n in range(MEMBERS):
            await enrol_member(s, sky, f"m{n}")
            await enrol_member(s, htl, f"m{n}")
            await issue(s, sky, f"m{n}", 100)
    async with sessions() as s, s.begin():
        await set_policy(s, sky.id, "never", None)
    async with sessions() as s, s.begin():
        for n in range(MEMBERS):
            await issue(s, sky, f"m{n}", 100)


async def _expired_of(sessions: Sessions, sky: PartnerInfo) -> int:
    async with sessions() as s:
        return int(
            await s.scalar(
                select(func.coalesce(func.sum(LedgerTransaction.points), 0)).where(
                    LedgerTransaction.kind == "expire", LedgerTransaction.partner_id == sky.id
                )
            )
            or 0
        )


async def test_expiry_racing_redemptions_and_conversions(
    sessions: Sessions, settings: Settings, sky: PartnerInfo, htl: PartnerInfo
) -> None:
    await make_partner(sessions, settings, "operator", "Coalition")
    await _world(sessions, sky, htl)
    cutoff = add_months(utcnow(), 2)

    async def spend(n: int) -> int:
        try:
            async with sessions() as s, s.begin():
                if n % 2:
                    await redeem(s, sky, f"m{n}", 60)
                else:
                    await post_conversion(s, sky, f"m{n}", "HTL", f"m{n}", 60)
            return 60
        except DomainError:
            return 0

    results: list[Any] = await asyncio.gather(
        expire_lots(sessions, cutoff, chunk=7), *(spend(n) for n in range(MEMBERS))
    )
    spent = sum(results[1:])
    expired = await _expired_of(sessions, sky)
    async with sessions() as s:
        balances = [(await member_balance(s, sky, f"m{n}")).balance for n in range(MEMBERS)]
        report = await verify_ledger(s)
    assert report.ok, report.faults
    # Each member ends with its 100 never-expiring points less what it spent beyond its due
    # 100: whichever came first, the expiring lot is taken once (by the spend or the run).
    assert spent == 60 * MEMBERS
    assert sum(balances) + expired + spent == 200 * MEMBERS
    # Spent first: the 60 came out of the due lot and the run expired the 40 left (100 left).
    # Expired first: the run took the whole due 100 and the 60 came out of the rest (40 left).
    assert all(balance in (100, 40) for balance in balances), balances
    assert expired == sum(100 if balance == 40 else 40 for balance in balances)


async def test_two_processes_at_one_cutoff_expire_once(
    sessions: Sessions, settings: Settings, sky: PartnerInfo, htl: PartnerInfo, tmp_path: Path
) -> None:
    await make_partner(sessions, settings, "operator", "Coalition")
    await _world(sessions, sky, htl)
    cutoff = add_months(utcnow(), 2)
    assert settings.database_url is not None
    env = {
        **os.environ,
        "EXCHANGE_DATABASE_URL": settings.database_url,
        "EXCHANGE_DATA_DIR": str(tmp_path),
        "EXCHANGE_AUTO_MIGRATE": "0",
        "EXCHANGE_SCHEDULER": "0",
    }
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.integration.lots_worker",
            cutoff.isoformat(),
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = [await worker.communicate() for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0]
    totals = [tuple(map(int, out.decode().split())) for out, _ in outputs]
    assert sum(members for members, _ in totals) == MEMBERS
    assert sum(points for _, points in totals) == 100 * MEMBERS
    async with sessions() as s:
        breakage = await s.scalar(
            select(Account.balance).where(Account.partner_id == sky.id, Account.kind == "breakage")
        )
        report = await verify_ledger(s)
    assert breakage == 100 * MEMBERS
    assert report.ok, report.faults
