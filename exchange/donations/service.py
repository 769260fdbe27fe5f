"""Donations of a member's points to a charity, posted through the one engine.

Every function works inside the caller's database transaction and never commits. A donation's
``points`` is the member's ``P``, so :func:`exchange.ledger.reversal.reverse` reverses it, money
legs included.

Donation of ``P`` points of brand A to charity C

    ledger A      member A  -P            A issuance  +P
    money         A settlement  -P * value(A)   C settlement  +P * value(A)

The settlement accounts are sharded by member (:mod:`exchange.pricing.accounts`).
"""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.schemas import CharityOut
from exchange.conversions.arithmetic import money_micros
from exchange.donations.receipts import DonationReceipt
from exchange.errors import BelowCharityMinimum, NotACharity, PartnerNotFound
from exchange.ledger import members as ledger
from exchange.ledger.engine import Leg, TransactionSpec, post_transaction
from exchange.ledger.members import MemberAccount
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.validation import check_points
from exchange.pricing.accounts import settlement_accounts
from exchange.pricing.service import moment_of, value_in_force
from partners.service import charity_codes, find_charity_by_code, get_partner, list_partners


async def charities(session: AsyncSession) -> list[CharityOut]:
    """The charities members can donate to, with their codes and minimum donations."""
    codes = await charity_codes(session)
    return [
        CharityOut(
            id=p.id, name=p.name, min_donation_points=p.min_donation_points, code=codes.get(p.id)
        )
        for p in await list_partners(session)
        if p.kind == "charity"
    ]


async def _find(session: AsyncSession, charity: uuid.UUID | str) -> PartnerInfo:
    """The partner ``charity`` names: its id, or a charity's code."""
    if isinstance(charity, uuid.UUID):
        return await get_partner(session, charity)
    try:
        return await get_partner(session, uuid.UUID(charity))
    except ValueError:
        found = await find_charity_by_code(session, charity)
        if found is None:
            raise PartnerNotFound(f"no charity {charity}") from None
        return found


async def _charity(session: AsyncSession, charity_id: uuid.UUID | str, points: int) -> PartnerInfo:
    """The charity (by id or code), if it is one and takes a donation of ``points``."""
    try:
        charity = await _find(session, charity_id)
    except (ValueError, TypeError, AttributeError, PartnerNotFound) as exc:
        raise NotACharity(f"{charity_id} is not a charity", charity=str(charity_id)) from exc
    if charity.kind != "charity":
        raise NotACharity(f"{charity_id} is not a charity", charity=str(charity_id))
    if charity.min_donation_points is not None and points < charity.min_donation_points:
        raise BelowCharityMinimum(
            f"{charity.name} accepts donations of {charity.min_donation_points} points or more",
            points=points,
            min_donation_points=charity.min_donation_points,
        )
    return charity


async def _legs(
    session: AsyncSession,
    caller: PartnerInfo,
    member: MemberAccount,
    charity: PartnerInfo,
    points: int,
    amount: int,
) -> tuple[tuple[Leg, ...], str]:
    """The donation's legs and the settlement currency its money legs are in."""
    settlement = await settlement_accounts(
        session,
        {
            caller.id: member.account_id % caller.shards,
            charity.id: member.account_id % charity.shards,
        },
    )
    legs = (
        Leg(member.account_id, -points),
        Leg(member.issuance_account_id, points),
        Leg(settlement[caller.id][0], -amount),
        Leg(settlement[charity.id][0], amount),
    )
    return legs, settlement[caller.id][1]


async def post_donation(
    session: AsyncSession,
    caller: PartnerInfo,
    member_ref: str,
    charity_id: uuid.UUID | str,
    points: int,
    *,
    reference: str | None = None,
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
) -> DonationReceipt:
    """Donate ``points`` of the caller's member to a charity: the points go back to the brand,
    and the brand owes the charity their value at ``at`` (default now)."""
    check_points(points)
    member = await ledger.get_member(session, caller, member_ref)
    charity = await _charity(session, charity_id, points)
    value = await value_in_force(session, caller, moment_of(at))
    amount = money_micros(points, value.micros_per_point)
    legs, currency = await _legs(session, caller, member, charity, points, amount)
    assert caller.currency is not None  # get_member refused a partner that is not a brand
    posted = await post_transaction(
        session,
        TransactionSpec(
            kind="donate",
            partner_id=caller.id,
            points=points,
            reference=reference,
            idempotency_key=idempotency_key,
            legs=legs,
            member_refs={member.account_id: member_ref},
            details={
                "member_ref": member_ref,
                "charity_id": str(charity.id),
                "charity_name": charity.name,
                "points": points,
                "value_micros_per_point": value.micros_per_point,
                "amount_micros": amount,
                "currency": currency,
            },
        ),
    )
    return DonationReceipt(
        id=posted.id,
        member_ref=member_ref,
        points_currency=caller.currency,
        charity_id=charity.id,
        charity_name=charity.name,
        points=points,
        amount_micros=amount,
        currency=currency,
        created_at=posted.created_at,
    )
