"""Helpers for the settlement tests: money transactions posted through the real engine, a
business calendar whose days are seconds long, and the worked example's ledger.

Money transactions are posted as the conversion and donation services post their money legs:
one transaction, legs on each participant's settlement account (shard 0 unless told), summing
to zero. Points legs are left out: settlement reads the money ledger only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.ledger.engine import Leg, PostedTransaction, TransactionSpec, post_transaction
from exchange.ledger.models import Account
from exchange.ledger.parties import PartnerInfo
from exchange.settings import Settings
from settlement.views import InstructionView, ObligationView, PositionView

SETTLED = """
    SELECT r.batch_id, p.id AS posting_id, p.transaction_id, p.account_id, p.amount,
           p.created_at
    FROM settlement_range r
    JOIN posting p ON p.account_id = r.account_id
        AND p.seq > COALESCE(r.after_seq, 0) AND p.seq <= r.through_seq
    JOIN ledger_transaction t ON t.id = p.transaction_id
    WHERE t.kind <> 'settle'
"""
"""Every posting a batch took, by its batch: the postings in the batch's ranges, less the
``settle`` payouts among them. Spelled out in SQL here, apart from the code under test."""


async def cutoff_now() -> dt.datetime:
    """A cutoff strictly after everything posted so far and before anything posted next."""
    await asyncio.sleep(0.002)
    now = utcnow()
    await asyncio.sleep(0.002)
    return now


async def settlement_account(
    session: AsyncSession, partner: PartnerInfo, currency: str = "EUR", shard: int = 0
) -> int:
    account_id = await session.scalar(
        select(Account.id).where(
            Account.partner_id == partner.id,
            Account.kind == "settlement",
            Account.ledger == currency,
            Account.shard == shard,
        )
    )
    assert account_id is not None
    return account_id


async def post_money(
    session: AsyncSession,
    kind: str,
    initiator: PartnerInfo,
    legs: Sequence[tuple[PartnerInfo, int]],
    *,
    points: int = 0,
    shard: int = 0,
) -> PostedTransaction:
    """One money transaction, in the caller's database transaction."""
    return await post_transaction(
        session,
        TransactionSpec(
            kind=kind,
            partner_id=initiator.id,
            points=points,
            legs=[
                Leg(await settlement_account(session, partner, shard=shard), amount)
                for partner, amount in legs
                if amount
            ],
        ),
    )


async def convert(
    sessions: async_sessionmaker[AsyncSession],
    source: PartnerInfo,
    destination: PartnerInfo,
    operator: PartnerInfo,
    out_micros: int,
    fee_micros: int,
    *,
    points: int = 1,
) -> uuid.UUID:
    """A conversion's money: the source owes the destination ``out`` and the operator ``fee``."""
    async with sessions() as session, session.begin():
        posted = await post_money(
            session,
            "convert",
            source,
            [
                (source, -(out_micros + fee_micros)),
                (destination, out_micros),
                (operator, fee_micros),
            ],
            points=points,
        )
    return posted.id


async def donate(
    sessions: async_sessionmaker[AsyncSession],
    brand: PartnerInfo,
    charity: PartnerInfo,
    micros: int,
    *,
    points: int,
) -> uuid.UUID:
    """A donation's money: the brand owes the charity ``points * value``."""
    async with sessions() as session, session.begin():
        posted = await post_money(
            session, "donate", brand, [(brand, -micros), (charity, micros)], points=points
        )
    return posted.id


@dataclass(frozen=True)
class SteppedCalendar:
    """Business day ``first_date + k`` ends at ``first_cutoff + k * step``: days of any length,
    so that tests can cross cutoffs in seconds."""

    first_date: dt.date
    first_cutoff: dt.datetime
    step: dt.timedelta

    def cutoff_at(self, business_date: dt.date) -> dt.datetime:
        return self.first_cutoff + (business_date - self.first_date).days * self.step

    def business_date_of(self, instant: dt.datetime) -> dt.date:
        k = math.floor((instant - self.first_cutoff) / self.step) + 1
        return self.first_date + dt.timedelta(days=k)


def postgres_url_of(settings: Settings) -> str:
    assert settings.database_url is not None
    return settings.database_url


# --- the worked example ------------------------------------------------------------------------
#
# Five participants: brands SKY (Sky Air), HTL (Hotel Co) and RET (Shop), the charity AID and the
# operator OP. Point values in micros: SKY 12 345, HTL 8 333, RET 1 001. Money in micros; one
# cent is 10 000 micros.
#
# Day 1 (business date 2026-11-20):
#   T1 10 000 SKY -> HTL at 1000:750, 100 bps: fee 100 SKY, out 7 425 HTL
#        SKY owes HTL 7 425 * 8 333 = 61 872 525; SKY owes OP 100 * 12 345 = 1 234 500
#   T2 5 000 HTL -> RET at 1:2, 50 bps: fee 25 HTL, out 9 950 RET
#        HTL owes RET 9 950 * 1 001 = 9 959 950; HTL owes OP 25 * 8 333 = 208 325
#   T3 2 000 SKY donated to AID: SKY owes AID 2 000 * 12 345 = 24 690 000
#   T4 777 RET donated to AID: RET owes AID 777 * 1 001 = 777 777
#   T5 3 000 RET -> SKY at 10:1, no fee: out 300 SKY; RET owes SKY 300 * 12 345 = 3 703 500
#   T6 half of T3 reversed (1 000 SKY): AID owes SKY back 12 345 000
#
# Gross matrix (debtor -> creditor):
#   SKY->HTL 61 872 525   SKY->OP 1 234 500   SKY->AID 24 690 000
#   HTL->RET  9 959 950   HTL->OP   208 325
#   RET->AID    777 777   RET->SKY 3 703 500
#   AID->SKY 12 345 000
#
#           owed         owing        net           floor(/10 000)  remainder
#   SKY   16 048 500   87 797 025   -71 748 525     -7 175          1 475
#   HTL   61 872 525   10 168 275    51 704 250      5 170          4 250
#   RET    9 959 950    4 481 277     5 478 673        547          8 673
#   AID   25 467 777   12 345 000    13 122 777      1 312          2 777
#   OP     1 442 825            0     1 442 825        144          2 825
# Floors sum to -2, so the two largest remainders (RET 8 673, HTL 4 250) round up:
#   payouts SKY -7 175, HTL 5 171, RET 548, AID 1 312, OP 144 (cents; sum 0)
#   carries SKY 1 475, HTL -5 750, RET -1 327, AID 2 777, OP 2 825 (sum 0)
# Instructions (largest payer to largest payee): SKY pays HTL 5 171, AID 1 312, RET 548, OP 144.
#
# Day 2 (2026-11-21):
#   T7 HTL -> SKY: HTL owes SKY 2 000 005 and OP 16 666
#   T8 120 HTL donated to AID: HTL owes AID 120 * 8 333 = 999 960
#           net          + carry in   = total        floor   remainder
#   SKY    2 000 005       1 475        2 001 480      200     1 480
#   HTL   -3 016 631      -5 750       -3 022 381     -303     7 619
#   RET            0      -1 327           -1 327       -1     8 673
#   AID      999 960       2 777        1 002 737      100     2 737
#   OP        16 666       2 825           19 491        1     9 491
# Floors sum to -3: OP, RET and HTL round up:
#   payouts SKY 200, HTL -302, RET 0, AID 100, OP 2
#   carries SKY 1 480, HTL -2 381, RET -1 327, AID 2 737, OP -509
# Instructions: HTL pays SKY 200, AID 100, OP 2.


@dataclass(frozen=True)
class Cast:
    sky: PartnerInfo
    htl: PartnerInfo
    ret: PartnerInfo
    aid: PartnerInfo
    op: PartnerInfo

    def name_of(self, partner_id: uuid.UUID) -> str:
        for name in ("sky", "htl", "ret", "aid", "op"):
            if getattr(self, name).id == partner_id:
                return name.upper()
        raise KeyError(partner_id)


DAY1 = dt.date(2026, 11, 20)
DAY2 = dt.date(2026, 11, 21)

DAY1_MATRIX = {
    ("SKY", "HTL"): 61_872_525,
    ("SKY", "OP"): 1_234_500,
    ("SKY", "AID"): 24_690_000,
    ("HTL", "RET"): 9_959_950,
    ("HTL", "OP"): 208_325,
    ("RET", "AID"): 777_777,
    ("RET", "SKY"): 3_703_500,
    ("AID", "SKY"): 12_345_000,
}
# name: (gross owed, gross owing, net, carry in, payout, carry out)
DAY1_POSITIONS = {
    "SKY": (16_048_500, 87_797_025, -71_748_525, 0, -7_175, 1_475),
    "HTL": (61_872_525, 10_168_275, 51_704_250, 0, 5_171, -5_750),
    "RET": (9_959_950, 4_481_277, 5_478_673, 0, 548, -1_327),
    "AID": (25_467_777, 12_345_000, 13_122_777, 0, 1_312, 2_777),
    "OP": (1_442_825, 0, 1_442_825, 0, 144, 2_825),
}
DAY1_INSTRUCTIONS = [
    (1, "SKY", "HTL", 5_171),
    (2, "SKY", "AID", 1_312),
    (3, "SKY", "RET", 548),
    (4, "SKY", "OP", 144),
]
DAY2_MATRIX = {
    ("HTL", "SKY"): 2_000_005,
    ("HTL", "OP"): 16_666,
    ("HTL", "AID"): 999_960,
}
DAY2_POSITIONS = {
    "SKY": (2_000_005, 0, 2_000_005, 1_475, 200, 1_480),
    "HTL": (0, 3_016_631, -3_016_631, -5_750, -302, -2_381),
    "RET": (0, 0, 0, -1_327, 0, -1_327),
    "AID": (999_960, 0, 999_960, 2_777, 100, 2_737),
    "OP": (16_666, 0, 16_666, 2_825, 2, -509),
}
DAY2_INSTRUCTIONS = [(1, "HTL", "SKY", 200), (2, "HTL", "AID", 100), (3, "HTL", "OP", 2)]


async def post_day1(sessions: async_sessionmaker[AsyncSession], cast: Cast) -> int:
    """T1 to T6; returns how many money postings they made."""
    from exchange.ledger.reversal import reverse

    await convert(sessions, cast.sky, cast.htl, cast.op, 61_872_525, 1_234_500, points=10_000)
    await convert(sessions, cast.htl, cast.ret, cast.op, 9_959_950, 208_325, points=5_000)
    t3 = await donate(sessions, cast.sky, cast.aid, 24_690_000, points=2_000)
    await donate(sessions, cast.ret, cast.aid, 777_777, points=777)
    await convert(sessions, cast.ret, cast.sky, cast.op, 3_703_500, 0, points=3_000)
    async with sessions() as session, session.begin():
        await reverse(session, cast.sky, t3, 1_000)
    return 3 + 3 + 2 + 2 + 2 + 2


async def post_day2(sessions: async_sessionmaker[AsyncSession], cast: Cast) -> int:
    """T7 and T8; returns how many money postings they made."""
    await convert(sessions, cast.htl, cast.sky, cast.op, 2_000_005, 16_666, points=240)
    await donate(sessions, cast.htl, cast.aid, 999_960, points=120)
    return 3 + 2


async def make_cast(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    sky: PartnerInfo,
    htl: PartnerInfo,
) -> Cast:
    from tests.conftest import make_partner

    return Cast(
        sky=sky,
        htl=htl,
        ret=await make_partner(sessions, settings, "brand", "Shop", "RET"),
        aid=await make_partner(sessions, settings, "charity", "Aid"),
        op=await make_partner(sessions, settings, "operator", "Operator"),
    )


def named_matrix(cast: Cast, obligations: Sequence[ObligationView]) -> dict[tuple[str, str], int]:
    return {
        (cast.name_of(o.debtor_id), cast.name_of(o.creditor_id)): o.amount_micros
        for o in obligations
    }


def named_positions(cast: Cast, positions: Sequence[PositionView]) -> dict[str, tuple[int, ...]]:
    return {
        cast.name_of(p.partner_id): (
            p.gross_owed_micros,
            p.gross_owing_micros,
            p.net_micros,
            p.carry_in_micros,
            p.payout_minor,
            p.carry_out_micros,
        )
        for p in positions
    }


def named_instructions(
    cast: Cast, instructions: Sequence[InstructionView]
) -> list[tuple[int, str, str, int]]:
    return [
        (i.seq, cast.name_of(i.payer_id), cast.name_of(i.payee_id), i.amount_minor)
        for i in instructions
    ]
