"""What a batch takes of the ledger: per money account, one range of its chain.

The batch for business date ``D`` takes, per money account (ledger = the settlement currency),
the range of its chain from where its last range ended to its last posting created before
``cutoff(D)`` that had committed when the batch was taken (``settlement_range``). The engine
stamps an account's postings in sequence order, so that posting is found by bisection, a few
index lookups per account (:func:`take_ranges`), and a posting that commits after the batch
was taken, though created before the cutoff, goes to the next batch. A transaction's postings
share their stamp and commit together, so a transaction is not split between two batches
(unless its postings were stamped out of order, see :mod:`settlement.pairing`). The ranges'
constraints chain each account's ranges end to start, so no posting is ever in two batches and
none is left out.

The day is then read as one range scan of ``posting``'s primary key, between the lowest and
highest id of the ranges' ends (:func:`id_bounds`). Settlement writes nothing per posting and
never locks a ledger row (no foreign key from its tables to ``account`` or ``posting``), so
writers never wait for it, nor it for them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, func, insert, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from settlement.tables import account_t, posting_t, range_t

Range = tuple[int, int, int]
"""``(account id, after seq, through seq)``: the postings of the account with ``seq`` in
``after < seq <= through``."""

_PROBES_PER_QUERY = 1_000
"""(account, seq) pairs looked up per query while finding the ranges' ends."""


async def _created_at(session: AsyncSession, probes: dict[int, int]) -> dict[int, dt.datetime]:
    """``created_at`` of one posting per account: ``probes`` maps account id to seq."""
    p = posting_t
    found: dict[int, dt.datetime] = {}
    pairs = sorted(probes.items())
    for start in range(0, len(pairs), _PROBES_PER_QUERY):
        chunk = pairs[start : start + _PROBES_PER_QUERY]
        rows = await session.execute(
            select(p.c.account_id, p.c.created_at).where(tuple_(p.c.account_id, p.c.seq).in_(chunk))
        )
        found.update((account_id, created_at) for account_id, created_at in rows)
    if len(found) != len(probes):
        missing = sorted(set(probes) - set(found))
        raise RuntimeError(f"postings missing below their account heads: accounts {missing}")
    return found


async def take_ranges(
    session: AsyncSession, batch_id: int, currency: str, cutoff_at: dt.datetime
) -> list[Range]:
    """Write the batch's ranges and return them.

    Per money account, the range runs from where the account's last range ended to its last
    posting created before the cutoff. Postings are stamped in sequence order (see the engine's
    design note), so that posting is found by bisecting the sequence numbers between the two,
    a handful of index lookups per account however long the day, and only up to the account's
    head as read here: everything up to it has committed (the head moves in the transaction
    that writes the postings), and a posting that commits later, even one created before the
    cutoff, falls into the next batch. No posting row is read in bulk and none is locked."""
    heads = await _unsettled_heads(session, currency)
    last_before = await _last_before_cutoff(session, heads, cutoff_at)
    ranges = sorted(
        (account_id, after, last_before[account_id])
        for account_id, (after, _) in heads.items()
        if last_before[account_id] > after
    )
    if ranges:
        await session.execute(
            insert(range_t),
            [
                {
                    "batch_id": batch_id,
                    "account_id": account_id,
                    "after_seq": after or None,
                    "through_seq": through,
                }
                for account_id, after, through in ranges
            ],
        )
    return ranges


async def _unsettled_heads(session: AsyncSession, currency: str) -> dict[int, tuple[int, int]]:
    """Per money account with postings past its last range: ``(where that range ended, 0 for
    none; the account's head seq)``."""
    a, r = account_t, range_t
    last = select(func.max(r.c.through_seq)).where(r.c.account_id == a.c.id).scalar_subquery()
    heads = await session.execute(
        select(a.c.id, a.c.seq, last).where(a.c.ledger == currency, a.c.seq > 0)
    )
    return {
        account_id: (before or 0, seq) for account_id, seq, before in heads if seq > (before or 0)
    }


async def _last_before_cutoff(
    session: AsyncSession, heads: dict[int, tuple[int, int]], cutoff_at: dt.datetime
) -> dict[int, int]:
    """Per account of ``heads``, the seq of its last posting created before the cutoff (its
    last range's end when there is none), by bisection over ``after < seq <= head``."""
    # Every seq up to ``low`` is before the cutoff (the last range's end counts as such),
    # every seq above ``high`` is not; the head is probed first, as on a quiet night it
    # settles the account at once.
    low = {account_id: after for account_id, (after, _) in heads.items()}
    high = {account_id: head for account_id, (_, head) in heads.items()}
    probes = dict(high)
    while probes:
        created = await _created_at(session, probes)
        for account_id, seq in probes.items():
            if created[account_id] < cutoff_at:
                low[account_id] = seq
            else:
                high[account_id] = seq - 1
        probes = {
            account_id: (low[account_id] + high[account_id] + 1) // 2
            for account_id in heads
            if low[account_id] < high[account_id]
        }
    return low


def in_ranges(batch_id: int) -> Any:
    """``posting`` joined to the batch's ranges: the postings the batch took."""
    p, r = posting_t, range_t
    return p.join(
        r,
        and_(
            r.c.batch_id == batch_id,
            r.c.account_id == p.c.account_id,
            p.c.seq > func.coalesce(r.c.after_seq, 0),
            p.c.seq <= r.c.through_seq,
        ),
    )


async def id_bounds(session: AsyncSession, batch_id: int) -> tuple[int, int]:
    """The lowest and highest posting id in the batch's ranges: the first and last posting of
    each range, looked up through ``(account_id, seq)``. Per account, ids grow with seq (the
    next posting is inserted only once the one before committed, and ids come from one
    sequence with no per-session cache, as the migrations make it), so every posting the
    batch took lies between the two, and the day is one range scan of the primary key."""
    p, r = posting_t, range_t

    def end(seq: Any, extreme: Any) -> Any:
        # An equality per range on (account_id, seq): one index probe each.
        return (
            select(extreme(p.c.id))
            .select_from(p.join(r, and_(r.c.account_id == p.c.account_id, p.c.seq == seq)))
            .where(r.c.batch_id == batch_id)
            .scalar_subquery()
        )

    low, high = (
        await session.execute(
            select(
                end(func.coalesce(r.c.after_seq, 0) + 1, func.min),
                end(r.c.through_seq, func.max),
            )
        )
    ).one()
    return int(low), int(high)
