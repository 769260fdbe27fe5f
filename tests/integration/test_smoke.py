from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.members import enrol_member
from exchange.ledger.operations import issue, redeem
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import member_balance
from exchange.ledger.verify import verify_ledger


async def test_issue_and_redeem(
    sessions: async_sessionmaker[AsyncSession], sky: PartnerInfo
) -> None:
    async with sessions() as s, s.begin():
        await enrol_member(s, sky, "alice")
        await issue(s, sky, "alice", 100)
        await redeem(s, sky, "alice", 30)
    async with sessions() as s, s.begin():
        bal = await member_balance(s, sky, "alice")
        assert (bal.balance, bal.held, bal.available) == (70, 0, 70)
        report = await verify_ledger(s)
        assert report.ok, report.as_dict()
        assert report.postings == 4
