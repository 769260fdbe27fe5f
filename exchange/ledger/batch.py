"""Batches: up to :data:`MAX_ITEMS` issue, redeem, transfer and earn operations of one brand,
posted in one call of the engine (:func:`exchange.ledger.engine.post_transactions`), each with its
own outcome and its own idempotency.

Earn items. A purchase's points come from its brand's earn rules, a feature the core does not
know: the caller (``exchange.purchases.batching``, wired in by the app) prices each purchase
first and hands an ``earn`` item with its points and details, or with the ``refusal`` the
purchase already had (no rules, an order that exists); it records the purchases once posted.

Item keys. Each item carries an idempotency key of the partner's. Its transaction keeps it
(``ledger_transaction.idempotency_key``, with ``batch_id`` set) for as long as the ledger, and
a unique index on (partner, key) over batch items makes the database refuse a second transaction
for one key. An item whose key has a transaction already is not posted again: it replays that
transaction, when it asks for the same thing (type, points, reference, members); asking for
something else under a used key is an ``idempotency-conflict``. Item keys are their own
namespace: a single POST's Idempotency-Key names a request, kept 24 hours, not an item.

Outcomes. Whatever can be checked without the ledger (points, member refs, keys unique within the
batch) is checked for every item before anything is read: one bad item refuses the whole batch
and nothing is posted. What depends on the ledger is the item's own: an unknown member, a member
short of points; the other items post. Items apply in order, so an item that is refused leaves
the ledger to the items after it as if it had not been there.

Concurrency. On PostgreSQL a batch first takes a transaction-scoped advisory lock on its partner,
so that of two batches of one partner sharing keys the second, once it runs, finds the first's
keys instead of running into the unique index. It costs next to nothing: an issue or redeem batch
of any size meets every issuance shard of its brand, so two of them queue on those row locks
anyway. Single operations do not take it (their keys are not item keys). On SQLite every writer
holds the database's write lock from its first statement (``BEGIN IMMEDIATE``).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no type information
from sqlalchemy import Table, and_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import uuid7
from exchange.dialect import probe_each, refuses_in_savepoint, serialise_on
from exchange.errors import DomainError, InvalidInput, MemberNotFound
from exchange.ledger.engine import PostedTransaction, TransactionSpec, post_transactions
from exchange.ledger.members import MemberAccount, brand_currency, find_members
from exchange.ledger.models import Account, LedgerTransaction, Member, Posting
from exchange.ledger.operations import (
    check_transfer,
    earn_spec,
    issue_spec,
    redeem_spec,
    transfer_spec,
)
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import PostingView
from exchange.ledger.validation import check_member_ref, check_points

MAX_ITEMS = 1000
MAX_KEY_LENGTH = 255
ItemType = Literal["issue", "redeem", "transfer", "earn"]

_ITEM_KEY = re.compile(r"^[\x21-\x7e]+$")
"""Visible ASCII, like an Idempotency-Key header's value."""

account_t = cast(Table, Account.__table__)
member_t = cast(Table, Member.__table__)
posting_t = cast(Table, Posting.__table__)
transaction_t = cast(Table, LedgerTransaction.__table__)


class ItemKeyConflict(DomainError):
    slug = "idempotency-conflict"
    status = 422
    title = "This Idempotency-Key was used for a different request"

    def __init__(self, key: str, transaction_id: uuid.UUID) -> None:
        super().__init__(
            f"the item key {key!r} names transaction {transaction_id}, which is not this"
            " operation; use a new key",
            idempotency_key=key,
            transaction_id=str(transaction_id),
        )


@dataclass(frozen=True)
class BatchItem:
    """One operation of a batch. ``member_ref`` for issue and redeem; ``from_member_ref`` and
    ``to_member_ref`` for a transfer."""

    type: ItemType
    idempotency_key: str
    points: int
    member_ref: str | None = None
    from_member_ref: str | None = None
    to_member_ref: str | None = None
    reference: str | None = None
    details: Mapping[str, Any] | None = None
    """An ``earn``'s details, kept with its transaction."""
    refusal: DomainError | None = None
    """Refused before the ledger was read (its key is still looked up: a replay wins)."""

    @property
    def member_refs(self) -> tuple[str, ...]:
        if self.type == "transfer":
            return (self.from_member_ref or "", self.to_member_ref or "")
        return (self.member_ref or "",)


@dataclass(frozen=True)
class StoredTransaction:
    """A batch item's transaction as the ledger holds it (all its postings are the partner's)."""

    id: uuid.UUID
    kind: str
    partner_id: uuid.UUID
    points: int
    reference: str | None
    idempotency_key: str
    created_at: dt.datetime
    postings: tuple[PostingView, ...]


@dataclass(frozen=True)
class ItemPosted:
    spec: TransactionSpec
    transaction: PostedTransaction


@dataclass(frozen=True)
class ItemReplayed:
    transaction: StoredTransaction


@dataclass(frozen=True)
class ItemRefused:
    error: DomainError


ItemOutcome = ItemPosted | ItemReplayed | ItemRefused


@dataclass(frozen=True)
class BatchOutcome:
    batch_id: uuid.UUID
    items: list[ItemOutcome]
    """One per item, in the items' order."""


def _check_item(item: BatchItem) -> None:
    key = item.idempotency_key
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or not _ITEM_KEY.match(key):
        raise InvalidInput(
            f"an item key is 1 to {MAX_KEY_LENGTH} visible ASCII characters",
            field="idempotency_key",
        )
    if item.type == "transfer":
        check_transfer(item.from_member_ref, item.to_member_ref, item.points)
    elif item.type in ("issue", "redeem", "earn"):
        if item.refusal is None:
            check_points(item.points)
        check_member_ref(item.member_ref)
    else:
        raise InvalidInput("type is issue, redeem, transfer or earn", field="type")


def check_items(items: Sequence[BatchItem]) -> None:
    """Refuse the whole batch for the first item that is wrong whatever the ledger holds."""
    if not 1 <= len(items) <= MAX_ITEMS:
        raise InvalidInput(
            f"a batch has 1 to {MAX_ITEMS} operations, not {len(items)}", field="operations"
        )
    first_of: dict[str, int] = {}
    for index, item in enumerate(items):
        try:
            _check_item(item)
        except DomainError as error:
            field = f"operations[{index}].{error.extra.get('field', 'type')}"
            raise type(error)(
                f"operations[{index}]: {error.detail}", **{**error.extra, "field": field}
            ) from None
        first = first_of.setdefault(item.idempotency_key, index)
        if first != index:
            raise InvalidInput(
                f"operations[{index}] repeats the idempotency_key of operations[{first}]",
                field=f"operations[{index}].idempotency_key",
            )


def _spec(
    partner: PartnerInfo,
    item: BatchItem,
    members: dict[str, MemberAccount],
    batch_id: uuid.UUID,
) -> TransactionSpec:
    key, reference = item.idempotency_key, item.reference
    if item.type == "transfer":
        source, target = (members[ref] for ref in item.member_refs)
        return transfer_spec(
            partner, source, target, item.points,
            reference=reference, idempotency_key=key, batch_id=batch_id,
        )  # fmt: skip
    if item.type == "earn":
        return earn_spec(
            partner, members[item.member_refs[0]], item.points, details=item.details or {},
            reference=reference, idempotency_key=key, batch_id=batch_id,
        )  # fmt: skip
    build = issue_spec if item.type == "issue" else redeem_spec
    return build(
        partner, members[item.member_refs[0]], item.points,
        reference=reference, idempotency_key=key, batch_id=batch_id,
    )  # fmt: skip


def _same_operation(item: BatchItem, stored: StoredTransaction) -> bool:
    """Whether the stored transaction is what ``item`` asks for. An item refused before the
    ledger was read (a purchase whose order has its transaction already) has no points of its
    own to compare: its kind, reference and member say whether the transaction is its."""
    points = stored.points if item.refusal is not None else item.points
    if (stored.kind, stored.points, stored.reference) != (item.type, points, item.reference):
        return False
    members = [p for p in stored.postings if p.account_kind == "member"]
    if item.type == "transfer":
        sent = [p.member_ref for p in members if p.amount < 0]
        received = [p.member_ref for p in members if p.amount > 0]
        return (sent, received) == ([item.from_member_ref], [item.to_member_ref])
    return [p.member_ref for p in members] == [item.member_ref]


async def _serialise_batches(session: AsyncSession, partner: PartnerInfo) -> None:
    """Queue behind the partner's batch in flight, if any, until its commit (see the module
    note); taken before the first read, so that what this batch reads includes that one's."""
    await serialise_on(session, f"ledger-batch:{partner.id}")


async def stored_items(
    session: AsyncSession, partner: PartnerInfo, keys: Sequence[str]
) -> dict[str, StoredTransaction]:
    """The partner's batch-item transactions among ``keys``, with their postings, by key. The
    keys are looked up alone first (the unique index answers): most batches repeat none."""
    if not keys:
        return {}
    columns = (
        transaction_t.c.idempotency_key,
        transaction_t.c.id,
        transaction_t.c.kind,
        transaction_t.c.partner_id,
        transaction_t.c.points,
        transaction_t.c.reference,
        transaction_t.c.created_at,
    )
    mine = select(*columns).where(
        transaction_t.c.partner_id == partner.id, transaction_t.c.batch_id.is_not(None)
    )
    # The unique index on item keys answers, one probe per key (see probe_each).
    query = probe_each(session, mine, transaction_t.c.idempotency_key, sorted(set(keys)))
    found = (await session.execute(query)).all()
    if not found:
        return {}
    postings = await _stored_postings(session, partner, [row.id for row in found])
    return {
        row.idempotency_key: StoredTransaction(
            id=row.id,
            kind=row.kind,
            partner_id=row.partner_id,
            points=row.points,
            reference=row.reference,
            idempotency_key=row.idempotency_key,
            created_at=row.created_at,
            postings=tuple(postings[row.id]),
        )
        for row in found
    }


async def _stored_postings(
    session: AsyncSession, partner: PartnerInfo, transaction_ids: list[uuid.UUID]
) -> dict[uuid.UUID, list[PostingView]]:
    """The postings of these transactions on the partner's accounts, by transaction."""
    rows = await session.execute(
        select(
            posting_t.c.transaction_id,
            posting_t.c.account_id,
            account_t.c.kind,
            member_t.c.member_ref,
            posting_t.c.ledger,
            posting_t.c.seq,
            posting_t.c.amount,
            posting_t.c.balance_after,
            posting_t.c.hash,
            posting_t.c.prev_hash,
            posting_t.c.counterparty_account_id,
        )
        .join(
            account_t,
            and_(account_t.c.id == posting_t.c.account_id, account_t.c.partner_id == partner.id),
        )
        .outerjoin(member_t, member_t.c.id == account_t.c.member_id)
        .where(posting_t.c.transaction_id.in_(transaction_ids))
        .order_by(posting_t.c.id)
    )
    postings: dict[uuid.UUID, list[PostingView]] = {
        transaction_id: [] for transaction_id in transaction_ids
    }
    for transaction_id, *posting in rows:
        postings[transaction_id].append(PostingView(*posting))
    return postings


_ITEM_KEY_INDEX = "uq_ledger_transaction_batch_item_key"


class _KeysUsed(Exception):
    """Some refused item's key has a transaction: the batch is posted again, the careful way."""


def _is_item_key_clash(error: BaseException) -> bool:
    """Whether ``error`` is PostgreSQL refusing a second transaction for an item key: raised by
    asyncpg for a COPY, wrapped by SQLAlchemy for an INSERT."""
    original = error.orig and error.orig.__cause__ if isinstance(error, IntegrityError) else error
    return (
        isinstance(original, asyncpg.UniqueViolationError)
        and original.constraint_name == _ITEM_KEY_INDEX
    )


async def post_batch(
    session: AsyncSession,
    partner: PartnerInfo,
    items: Sequence[BatchItem],
    *,
    batch_id: uuid.UUID | None = None,
) -> BatchOutcome:
    """Post a batch of the calling brand's operations, inside the caller's database transaction
    (see the module note); one outcome per item, in order.

    On PostgreSQL the batch is first posted as if none of its keys had a transaction, inside a
    savepoint: a batch that repeats no key (nearly all of them) then costs no lookup of its
    keys, since the unique index on item keys checks them anyway as the transactions are
    written (only the keys of refused items, which write nothing, are looked up). A key that
    has a transaction makes that write fail, or is found among the refused; the savepoint is
    rolled back and the batch posted again, its keys looked up first (replays, conflicts)."""
    brand_currency(partner)
    check_items(items)
    batch_id = batch_id or uuid7()
    await _serialise_batches(session, partner)
    if refuses_in_savepoint(session):
        try:
            async with session.begin_nested():
                outcome = await _post_items(session, partner, items, batch_id, stored={})
                # A refused item wrote nothing for the index to check: its key is looked up
                # (a retried batch's item that posted the first time is replayed, even if it
                # would be refused now).
                refused = [
                    item.idempotency_key
                    for item, result in zip(items, outcome.items, strict=True)
                    if isinstance(result, ItemRefused)
                ]
                if refused and await stored_items(session, partner, refused):
                    raise _KeysUsed
                return outcome
        except _KeysUsed:
            pass
        except (IntegrityError, asyncpg.UniqueViolationError) as error:
            if not _is_item_key_clash(error):
                raise
    stored = await stored_items(session, partner, [item.idempotency_key for item in items])
    return await _post_items(session, partner, items, batch_id, stored=stored)


async def _post_items(
    session: AsyncSession,
    partner: PartnerInfo,
    items: Sequence[BatchItem],
    batch_id: uuid.UUID,
    *,
    stored: dict[str, StoredTransaction],
) -> BatchOutcome:
    """Post the items whose keys are not in ``stored``; replay or refuse the others."""
    outcomes: list[ItemOutcome | None] = [None] * len(items)
    fresh: list[int] = []
    for index, item in enumerate(items):
        known = stored.get(item.idempotency_key)
        if known is None and item.refusal is not None:
            outcomes[index] = ItemRefused(item.refusal)
        elif known is None:
            fresh.append(index)
        elif _same_operation(item, known):
            outcomes[index] = ItemReplayed(known)
        else:
            outcomes[index] = ItemRefused(ItemKeyConflict(item.idempotency_key, known.id))

    members = await find_members(
        session, partner, {ref for index in fresh for ref in items[index].member_refs}
    )
    specs: list[TransactionSpec] = []
    posting: list[int] = []
    for index in fresh:
        item = items[index]
        unknown = [ref for ref in item.member_refs if ref not in members]
        if unknown:
            outcomes[index] = ItemRefused(MemberNotFound(unknown[0]))
            continue
        specs.append(_spec(partner, item, members, batch_id))
        posting.append(index)
    results = await post_transactions(session, specs)
    for index, spec, result in zip(posting, specs, results, strict=True):
        outcomes[index] = (
            ItemRefused(result) if isinstance(result, DomainError) else ItemPosted(spec, result)
        )
    assert all(outcome is not None for outcome in outcomes)
    return BatchOutcome(batch_id, [outcome for outcome in outcomes if outcome is not None])
