"""What the charities' statements say of the day's donations, read from the batch's ranges."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import BigInteger, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.dialect import join_by_id, one_of
from settlement.ranges import in_ranges
from settlement.statements import DonationStats
from settlement.tables import account_t, partner_t, posting_t, range_t, transaction_t


async def donation_stats(
    session: AsyncSession, batch_id: int, currency: str
) -> dict[tuple[uuid.UUID, uuid.UUID], DonationStats]:
    """Per (charity, brand): the day's donations and reversals, counted and in points. Reads
    only the charities' postings in the batch's ranges, through ``(account_id, seq)``."""
    charity_accounts = await _charity_accounts(session, currency)
    if not charity_accounts:
        return {}
    p = posting_t
    touched = (
        select(account_t.c.partner_id.label("charity"), p.c.transaction_id.label("tx"))
        .select_from(in_ranges(batch_id).join(account_t, account_t.c.id == p.c.account_id))
        .where(one_of(session, range_t.c.account_id, charity_accounts))
        .distinct()
        .subquery()
    )
    # Each transaction by its primary key: a day without donations must not make the planner
    # expect none and scan every transaction of the day for them.
    joined, tc = join_by_id(
        session, touched, touched.c.tx, transaction_t, "partner_id", "kind", "points"
    )
    rows = await session.execute(
        select(
            touched.c.charity,
            tc.partner_id,
            tc.kind,
            func.count(),
            cast(func.sum(tc.points), BigInteger),
        )
        .select_from(joined)
        .where(tc.kind.in_(["donate", "reverse"]))
        .group_by(touched.c.charity, tc.partner_id, tc.kind)
    )
    counts: dict[tuple[uuid.UUID, uuid.UUID], dict[str, int]] = defaultdict(dict)
    for charity, brand, kind, count, points in rows:
        line = counts[charity, brand]
        if kind == "donate":
            line["donations"], line["donated_points"] = int(count), int(points or 0)
        else:
            line["reversals"], line["reversed_points"] = int(count), int(points or 0)
    return {key: DonationStats(**value) for key, value in counts.items()}


async def _charity_accounts(session: AsyncSession, currency: str) -> Sequence[int]:
    """The charities' settlement accounts in the currency."""
    return (
        (
            await session.execute(
                select(account_t.c.id)
                .join(partner_t, partner_t.c.id == account_t.c.partner_id)
                .where(partner_t.c.kind == "charity", account_t.c.ledger == currency)
            )
        )
        .scalars()
        .all()
    )
