"""Ledger operations for a brand's members. Each builds its legs and posts them through the one
engine, inside the caller's database transaction; none commits.

Issue, redeem and transfer come in two halves: ``*_spec`` builds the engine's spec from members
already looked up (no I/O), so that a batch (``exchange.ledger.batch``) can look up all its
members in one query (:func:`find_members`) and post all its specs in one engine call."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    Integer,
    String,
    Table,
    Uuid,
    bindparam,
    func,
    insert,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.contract.types import MAX_MEMBER_REF, MAX_POINTS
from exchange.errors import (
    HoldNotActive,
    HoldNotFound,
    InvalidAmount,
    InvalidInput,
    MemberNotFound,
    NotABrand,
    NotReversible,
    ReversalExceedsOriginal,
    TransactionNotFound,
)
from exchange.ledger.engine import (
    GENESIS_HASH,
    Leg,
    PostedTransaction,
    TransactionSpec,
    active_held,
    post_transaction,
)
from exchange.ledger.models import Account, Hold, LedgerTransaction, Member, Posting
from exchange.ledger.parties import PartnerInfo

REVERSIBLE_KINDS = frozenset({"issue", "redeem", "transfer", "convert", "donate", "capture"})

account_t = cast(Table, Account.__table__)
member_t = cast(Table, Member.__table__)
posting_t = cast(Table, Posting.__table__)
transaction_t = cast(Table, LedgerTransaction.__table__)
hold_t = cast(Table, Hold.__table__)


def check_points(points: object, field: str = "points") -> int:
    """A request amount: a whole number from 1 to 10^12 (a bool is not a number here)."""
    if type(points) is not int or not 1 <= points <= MAX_POINTS:
        raise InvalidAmount(f"{field} must be a whole number from 1 to {MAX_POINTS}", field=field)
    return points


def check_member_ref(member_ref: object, field: str = "member_ref") -> str:
    if (
        not isinstance(member_ref, str)
        or not 1 <= len(member_ref) <= MAX_MEMBER_REF
        or not member_ref.isprintable()
        or "/" in member_ref
        or member_ref != member_ref.strip()
    ):
        raise InvalidInput(
            f"{field} must be 1 to {MAX_MEMBER_REF} printable characters, no outer spaces, no '/'",
            field=field,
        )
    return member_ref


def brand_currency(partner: PartnerInfo) -> str:
    if partner.kind != "brand" or partner.currency is None:
        raise NotABrand("only a brand partner has members and points")
    return partner.currency


@dataclass(frozen=True)
class MemberAccount:
    member_id: uuid.UUID
    member_ref: str
    account_id: int
    issuance_account_id: int


async def enrol_member(
    session: AsyncSession, partner: PartnerInfo, member_ref: str
) -> tuple[MemberAccount, bool]:
    """Enrol a member of the calling brand; enrolling again returns the same one (created=False)."""
    currency = brand_currency(partner)
    check_member_ref(member_ref)
    existing = await _find_member(session, partner, member_ref)
    if existing is not None:
        return existing, False
    member_id = uuid7()
    now = utcnow()
    try:
        async with session.begin_nested():
            await session.execute(
                insert(member_t).values(
                    id=member_id, partner_id=partner.id, member_ref=member_ref, created_at=now
                )
            )
            await session.execute(
                insert(account_t).values(
                    ledger=currency,
                    kind="member",
                    partner_id=partner.id,
                    member_id=member_id,
                    shard=0,
                    balance=0,
                    held=0,
                    seq=0,
                    head_hash=GENESIS_HASH,
                    created_at=now,
                )
            )
    except IntegrityError:
        # Someone enrolled the same member concurrently; theirs stands.
        existing = await _find_member(session, partner, member_ref)
        if existing is None:
            raise
        return existing, False
    found = await _find_member(session, partner, member_ref)
    assert found is not None
    return found, True


# Built once: building these queries on each request cost more than running them. The partner
# and its shard count are bound parameters.
_SHARDS = (
    select(account_t.c.shard, account_t.c.id)
    .where(
        account_t.c.partner_id == bindparam("partner_id", type_=Uuid),
        account_t.c.kind == "issuance",
        account_t.c.member_id.is_(None),
    )
    .cte("shards")
)
_MEMBER_ACCOUNTS = (
    select(member_t.c.member_ref, member_t.c.id, account_t.c.id.label("account_id"))
    .select_from(member_t)
    .join(account_t, account_t.c.member_id == member_t.c.id)
    .where(member_t.c.partner_id == bindparam("partner_id", type_=Uuid))
)


def _with_shards(found: Any, *, after: Any = None) -> Any:
    """The members found, each with the issuance shard it meets (the brand's few shards are
    joined by number, not looked up once per member); ``found`` joins ``after`` if given."""
    columns = (found.c.member_ref, found.c.id, found.c.account_id, _SHARDS.c.id)
    source = found if after is None else after.join(found, true())
    return select(*columns).select_from(
        source.join(
            _SHARDS, _SHARDS.c.shard == found.c.account_id % bindparam("shards", type_=Integer)
        )
    )


_wanted_ref = (
    func.unnest(bindparam("refs", type_=ARRAY(String))).table_valued("ref").render_derived()
)
# On PostgreSQL one probe of the member index and one of the account's per ref, whatever the
# sizes: a LIMIT keeps the lateral subquery from being flattened into a join, which for a
# batch's thousand refs the planner made a hash join over a sequential scan of every account of
# every partner.
_FIND_MEMBERS_PG = _with_shards(
    _MEMBER_ACCOUNTS.where(member_t.c.member_ref == _wanted_ref.c.ref).limit(1).lateral(),
    after=_wanted_ref,
)
_FIND_MEMBERS = _with_shards(
    _MEMBER_ACCOUNTS.where(member_t.c.member_ref.in_(bindparam("refs", expanding=True))).subquery()
)


async def _find_member(
    session: AsyncSession, partner: PartnerInfo, member_ref: str
) -> MemberAccount | None:
    """The member's account and the issuance shard it meets, in one query (the batches')."""
    return (await _members(session, partner, [member_ref])).get(member_ref)


async def _members(
    session: AsyncSession, partner: PartnerInfo, refs: list[str]
) -> dict[str, MemberAccount]:
    query = _FIND_MEMBERS_PG if session.get_bind().dialect.name == "postgresql" else _FIND_MEMBERS
    rows = await session.execute(
        query, {"partner_id": partner.id, "shards": partner.shards, "refs": refs}
    )
    return {
        ref: MemberAccount(member_id, ref, account, issuance)
        for ref, member_id, account, issuance in rows
    }


async def find_members(
    session: AsyncSession, partner: PartnerInfo, member_refs: Iterable[str]
) -> dict[str, MemberAccount]:
    """The calling brand's members among ``member_refs``, in one query; unknown refs are left
    out. The refs are checked first (:func:`check_member_ref`)."""
    brand_currency(partner)
    wanted = sorted({check_member_ref(ref) for ref in member_refs})
    if not wanted:
        return {}
    return await _members(session, partner, wanted)


async def get_member(session: AsyncSession, partner: PartnerInfo, member_ref: str) -> MemberAccount:
    brand_currency(partner)
    check_member_ref(member_ref)
    found = await _find_member(session, partner, member_ref)
    if found is None:
        raise MemberNotFound(member_ref)
    return found


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
        raise InvalidAmount(
            f"cannot capture {captured} points of a {hold.points}-point hold",
            field="points",
            held=hold.points,
        )
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


def _scaled(amount: int, total: int, cumulative: int) -> int:
    """``amount * cumulative / total`` truncated toward zero (sign kept, magnitude floored)."""
    magnitude = abs(amount) * cumulative // total
    return magnitude if amount >= 0 else -magnitude


def reversal_legs(
    originals: list[tuple[int, str, int]], total: int, before: int, after: int
) -> list[Leg]:
    """Legs that reverse the share ``after - before`` of ``total`` of the original postings
    ``(account_id, ledger, amount)``.

    Shares are cumulative (what has been reversed after this reversal, minus what had been
    before), so a run of partial reversals that reaches the whole reverses each posting exactly.
    In each ledger every posting but one is scaled and truncated toward zero; the largest posting
    (ties: lowest account id, so every partial reversal picks the same one) takes the difference,
    which keeps each ledger summing to zero."""
    by_ledger: dict[str, list[tuple[int, int]]] = {}
    for account_id, ledger, amount in originals:
        by_ledger.setdefault(ledger, []).append((account_id, amount))
    legs: list[Leg] = []
    for ledger in sorted(by_ledger):
        rows = by_ledger[ledger]
        balancer = min(range(len(rows)), key=lambda i: (-abs(rows[i][1]), rows[i][0]))
        parts = []
        for i, (account_id, amount) in enumerate(rows):
            if i != balancer:
                share = _scaled(amount, total, after) - _scaled(amount, total, before)
                parts.append((i, account_id, -share))
        rest = -sum(share for _, _, share in parts)
        parts.append((balancer, rows[balancer][0], rest))
        legs.extend(Leg(account_id, share) for _, account_id, share in sorted(parts) if share)
    return legs


async def reverse(
    session: AsyncSession,
    partner: PartnerInfo,
    transaction_id: uuid.UUID,
    points: int | None = None,
    *,
    idempotency_key: str | None = None,
) -> PostedTransaction:
    """Reverse all or part of a transaction the partner made. Reversals of one transaction are
    serialised on its row, and together never exceed its points."""
    original = (
        await session.execute(
            select(transaction_t)
            .where(transaction_t.c.id == transaction_id, transaction_t.c.partner_id == partner.id)
            .with_for_update()
        )
    ).first()
    if original is None:
        raise TransactionNotFound(
            f"no transaction {transaction_id}", transaction_id=str(transaction_id)
        )
    if original.kind not in REVERSIBLE_KINDS:
        raise NotReversible(f"a {original.kind} transaction cannot be reversed", kind=original.kind)
    already = int(
        await session.scalar(
            select(func.coalesce(func.sum(transaction_t.c.points), 0)).where(
                transaction_t.c.reverses_id == transaction_id
            )
        )
        or 0
    )
    remaining = original.points - already
    amount = remaining if points is None else check_points(points)
    if amount <= 0 or amount > remaining:
        raise ReversalExceedsOriginal(
            f"{remaining} of {original.points} points remain to reverse",
            original=original.points,
            reversed=already,
            remaining=remaining,
            requested=amount,
        )
    originals = (
        await session.execute(
            select(posting_t.c.account_id, posting_t.c.ledger, posting_t.c.amount)
            .where(posting_t.c.transaction_id == transaction_id)
            .order_by(posting_t.c.id)
        )
    ).all()
    legs = reversal_legs(
        [(r.account_id, r.ledger, r.amount) for r in originals],
        original.points,
        already,
        already + amount,
    )
    refs = await _member_refs(session, [leg.account_id for leg in legs])
    return await post_transaction(
        session,
        TransactionSpec(
            kind="reverse",
            partner_id=partner.id,
            points=amount,
            idempotency_key=idempotency_key,
            reverses_id=transaction_id,
            rate_version_id=original.rate_version_id,
            legs=legs,
            member_refs=refs,
        ),
    )


async def _member_refs(session: AsyncSession, account_ids: list[int]) -> dict[int, str]:
    rows = await session.execute(
        select(account_t.c.id, member_t.c.member_ref)
        .join(member_t, member_t.c.id == account_t.c.member_id)
        .where(account_t.c.id.in_(account_ids))
    )
    return {account_id: ref for account_id, ref in rows}


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
    return MemberBalance(
        member_ref, currency, member.account_id, row.balance, held,
        row.balance - held, row.seq, row.head_hash,
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


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"seq": seq}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        seq = json.loads(base64.urlsafe_b64decode(padded.encode()))["seq"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidInput("cursor is not one this service gave", field="cursor") from exc
    if type(seq) is not int or seq < 1:
        raise InvalidInput("cursor is not one this service gave", field="cursor")
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
