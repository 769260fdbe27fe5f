"""The database itself refuses what must never happen to the ledger, whatever code runs against
it: postings and transactions cannot be changed or removed (triggers, on both databases), on
PostgreSQL a transaction whose postings do not sum to zero in each ledger cannot commit (a
deferred constraint trigger), and CHECK constraints keep member accounts whole.

Every statement here goes straight to the database, past the services."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.base import utcnow, uuid7
from exchange.ledger import service
from exchange.ledger.models import Account, LedgerTransaction, Posting
from partners.service import PartnerInfo
from tests.integration.ledger_checks import ZERO_HASH, assert_ledger_whole, snapshot

Sessions = async_sessionmaker[AsyncSession]
account_t = Account.__table__
posting_t = Posting.__table__
transaction_t = LedgerTransaction.__table__


@pytest.fixture
async def ledger(sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo) -> dict[str, int]:
    """alice: 100 SKY issued, 40 redeemed; hana: 10 HTL. Returns the member account ids."""
    async with sessions() as s, s.begin():
        alice, _ = await service.enrol_member(s, sky, "alice")
        await service.issue(s, sky, "alice", 100)
        await service.redeem(s, sky, "alice", 40)
        hana, _ = await service.enrol_member(s, htl, "hana")
        await service.issue(s, htl, "hana", 10)
    return {"alice": alice.account_id, "hana": hana.account_id}


async def assert_refused_by_database(
    engine: AsyncEngine, sessions: Sessions, statements: list[str], message: str
) -> None:
    async with sessions() as s:
        before = await snapshot(s)
    for statement in statements:
        with pytest.raises(IntegrityError, match=message):
            async with engine.begin() as connection:
                await connection.execute(text(statement))
    async with sessions() as s:
        assert await snapshot(s) == before
        await assert_ledger_whole(s)


@pytest.mark.usefixtures("ledger")
async def test_postings_and_transactions_cannot_be_changed_or_removed(
    engine: AsyncEngine, sessions: Sessions
) -> None:
    statements = [
        "UPDATE posting SET amount = amount + 1",
        "UPDATE posting SET balance_after = 0 WHERE seq = 2",
        "DELETE FROM posting",
        "DELETE FROM posting WHERE seq = 2",
        "UPDATE ledger_transaction SET points = points + 1",
        "DELETE FROM ledger_transaction WHERE kind = 'redeem'",
    ]
    await assert_refused_by_database(engine, sessions, statements, "ledger rows are immutable")


@pytest.mark.postgres_only
@pytest.mark.usefixtures("ledger")
async def test_the_ledger_cannot_be_truncated(engine: AsyncEngine, sessions: Sessions) -> None:
    for table in ("posting", "ledger_transaction"):
        await assert_refused_by_database(
            engine, sessions, [f"TRUNCATE {table} CASCADE"], f"TRUNCATE on {table} refused"
        )


async def _head(engine: AsyncEngine, account_id: int) -> tuple[int, bytes]:
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                select(account_t.c.seq, account_t.c.head_hash).where(account_t.c.id == account_id)
            )
        ).one()
    return row.seq, bytes(row.head_hash)


async def commit_directly(
    engine: AsyncEngine, partner: PartnerInfo, legs: list[tuple[int, str, int]]
) -> None:
    """One transaction row and the given postings, written with plain INSERTs, which the
    database takes; then COMMIT, where the deferred zero-sum trigger has its say."""
    transaction_id = uuid7()
    async with engine.connect() as connection:
        transaction = await connection.begin()
        await connection.execute(
            insert(transaction_t).values(
                id=transaction_id,
                kind="issue",
                partner_id=partner.id,
                points=5,
                created_at=utcnow(),
            )
        )
        for account_id, ledger, amount in legs:
            seq, head = await _head(engine, account_id)
            await connection.execute(
                insert(posting_t).values(
                    transaction_id=transaction_id,
                    account_id=account_id,
                    ledger=ledger,
                    seq=seq + 1,
                    amount=amount,
                    balance_after=amount,
                    prev_hash=head,
                    hash=uuid.uuid4().bytes * 2,
                    created_at=utcnow(),
                )
            )
        inside = await connection.scalar(
            select(func.count()).where(posting_t.c.transaction_id == transaction_id)
        )
        assert inside == len(legs)  # every INSERT went in; only the COMMIT is left
        await transaction.commit()


@pytest.mark.postgres_only
async def test_an_unbalanced_transaction_cannot_commit(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, ledger: dict[str, int]
) -> None:
    """Five points credited to alice out of nowhere: refused at COMMIT, and nothing is left."""
    async with sessions() as s:
        before = await snapshot(s)
    with pytest.raises(IntegrityError, match="does not sum to zero on ledger SKY"):
        await commit_directly(engine, sky, [(ledger["alice"], "SKY", 5)])
    async with sessions() as s:
        assert await snapshot(s) == before


@pytest.mark.postgres_only
async def test_a_transaction_must_balance_in_each_ledger(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, ledger: dict[str, int]
) -> None:
    """+5 SKY to alice against -5 HTL from hana sums to zero overall, but not per ledger."""
    async with sessions() as s:
        before = await snapshot(s)
    with pytest.raises(IntegrityError, match="does not sum to zero on ledger"):
        await commit_directly(
            engine, sky, [(ledger["alice"], "SKY", 5), (ledger["hana"], "HTL", -5)]
        )
    async with sessions() as s:
        assert await snapshot(s) == before


async def test_a_member_account_cannot_go_short(
    engine: AsyncEngine, sessions: Sessions, ledger: dict[str, int]
) -> None:
    """alice has 60 SKY. The account row's CHECKs refuse every way of making her short."""
    async with sessions() as s:
        before = await snapshot(s)
    changes: list[tuple[dict[str, int], str]] = [
        ({"held": 61}, "ck_account_member_available"),
        ({"balance": 59, "held": 60}, "ck_account_member_available"),
        ({"balance": -1}, "ck_account_member_available"),
        ({"held": -1}, "ck_account_held"),
        ({"seq": -1}, "ck_account_seq"),
    ]
    for change, constraint in changes:
        with pytest.raises(IntegrityError, match=constraint):
            async with engine.begin() as connection:
                await connection.execute(
                    update(account_t).where(account_t.c.id == ledger["alice"]).values(**change)
                )
    async with sessions() as s:
        assert await snapshot(s) == before


async def test_a_posting_of_zero_is_refused(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, ledger: dict[str, int]
) -> None:
    with pytest.raises(IntegrityError, match="ck_posting_amount"):
        async with engine.begin() as connection:
            transaction_id = uuid7()
            await connection.execute(
                insert(transaction_t).values(
                    id=transaction_id,
                    kind="issue",
                    partner_id=sky.id,
                    points=0,
                    created_at=utcnow(),
                )
            )
            await connection.execute(
                insert(posting_t).values(
                    transaction_id=transaction_id,
                    account_id=ledger["alice"],
                    ledger="SKY",
                    seq=99,
                    amount=0,
                    balance_after=60,
                    prev_hash=ZERO_HASH,
                    hash=ZERO_HASH,
                    created_at=utcnow(),
                )
            )
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(posting_t)) == 6
