"""The settlement accounts that the money legs of conversions and donations post to.

Every participant's settlement account is split into ``shards`` accounts, and a transaction uses,
for each participant, the shard ``member account id % partner.shards``. A brand's side is keyed on
its own member (the same shard as its issuance), a charity's and the operator's on the source
member. Shard 0 for all would put every conversion and donation of the coalition in one queue on
the operator's row; this spreads them as far as the members spread.
"""

from __future__ import annotations

import uuid
from typing import cast

from sqlalchemy import Table, and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.errors import OperatorNotConfigured
from exchange.ledger.models import Account
from exchange.memo import memo, remember
from partners.models import Partner

account_t = cast(Table, Account.__table__)
partner_t = cast(Table, Partner.__table__)


async def settlement_accounts(
    session: AsyncSession, wanted: dict[uuid.UUID, int]
) -> dict[uuid.UUID, tuple[int, str]]:
    """Each partner's settlement account on the given shard: partner id -> (account id, ledger).
    Remembered once read (``exchange.memo``: settlement accounts never change)."""
    known = memo(session, "settlement_account")
    found: dict[uuid.UUID, tuple[int, str]] = {}
    for partner_id, shard in wanted.items():
        kept = known.get((partner_id, shard))
        if kept is not None:
            found[partner_id] = kept
    wanted = {partner_id: shard for partner_id, shard in wanted.items() if partner_id not in found}
    if not wanted:
        return found
    rows = await session.execute(
        select(account_t.c.partner_id, account_t.c.id, account_t.c.ledger).where(
            account_t.c.kind == "settlement",
            account_t.c.member_id.is_(None),
            or_(
                *(
                    and_(account_t.c.partner_id == partner_id, account_t.c.shard == shard)
                    for partner_id, shard in wanted.items()
                )
            ),
        )
    )
    for partner_id, account_id, ledger in rows:
        found[partner_id] = (account_id, ledger)
        remember(
            session, "settlement_account", (partner_id, wanted[partner_id]), (account_id, ledger)
        )
    missing = set(wanted) - set(found)
    if missing:
        raise LookupError(f"no settlement account for partners {sorted(map(str, missing))}")
    return found


async def operator(session: AsyncSession) -> tuple[uuid.UUID, int]:
    """The operator's partner id and shard count; ``operator-not-configured`` without one.
    Remembered once found (the operator partner never changes)."""
    known = memo(session, "operator")
    kept: tuple[uuid.UUID, int] | None = known.get("operator")
    if kept is not None:
        return kept
    row = (
        await session.execute(
            select(partner_t.c.id, partner_t.c.shards).where(partner_t.c.kind == "operator")
        )
    ).first()
    if row is None:
        raise OperatorNotConfigured("a conversion fee needs the operator partner to be registered")
    remember(session, "operator", "operator", (row.id, row.shards))
    return row.id, row.shards
