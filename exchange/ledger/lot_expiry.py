"""Expiring lots: what falls due by a cutoff leaves each member as one ``expire`` transaction to
the brand's breakage account, through the one engine; and the brands hear of it, before
(``points.expiring``) and after (``points.expired``).

Exactly once by construction, with no run table to keep: a member's due points are read under
the lock of its account (taken in id order with its brand's breakage account, as the engine
takes them), and expiring them consumes those lots. So a second run, another replica's run at
the same cutoff, or a run again after a crash (each chunk of members is one database
transaction: all of it or nothing) finds those lots closed and posts nothing for them; a
redemption racing the run either took the points first (the run then sees less due) or waits
for the run's lock and then consumes what is left. A run may only take a member's available
points (balance less held, see ``exchange.ledger.lots``): what a live hold keeps of due lots
stays open and expires at a later run once the hold has gone. A notice is sent once per lot
(``lot.noticed``, set under the same account locks).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import rfc3339
from exchange.dialect import lock_in_id_order, one_of
from exchange.ledger.engine import Leg, PostedTransaction, TransactionSpec, post_transactions
from exchange.ledger.lot_models import Lot
from exchange.ledger.models import Account, Member
from exchange.outbox import enqueue_events

CHUNK = 2_000
"""Members per database transaction of a run."""

account_t = cast(Table, Account.__table__)
member_t = cast(Table, Member.__table__)
lot_t = cast(Table, Lot.__table__)

_LOCKED = (account_t.c.id, account_t.c.kind, account_t.c.partner_id, account_t.c.balance,
           account_t.c.held)  # fmt: skip


@dataclass
class ExpiryTotals:
    """What a run did: members whose points expired, the points, notices queued."""

    members: int = 0
    points: int = 0
    notices: int = 0


async def _due_accounts(
    session: AsyncSession, until: dt.datetime, after: dt.datetime | None = None
) -> list[int]:
    """Member accounts with open lots expiring by ``until`` (and after ``after``), by id."""
    query = select(lot_t.c.account_id).where(lot_t.c.remaining > 0, lot_t.c.expires_at <= until)
    if after is not None:
        query = query.where(lot_t.c.expires_at > after, lot_t.c.noticed.is_(False))
    rows = await session.execute(query.distinct())
    return sorted(account_id for (account_id,) in rows)


async def _lock_with_breakage(
    session: AsyncSession, members: Sequence[int]
) -> tuple[dict[int, Any], dict[uuid.UUID, int]]:
    """Lock the member accounts and their brands' breakage accounts, in id order (the engine's
    order); the members' rows and each brand's breakage account."""
    brands = select(account_t.c.partner_id).where(one_of(session, account_t.c.id, members))
    breakage_rows = await session.execute(
        select(account_t.c.id, account_t.c.partner_id).where(
            account_t.c.kind == "breakage", account_t.c.partner_id.in_(brands)
        )
    )
    breakage = {partner_id: account_id for account_id, partner_id in breakage_rows}
    locked, _ = await lock_in_id_order(session, _LOCKED, sorted({*members, *breakage.values()}))
    rows = {row.id: row for row in locked if row.kind == "member"}
    return rows, breakage


async def _member_refs(session: AsyncSession, accounts: Sequence[int]) -> dict[int, str]:
    rows = await session.execute(
        select(account_t.c.id, member_t.c.member_ref)
        .join(member_t, member_t.c.id == account_t.c.member_id)
        .where(one_of(session, account_t.c.id, accounts))
    )
    return {account_id: ref for account_id, ref in rows}


async def _expire_chunk(
    session: AsyncSession, members: Sequence[int], cutoff: dt.datetime, totals: ExpiryTotals
) -> None:
    rows, breakage = await _lock_with_breakage(session, members)
    due = await session.execute(
        select(lot_t.c.account_id, func.sum(lot_t.c.remaining))
        .where(
            one_of(session, lot_t.c.account_id, list(rows)),
            lot_t.c.remaining > 0,
            lot_t.c.expires_at <= cutoff,
        )
        .group_by(lot_t.c.account_id)
    )
    specs: list[TransactionSpec] = []
    for account_id, points in sorted(due):
        row = rows[account_id]
        amount = min(int(points), row.balance - row.held)
        if amount <= 0:
            continue
        specs.append(
            TransactionSpec(
                kind="expire",
                partner_id=row.partner_id,
                points=amount,
                legs=(Leg(account_id, -amount), Leg(breakage[row.partner_id], amount)),
                details={"expired_through": rfc3339(cutoff)},
            )
        )
    outcomes = await post_transactions(session, specs)
    posted = [outcome for outcome in outcomes if isinstance(outcome, PostedTransaction)]
    refs = await _member_refs(session, [outcome.postings[0].account_id for outcome in posted])
    await enqueue_events(
        session,
        "points.expired",
        [
            (
                outcome.partner_id,
                {
                    "member_ref": refs[outcome.postings[0].account_id],
                    "points": outcome.points,
                    "transaction_id": str(outcome.id),
                    "expired_through": rfc3339(cutoff),
                    "created_at": rfc3339(outcome.created_at),
                },
            )
            for outcome in posted
        ],
    )
    totals.members += len(posted)
    totals.points += sum(outcome.points for outcome in posted)


async def _notice_chunk(
    session: AsyncSession,
    members: Sequence[int],
    cutoff: dt.datetime,
    until: dt.datetime,
    totals: ExpiryTotals,
) -> None:
    rows, _ = await _lock_with_breakage(session, members)
    claimed = await session.execute(
        update(lot_t)
        .where(
            one_of(session, lot_t.c.account_id, list(rows)),
            lot_t.c.remaining > 0,
            lot_t.c.noticed.is_(False),
            lot_t.c.expires_at > cutoff,
            lot_t.c.expires_at <= until,
        )
        .values(noticed=True)
        .returning(lot_t.c.account_id, lot_t.c.remaining, lot_t.c.expires_at)
    )
    by_member: dict[int, dict[dt.datetime, int]] = defaultdict(lambda: defaultdict(int))
    for account_id, remaining, expires_at in claimed:
        by_member[account_id][expires_at] += remaining
    refs = await _member_refs(session, list(by_member))
    await enqueue_events(
        session,
        "points.expiring",
        [
            (
                rows[account_id].partner_id,
                {
                    "member_ref": refs[account_id],
                    "expiring": [
                        {"expires_at": rfc3339(moment), "points": points}
                        for moment, points in sorted(expiries.items())
                    ],
                },
            )
            for account_id, expiries in sorted(by_member.items())
        ],
    )
    totals.notices += len(by_member)


async def expire_lots(
    sessions: async_sessionmaker[AsyncSession],
    cutoff: dt.datetime,
    *,
    notice_days: int = 0,
    chunk: int = CHUNK,
) -> ExpiryTotals:
    """Expire every open lot due by ``cutoff``, a chunk of members per transaction, and queue
    ``points.expiring`` for the lots due in the ``notice_days`` after it (none when 0)."""
    totals = ExpiryTotals()
    async with sessions() as session, session.begin():
        members = await _due_accounts(session, cutoff)
    for start in range(0, len(members), chunk):
        async with sessions() as session, session.begin():
            await _expire_chunk(session, members[start : start + chunk], cutoff, totals)
    if notice_days > 0:
        until = cutoff + dt.timedelta(days=notice_days)
        async with sessions() as session, session.begin():
            members = await _due_accounts(session, until, after=cutoff)
        for start in range(0, len(members), chunk):
            async with sessions() as session, session.begin():
                await _notice_chunk(session, members[start : start + chunk], cutoff, until, totals)
    return totals
