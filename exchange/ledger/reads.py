"""What the ledger shows a partner: a member's balance and history, a transaction with the
postings its caller may see, a hold. Each is one query (a balance, two).

A partner may see a transaction it made, or one that touched its accounts; of the postings it
sees only those on its own accounts (a conversion's other leg belongs to the other brand).
Anything else is "not found", so that nobody learns what exists beyond its own."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import cast

from sqlalchemy import Table, and_, bindparam, join, outerjoin, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow
from exchange.errors import HoldNotFound, InvalidCursor, InvalidInput, TransactionNotFound
from exchange.ledger.expiry import active_held
from exchange.ledger.holds import HoldView
from exchange.ledger.lots import next_expiry
from exchange.ledger.members import brand_currency, get_member
from exchange.ledger.models import Account, Hold, LedgerTransaction, Member, Posting
from exchange.ledger.parties import PartnerInfo

account_t = cast(Table, Account.__table__)
posting_t = cast(Table, Posting.__table__)
transaction_t = cast(Table, LedgerTransaction.__table__)


@dataclass(frozen=True)
class PostingView:
    """A posting as a partner is shown it: on one of its accounts, with the member's ref."""

    account_id: int
    account_kind: str
    member_ref: str | None
    ledger: str
    seq: int
    amount: int
    balance_after: int
    hash: bytes
    prev_hash: bytes
    counterparty_account_id: int | None


@dataclass(frozen=True)
class MemberBalance:
    member_ref: str
    currency: str
    account_id: int
    balance: int
    held: int
    available: int
    seq: int
    head_hash: bytes
    next_expiry_at: dt.datetime | None = None
    next_expiry_points: int = 0


async def member_balance(
    session: AsyncSession, partner: PartnerInfo, member_ref: str
) -> MemberBalance:
    """Balance, points held by live holds, and what is available, with the account's chain head."""
    currency = brand_currency(partner)
    member = await get_member(session, partner, member_ref)
    row = (
        await session.execute(
            select(account_t.c.balance, account_t.c.seq, account_t.c.head_hash).where(
                account_t.c.id == member.account_id
            )
        )
    ).one()
    held = await active_held(session, member.account_id)
    expiry_at, expiry_points = await next_expiry(session, member.account_id)
    return MemberBalance(
        member_ref, currency, member.account_id, row.balance, held,
        row.balance - held, row.seq, row.head_hash, expiry_at, expiry_points,
    )  # fmt: skip


@dataclass(frozen=True)
class HistoryEntry:
    transaction_id: uuid.UUID
    kind: str
    seq: int
    amount: int
    balance_after: int
    reference: str | None
    created_at: dt.datetime
    account_id: int
    prev_hash: bytes
    hash: bytes
    counterparty_account_id: int | None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"seq": seq}).encode()).decode().rstrip("=")


MAX_SEQ = 2**63 - 1
MAX_CURSOR_LENGTH = 64
"""Far more than a cursor of ours takes (a base64 ``{"seq": n}`` with n below 2^63)."""


def decode_cursor(cursor: str) -> int:
    """The position a cursor of ours holds; anything else, a huge number included, is an
    :class:`InvalidCursor` (400) before it reaches the database."""
    refusal = InvalidCursor("cursor is not one this service gave", field="cursor")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise refusal
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        seq = json.loads(base64.urlsafe_b64decode(padded.encode()))["seq"]
    except (ValueError, KeyError, TypeError) as exc:
        raise refusal from exc
    if type(seq) is not int or not 1 <= seq <= MAX_SEQ:
        raise refusal
    return seq


async def member_history(
    session: AsyncSession,
    partner: PartnerInfo,
    member_ref: str,
    *,
    limit: int = 50,
    cursor: str | None = None,
) -> tuple[list[HistoryEntry], str | None]:
    """The member's postings, newest first, by keyset on the account sequence."""
    if type(limit) is not int or not 1 <= limit <= 500:
        raise InvalidInput("limit must be 1 to 500", field="limit")
    member = await get_member(session, partner, member_ref)
    query = (
        select(
            posting_t.c.transaction_id,
            transaction_t.c.kind,
            posting_t.c.seq,
            posting_t.c.amount,
            posting_t.c.balance_after,
            transaction_t.c.reference,
            posting_t.c.created_at,
            posting_t.c.account_id,
            posting_t.c.prev_hash,
            posting_t.c.hash,
            posting_t.c.counterparty_account_id,
        )
        .join(transaction_t, transaction_t.c.id == posting_t.c.transaction_id)
        .where(posting_t.c.account_id == member.account_id)
        .order_by(posting_t.c.seq.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        query = query.where(posting_t.c.seq < decode_cursor(cursor))
    rows = (await session.execute(query)).all()
    entries = [HistoryEntry(*row) for row in rows[:limit]]
    next_cursor = encode_cursor(entries[-1].seq) if len(rows) > limit else None
    return entries, next_cursor


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
        Posting.prev_hash,
        Posting.counterparty_account_id,
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
            prev_hash=row.prev_hash,
            counterparty_account_id=row.counterparty_account_id,
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
