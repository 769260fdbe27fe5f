"""Reads the API needs that the ledger and partner services do not offer (yet): a transaction with
the postings its caller may see, a hold, the list of partners. Each is one query.

A partner may see a transaction it made, or one that touched its accounts; of the postings it
sees only those on its own accounts (a conversion's other leg belongs to the other brand).
Anything else is "not found", so that nobody learns what exists beyond its own."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

from sqlalchemy import and_, bindparam, join, outerjoin, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow
from exchange.errors import HoldNotFound, TransactionNotFound
from exchange.ledger.models import Account, Hold, LedgerTransaction, Member, Posting
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.service import HoldView, PostingView


@dataclass(frozen=True)
class TransactionView:
    id: uuid.UUID
    kind: str
    partner_id: uuid.UUID
    points: int
    reference: str | None
    reverses_id: uuid.UUID | None
    hold_id: uuid.UUID | None
    created_at: dt.datetime
    postings: tuple[PostingView, ...]


# Built once: it is read back after every posting request, and building and keying a statement
# of this size costs more than running it.
_OWN_POSTINGS = join(
    Posting,
    Account,
    and_(Account.id == Posting.account_id, Account.partner_id == bindparam("caller_id")),
).outerjoin(Member, Member.id == Account.member_id)
_TRANSACTION = (
    select(
        LedgerTransaction.kind,
        LedgerTransaction.partner_id,
        LedgerTransaction.points,
        LedgerTransaction.reference,
        LedgerTransaction.reverses_id,
        LedgerTransaction.hold_id,
        LedgerTransaction.created_at,
        Posting.account_id,
        Account.kind.label("account_kind"),
        Member.member_ref,
        Posting.ledger,
        Posting.seq,
        Posting.amount,
        Posting.balance_after,
        Posting.hash,
    )
    .select_from(
        outerjoin(LedgerTransaction, _OWN_POSTINGS, Posting.transaction_id == LedgerTransaction.id)
    )
    .where(LedgerTransaction.id == bindparam("transaction_id"))
    .order_by(Posting.id)
)


async def transaction_view(
    session: AsyncSession, caller: PartnerInfo, transaction_id: uuid.UUID
) -> TransactionView:
    """The transaction with the postings on the caller's accounts, in posting order."""
    rows = (
        await session.execute(
            _TRANSACTION, {"caller_id": caller.id, "transaction_id": transaction_id}
        )
    ).all()
    postings = tuple(
        PostingView(
            account_id=row.account_id,
            account_kind=row.account_kind,
            member_ref=row.member_ref,
            ledger=row.ledger,
            seq=row.seq,
            amount=row.amount,
            balance_after=row.balance_after,
            hash=row.hash,
        )
        for row in rows
        if row.account_id is not None
    )
    if not rows or (rows[0].partner_id != caller.id and not postings):
        raise TransactionNotFound(
            f"no transaction {transaction_id}", transaction_id=str(transaction_id)
        )
    first = rows[0]
    return TransactionView(
        id=transaction_id,
        kind=first.kind,
        partner_id=first.partner_id,
        points=first.points,
        reference=first.reference,
        reverses_id=first.reverses_id,
        hold_id=first.hold_id,
        created_at=first.created_at,
        postings=postings,
    )


async def hold_view(session: AsyncSession, caller: PartnerInfo, hold_id: uuid.UUID) -> HoldView:
    """A hold the caller placed. An active hold past its expiry reads as ``expired``."""
    row = (
        await session.execute(
            select(
                Hold.points,
                Hold.captured,
                Hold.status,
                Hold.expires_at,
                Hold.created_at,
                Hold.transaction_id,
                Member.member_ref,
            )
            .join(Account, Account.id == Hold.account_id)
            .join(Member, Member.id == Account.member_id)
            .where(Hold.id == hold_id, Hold.partner_id == caller.id)
        )
    ).first()
    if row is None:
        raise HoldNotFound(f"no hold {hold_id}", hold_id=str(hold_id))
    status = "expired" if row.status == "active" and row.expires_at <= utcnow() else row.status
    return HoldView(
        id=hold_id,
        member_ref=row.member_ref,
        points=row.points,
        captured=row.captured,
        status=status,
        expires_at=row.expires_at,
        created_at=row.created_at,
        transaction_id=row.transaction_id,
    )
