"""The memo of facts that never change (``exchange.memo``): only what a committed transaction
read is remembered, per database."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.members import enrol_member, get_member
from exchange.ledger.parties import PartnerInfo


class _RolledBack(Exception):
    pass


async def test_a_member_read_in_a_transaction_that_rolled_back_is_not_remembered(
    sessions: async_sessionmaker[AsyncSession], sky: PartnerInfo
) -> None:
    try:
        async with sessions() as session, session.begin():
            await enrol_member(session, sky, "ghost")
            first = await get_member(session, sky, "ghost")
            raise _RolledBack
    except _RolledBack:
        pass
    async with sessions() as session, session.begin():
        await enrol_member(session, sky, "ghost")  # enrolled again: other rows, other ids
        again = await get_member(session, sky, "ghost")
    assert again.member_id != first.member_id
    async with sessions() as session, session.begin():
        remembered = await get_member(session, sky, "ghost")
    assert remembered == again
