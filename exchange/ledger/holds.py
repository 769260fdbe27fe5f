"""Holds: points reserved on a member's account, then captured (redeemed) or voided. Held
points stay in the balance but leave what is available; a hold that runs out is released by
``exchange.ledger.expiry``."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.errors import HoldExceeded, HoldNotActive, HoldNotFound, InvalidInput
from exchange.ledger.engine import Leg, PostedTransaction, TransactionSpec, post_transaction
from exchange.ledger.members import MemberAccount, get_member
from exchange.ledger.models import Account, Hold, Member
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.validation import check_points

account_t = cast(Table, Account.__table__)
member_t = cast(Table, Member.__table__)
hold_t = cast(Table, Hold.__table__)


@dataclass(frozen=True)
class HoldView:
    id: uuid.UUID
    member_ref: str
    points: int
    captured: int
    status: str
    expires_at: dt.datetime
    created_at: dt.datetime
    transaction_id: uuid.UUID
    """The transaction that placed, captured or voided it (the latest)."""


async def place_hold(
    session: AsyncSession,
    partner: PartnerInfo,
    member_ref: str,
    points: int,
    *,
    expires_in: int,
    reference: str | None = None,
    idempotency_key: str | None = None,
) -> HoldView:
    """Reserve points: they stay in the balance but leave ``available`` until captured or voided."""
    check_points(points)
    if type(expires_in) is not int or not 1 <= expires_in <= 90 * 24 * 3600:
        raise InvalidInput("expires_in must be 1 second to 90 days", field="expires_in")
    member = await get_member(session, partner, member_ref)
    hold_id = uuid7()
    posted = await post_transaction(
        session,
        TransactionSpec(
            kind="hold",
            partner_id=partner.id,
            points=points,
            reference=reference,
            idempotency_key=idempotency_key,
            hold_id=hold_id,
            held_changes={member.account_id: points},
            member_refs={member.account_id: member_ref},
        ),
    )
    expires_at = posted.created_at + dt.timedelta(seconds=expires_in)
    await session.execute(
        insert(hold_t).values(
            id=hold_id,
            partner_id=partner.id,
            account_id=member.account_id,
            points=points,
            captured=0,
            status="active",
            transaction_id=posted.id,
            expires_at=expires_at,
            created_at=posted.created_at,
        )
    )
    return HoldView(
        hold_id, member_ref, points, 0, "active", expires_at, posted.created_at, posted.id
    )


async def _locked_active_hold(
    session: AsyncSession, partner: PartnerInfo, hold_id: uuid.UUID
) -> tuple[Any, MemberAccount]:
    row = (
        await session.execute(
            select(hold_t, member_t.c.member_ref)
            .join(account_t, account_t.c.id == hold_t.c.account_id)
            .join(member_t, member_t.c.id == account_t.c.member_id)
            .where(hold_t.c.id == hold_id, hold_t.c.partner_id == partner.id)
            .with_for_update(of=hold_t)
        )
    ).first()
    if row is None:
        raise HoldNotFound(f"no hold {hold_id}", hold_id=str(hold_id))
    if row.status != "active" or row.expires_at <= utcnow():
        status = "expired" if row.status == "active" else row.status
        raise HoldNotActive(f"hold {hold_id} is {status}", hold_id=str(hold_id), status=status)
    member = await get_member(session, partner, row.member_ref)
    return row, member


async def capture_hold(
    session: AsyncSession,
    partner: PartnerInfo,
    hold_id: uuid.UUID,
    points: int | None = None,
    *,
    idempotency_key: str | None = None,
) -> tuple[HoldView, PostedTransaction]:
    """Redeem up to the held points and close the hold; what is not captured is released."""
    hold, member = await _locked_active_hold(session, partner, hold_id)
    captured = hold.points if points is None else check_points(points)
    if captured > hold.points:
        raise HoldExceeded(held=hold.points, requested=captured)
    posted = await post_transaction(
        session,
        TransactionSpec(
            kind="capture",
            partner_id=partner.id,
            points=captured,
            idempotency_key=idempotency_key,
            hold_id=hold_id,
            legs=(Leg(member.account_id, -captured), Leg(member.issuance_account_id, captured)),
            held_changes={member.account_id: -hold.points},
            member_refs={member.account_id: member.member_ref},
        ),
    )
    await session.execute(
        update(hold_t)
        .where(hold_t.c.id == hold_id)
        .values(status="captured", captured=captured, closed_at=posted.created_at)
    )
    view = HoldView(
        hold_id, member.member_ref, hold.points, captured, "captured",
        hold.expires_at, hold.created_at, posted.id,
    )  # fmt: skip
    return view, posted


async def void_hold(
    session: AsyncSession,
    partner: PartnerInfo,
    hold_id: uuid.UUID,
    *,
    idempotency_key: str | None = None,
) -> HoldView:
    """Release a hold without redeeming anything."""
    hold, member = await _locked_active_hold(session, partner, hold_id)
    posted = await post_transaction(
        session,
        TransactionSpec(
            kind="void",
            partner_id=partner.id,
            points=hold.points,
            idempotency_key=idempotency_key,
            hold_id=hold_id,
            held_changes={member.account_id: -hold.points},
        ),
    )
    await session.execute(
        update(hold_t)
        .where(hold_t.c.id == hold_id)
        .values(status="voided", closed_at=posted.created_at)
    )
    return HoldView(
        hold_id, member.member_ref, hold.points, 0, "voided",
        hold.expires_at, hold.created_at, posted.id,
    )  # fmt: skip
