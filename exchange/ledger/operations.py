"""A brand's operations on its members' points: issue (earn), redeem (burn) and transfer, and the
``earn`` of a purchase, whose points a feature computed (``exchange.purchases``).

Each comes in two halves: ``*_spec`` builds the engine's spec from members already looked up (no
I/O), so that a batch (``exchange.ledger.batch``) can look up all its members in one query
(:func:`exchange.ledger.members.find_members`) and post all its specs in one engine call; the
whole operation looks its members up and posts through the one engine, inside the caller's
database transaction, and commits nothing."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from exchange.errors import InvalidInput, MemberNotFound
from exchange.ledger.engine import Leg, PostedTransaction, TransactionSpec, post_transaction
from exchange.ledger.members import MemberAccount, find_members, get_member
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.validation import check_member_ref, check_points


def _issuance_spec(
    kind: str,
    direction: int,
    partner: PartnerInfo,
    member: MemberAccount,
    points: int,
    *,
    reference: str | None,
    idempotency_key: str | None,
    batch_id: uuid.UUID | None,
    details: Mapping[str, Any] | None = None,
) -> TransactionSpec:
    """The member's ``direction * points`` against the brand's issuance shard."""
    check_points(points)
    amount = direction * points
    return TransactionSpec(
        kind=kind,
        partner_id=partner.id,
        points=points,
        reference=reference,
        idempotency_key=idempotency_key,
        batch_id=batch_id,
        legs=(Leg(member.account_id, amount), Leg(member.issuance_account_id, -amount)),
        member_refs={member.account_id: member.member_ref},
        details=details,
    )


def issue_spec(
    partner: PartnerInfo,
    member: MemberAccount,
    points: int,
    *,
    reference: str | None = None,
    idempotency_key: str | None = None,
    batch_id: uuid.UUID | None = None,
) -> TransactionSpec:
    """Earn: credit the member, debit the brand's issuance. No I/O: the member is looked up."""
    return _issuance_spec(
        "issue", 1, partner, member, points,
        reference=reference, idempotency_key=idempotency_key, batch_id=batch_id,
    )  # fmt: skip


def earn_spec(
    partner: PartnerInfo,
    member: MemberAccount,
    points: int,
    *,
    details: Mapping[str, Any],
    reference: str | None = None,
    idempotency_key: str | None = None,
    batch_id: uuid.UUID | None = None,
) -> TransactionSpec:
    """A purchase's points: postings as an issue's, kind ``earn``, and ``details`` (the rule
    version and each line's points) kept with the transaction. No I/O."""
    return _issuance_spec(
        "earn", 1, partner, member, points,
        reference=reference, idempotency_key=idempotency_key, batch_id=batch_id, details=details,
    )  # fmt: skip


def redeem_spec(
    partner: PartnerInfo,
    member: MemberAccount,
    points: int,
    *,
    reference: str | None = None,
    idempotency_key: str | None = None,
    batch_id: uuid.UUID | None = None,
) -> TransactionSpec:
    """Burn: debit the member (never below available), credit the brand's issuance."""
    return _issuance_spec(
        "redeem", -1, partner, member, points,
        reference=reference, idempotency_key=idempotency_key, batch_id=batch_id,
    )  # fmt: skip


def check_transfer(from_member_ref: object, to_member_ref: object, points: object) -> None:
    """A transfer's request, before any member is looked up."""
    check_points(points)
    check_member_ref(from_member_ref, "from_member_ref")
    check_member_ref(to_member_ref, "to_member_ref")
    if from_member_ref == to_member_ref:
        raise InvalidInput("a transfer needs two different members", field="to_member_ref")


def transfer_spec(
    partner: PartnerInfo,
    source: MemberAccount,
    target: MemberAccount,
    points: int,
    *,
    reference: str | None = None,
    idempotency_key: str | None = None,
    batch_id: uuid.UUID | None = None,
) -> TransactionSpec:
    """Move points between two members of the same brand."""
    check_transfer(source.member_ref, target.member_ref, points)
    return TransactionSpec(
        kind="transfer",
        partner_id=partner.id,
        points=points,
        reference=reference,
        idempotency_key=idempotency_key,
        batch_id=batch_id,
        legs=(Leg(source.account_id, -points), Leg(target.account_id, points)),
        member_refs={source.account_id: source.member_ref, target.account_id: target.member_ref},
        details={"from_member_ref": source.member_ref, "to_member_ref": target.member_ref},
    )


async def issue(
    session: AsyncSession,
    partner: PartnerInfo,
    member_ref: str,
    points: int,
    *,
    reference: str | None = None,
    idempotency_key: str | None = None,
) -> PostedTransaction:
    """Earn: credit the member, debit the brand's issuance."""
    check_points(points)
    member = await get_member(session, partner, member_ref)
    spec = issue_spec(partner, member, points, reference=reference, idempotency_key=idempotency_key)
    return await post_transaction(session, spec)


async def redeem(
    session: AsyncSession,
    partner: PartnerInfo,
    member_ref: str,
    points: int,
    *,
    reference: str | None = None,
    idempotency_key: str | None = None,
) -> PostedTransaction:
    """Burn: debit the member (never below available), credit the brand's issuance."""
    check_points(points)
    member = await get_member(session, partner, member_ref)
    spec = redeem_spec(
        partner, member, points, reference=reference, idempotency_key=idempotency_key
    )
    return await post_transaction(session, spec)


async def transfer(
    session: AsyncSession,
    partner: PartnerInfo,
    from_member_ref: str,
    to_member_ref: str,
    points: int,
    *,
    reference: str | None = None,
    idempotency_key: str | None = None,
) -> PostedTransaction:
    """Move points between two members of the same brand."""
    check_transfer(from_member_ref, to_member_ref, points)
    found = await find_members(session, partner, (from_member_ref, to_member_ref))
    for ref in (from_member_ref, to_member_ref):
        if ref not in found:
            raise MemberNotFound(ref)
    source, target = found[from_member_ref], found[to_member_ref]
    spec = transfer_spec(
        partner, source, target, points, reference=reference, idempotency_key=idempotency_key
    )
    return await post_transaction(session, spec)
