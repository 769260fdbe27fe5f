"""Worked examples of lots and expiry: which lot each debit takes from, what an expiry run takes
into breakage, and that a second run takes nothing.

Expiries are set by the policy in force when the points are credited; the tests change the
policy between credits (each version effective at once) to give one member lots that expire in
an order other than the order they were credited in."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.conversions.service import post_conversion
from exchange.ledger.holds import place_hold
from exchange.ledger.lot_expiry import expire_lots
from exchange.ledger.lot_models import Lot, LotConsumption
from exchange.ledger.members import enrol_member
from exchange.ledger.models import Account, LedgerTransaction
from exchange.ledger.operations import issue, redeem
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.policies import NEVER, add_months, quarter_end, set_policy
from exchange.ledger.reads import member_balance
from exchange.ledger.verify import verify_ledger
from exchange.outbox import OutboxEvent
from exchange.pricing import service as rates
from exchange.settings import Settings
from tests.conftest import make_partner

Sessions = async_sessionmaker[AsyncSession]


async def _credit_under(
    sessions: Sessions, brand: PartnerInfo, ref: str, points: int, kind: str, period: int | None
) -> Any:
    async with sessions() as s, s.begin():
        await set_policy(s, brand.id, kind, period)
    async with sessions() as s, s.begin():
        return await issue(s, brand, ref, points)


async def _lots(sessions: Sessions, brand: PartnerInfo, ref: str) -> list[Any]:
    async with sessions() as s:
        account = (await member_balance(s, brand, ref)).account_id
        return list(
            (
                await s.execute(
                    select(Lot.__table__).where(Lot.account_id == account).order_by(Lot.id)
                )
            ).all()
        )


async def _verified(sessions: Sessions) -> None:
    async with sessions() as s:
        report = await verify_ledger(s)
    assert report.ok, report.faults


async def test_three_lots_one_redemption_takes_the_two_that_expire_first(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    async with sessions() as s, s.begin():
        await enrol_member(s, sky, "alice")
    a = await _credit_under(sessions, sky, "alice", 100, "months", 1)
    b = await _credit_under(sessions, sky, "alice", 200, "months", 3)
    c = await _credit_under(sessions, sky, "alice", 300, "months", 2)
    lots = await _lots(sessions, sky, "alice")
    assert [(lot.transaction_id, lot.points) for lot in lots] == [
        (a.id, 100),
        (b.id, 200),
        (c.id, 300),
    ]
    assert [lot.expires_at for lot in lots] == [
        add_months(a.created_at, 1), add_months(b.created_at, 3), add_months(c.created_at, 2)
    ]  # fmt: skip

    async with sessions() as s, s.begin():
        redeemed = await redeem(s, sky, "alice", 250)

    # A (1 month) gives all its 100, C (2 months) 150 of its 300; B (3 months) is untouched.
    lots = await _lots(sessions, sky, "alice")
    assert [lot.remaining for lot in lots] == [0, 200, 150]
    async with sessions() as s:
        taken = (
            await s.execute(
                select(LotConsumption.lot_id, LotConsumption.points).where(
                    LotConsumption.transaction_id == redeemed.id
                )
            )
        ).all()
        balance = await member_balance(s, sky, "alice")
    assert sorted(taken, key=lambda row: row.points) == [(lots[0].id, 100), (lots[2].id, 150)]
    assert (balance.balance, balance.next_expiry_at, balance.next_expiry_points) == (
        350, lots[2].expires_at, 150
    )  # fmt: skip
    await _verified(sessions)


async def test_conversion_consumes_the_oldest_lots_and_opens_one_under_the_destination_policy(
    sessions: Sessions, settings: Settings, sky: PartnerInfo, htl: PartnerInfo
) -> None:
    await make_partner(sessions, settings, "operator", "Coalition")
    async with sessions() as s, s.begin():
        await rates.set_point_value(s, "SKY", 12_000)
        await rates.set_point_value(s, "HTL", 8_000)
        await rates.set_rate(s, "SKY", "HTL", from_points=1_000, to_points=750, fee_bps=100)
        await enrol_member(s, sky, "alice")
        await enrol_member(s, htl, "alice-h")
        await set_policy(s, htl.id, "quarters", 4)
    await _credit_under(sessions, sky, "alice", 3_000, "months", 12)
    await _credit_under(sessions, sky, "alice", 4_000, "months", 6)
    async with sessions() as s, s.begin():
        converted = await post_conversion(s, sky, "alice", "HTL", "alice-h", 5_000)

    # The 6-month lot goes first (all 4 000), then 1 000 of the 12-month one.
    assert [lot.remaining for lot in await _lots(sessions, sky, "alice")] == [2_000, 0]
    (opened,) = await _lots(sessions, htl, "alice-h")
    # fee ceil(5 000 * 1%) = 50; out floor(4 950 * 750 / 1 000) = 3 712
    assert (opened.points, opened.remaining) == (3_712, 3_712)
    assert opened.transaction_id == converted.transaction_id
    assert opened.expires_at == quarter_end(converted.created_at, 4)
    await _verified(sessions)


async def _breakage(sessions: Sessions, brand: PartnerInfo) -> int:
    async with sessions() as s:
        return int(
            await s.scalar(
                select(Account.balance).where(
                    Account.partner_id == brand.id, Account.kind == "breakage"
                )
            )
            or 0
        )


async def test_expiry_run_takes_exactly_the_due_lots_into_breakage_once(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    async with sessions() as s, s.begin():
        await enrol_member(s, sky, "alice")
        await enrol_member(s, sky, "bob")
        await enrol_member(s, sky, "carol")
    await _credit_under(sessions, sky, "alice", 100, "months", 1)
    await _credit_under(sessions, sky, "bob", 70, "months", 1)
    await _credit_under(sessions, sky, "alice", 40, "months", 6)
    await _credit_under(sessions, sky, "carol", 500, "never", None)
    async with sessions() as s, s.begin():
        # Bob holds 30 of his 70: an expiry takes only what is available.
        await place_hold(s, sky, "bob", 30, expires_in=90 * 24 * 3600)
    cutoff = add_months(utcnow(), 2)

    first = await expire_lots(sessions, cutoff, notice_days=0)
    assert (first.members, first.points) == (2, 100 + 40)
    async with sessions() as s:
        balances = [
            (await member_balance(s, sky, ref)).balance for ref in ("alice", "bob", "carol")
        ]
        expired = (
            await s.execute(
                select(LedgerTransaction.points).where(LedgerTransaction.kind == "expire")
            )
        ).all()
        events = (
            await s.execute(
                select(OutboxEvent.payload).where(OutboxEvent.event_type == "points.expired")
            )
        ).all()
    assert balances == [40, 30, 500]
    assert sorted(points for (points,) in expired) == [40, 100]
    assert len(events) == 2
    assert await _breakage(sessions, sky) == 140
    assert [lot.remaining for lot in await _lots(sessions, sky, "carol")] == [500]
    assert (await _lots(sessions, sky, "carol"))[0].expires_at == NEVER

    second = await expire_lots(sessions, cutoff, notice_days=0)
    assert (second.members, second.points) == (0, 0)
    assert await _breakage(sessions, sky) == 140
    await _verified(sessions)


async def test_notice_is_sent_once_per_lot(sessions: Sessions, sky: PartnerInfo) -> None:
    async with sessions() as s, s.begin():
        await enrol_member(s, sky, "alice")
    await _credit_under(sessions, sky, "alice", 100, "months", 1)
    soon = utcnow() + dt.timedelta(days=10)
    first = await expire_lots(sessions, soon, notice_days=30)
    second = await expire_lots(sessions, soon, notice_days=30)
    assert (first.members, first.notices, second.notices) == (0, 1, 0)


async def test_activity_earn_extends_every_open_lot(sessions: Sessions, sky: PartnerInfo) -> None:
    async with sessions() as s, s.begin():
        await enrol_member(s, sky, "alice")
    await _credit_under(sessions, sky, "alice", 100, "months", 1)
    second = await _credit_under(sessions, sky, "alice", 50, "activity", 12)
    lots = await _lots(sessions, sky, "alice")
    assert [lot.expires_at for lot in lots] == [add_months(second.created_at, 12)] * 2
    await _verified(sessions)
