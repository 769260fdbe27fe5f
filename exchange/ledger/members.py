"""A brand's members: enrolment, and finding members with their accounts, one or a batch's
worth in one query."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Integer, String, Table, Uuid, bindparam, func, insert, select, text, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.dialect import for_dialect, is_postgresql
from exchange.errors import MemberNotFound, NotABrand
from exchange.ledger.chain import GENESIS_HASH
from exchange.ledger.models import Account, Member
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.validation import check_member_ref
from exchange.memo import memo, remember

account_t = cast(Table, Account.__table__)
member_t = cast(Table, Member.__table__)


def brand_currency(partner: PartnerInfo) -> str:
    """The brand's points currency; any other partner has no members and no points."""
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
    query = for_dialect(session, postgresql=_FIND_MEMBERS_PG, sqlite=_FIND_MEMBERS)
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
    """The calling brand's member, or ``MemberNotFound``."""
    brand_currency(partner)
    check_member_ref(member_ref)
    known = memo(session, "member")
    found: MemberAccount | None = known.get((partner.id, member_ref))
    if found is not None:
        return found
    found = await _find_member(session, partner, member_ref)
    if found is None:
        raise MemberNotFound(member_ref)
    remember(session, "member", (partner.id, member_ref), found)  # its accounts never change
    return found


# One probe of the member index per (brand, ref), whatever the sizes (a LIMIT keeps the lateral
# subquery from being flattened into a join), then the brand's issuance shard by number.
_FIND_MEMBERS_OF_BRANDS = text(
    """
    SELECT w.partner_id, w.ref, found.member_id, found.account_id, shard.id
    FROM unnest(CAST(:partner_ids AS uuid[]), CAST(:refs AS text[]), CAST(:shards AS int[]))
        AS w(partner_id, ref, shards)
    CROSS JOIN LATERAL (
        SELECT m.id AS member_id, a.id AS account_id
        FROM member m JOIN account a ON a.member_id = m.id
        WHERE m.partner_id = w.partner_id AND m.member_ref = w.ref
        LIMIT 1
    ) AS found
    JOIN account shard ON shard.partner_id = w.partner_id AND shard.kind = 'issuance'
        AND shard.member_id IS NULL AND shard.shard = found.account_id % w.shards
    """
)


async def find_members_of_brands(
    session: AsyncSession, members: Iterable[tuple[PartnerInfo, str]]
) -> dict[tuple[uuid.UUID, str], MemberAccount]:
    """The members among ``members`` (brand, checked ref) that exist, by (brand id, ref): on
    PostgreSQL in one query for all brands, on SQLite (in process, no round trips) with one
    query per brand. A group of operations of many brands finds its members with it."""
    wanted = {(partner.id, ref): partner for partner, ref in members}
    if not wanted:
        return {}
    if is_postgresql(session):
        rows = await session.execute(
            _FIND_MEMBERS_OF_BRANDS,
            {
                "partner_ids": [partner_id for partner_id, _ in wanted],
                "refs": [ref for _, ref in wanted],
                "shards": [partner.shards for partner in wanted.values()],
            },
        )
        return {
            (partner_id, ref): MemberAccount(member_id, ref, account_id, issuance_id)
            for partner_id, ref, member_id, account_id, issuance_id in rows
        }
    by_brand: dict[uuid.UUID, tuple[PartnerInfo, set[str]]] = {}
    for (partner_id, ref), partner in wanted.items():
        by_brand.setdefault(partner_id, (partner, set()))[1].add(ref)
    found: dict[tuple[uuid.UUID, str], MemberAccount] = {}
    for partner, refs in by_brand.values():
        for ref, member in (await _members(session, partner, sorted(refs))).items():
            found[partner.id, ref] = member
    return found
