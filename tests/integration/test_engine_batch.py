"""The one engine, several transactions at a time: ``post_transactions``.

The worked example: Alice is given 100 SKY, then asks to redeem 150 (refused: she has 100), then
redeems 100 (posted: the refusal changed nothing), then sends Bob 1 (refused: she has 0 now).
Two transactions post, in one lock, one insert per table and one update of the account heads."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.errors import InsufficientPoints, LimitExceeded
from exchange.ledger.engine import (
    Leg,
    PostedTransaction,
    TransactionSpec,
    post_transaction,
    post_transactions,
)
from exchange.ledger.holds import place_hold
from exchange.ledger.members import MemberAccount, enrol_member, find_members
from exchange.ledger.models import Hold, Posting
from exchange.ledger.operations import issue_spec, redeem_spec, transfer_spec
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.verify import verify_ledger
from tests.integration.ledger_checks import (
    Line,
    account_row,
    assert_chained,
    assert_ledger_whole,
    assert_outstanding,
    lines_of,
    snapshot,
)

Sessions = async_sessionmaker[AsyncSession]


async def members(sessions: Sessions, brand: PartnerInfo, *refs: str) -> list[MemberAccount]:
    async with sessions() as session, session.begin():
        return [(await enrol_member(session, brand, ref))[0] for ref in refs]


@contextmanager
def statements(engine: AsyncEngine) -> Iterator[list[str]]:
    """The SQL statements sent to the database meanwhile (an executemany counts once), and the
    engine's binary COPYs (``COPY <table>``), which go to asyncpg past SQLAlchemy's events: the
    real ``copy_records_to_table`` runs, and is noted on its way."""
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(" ".join(statement.split()))

    copy = asyncpg.Connection.copy_records_to_table

    async def copy_noted(self: asyncpg.Connection, table_name: str, **kw: Any) -> Any:
        seen.append(f"COPY {table_name} ({len(kw['records'])} rows)")
        return await copy(self, table_name, **kw)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    asyncpg.Connection.copy_records_to_table = copy_noted  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        asyncpg.Connection.copy_records_to_table = copy  # type: ignore[method-assign]
        event.remove(engine.sync_engine, "before_cursor_execute", record)


async def test_worked_example(sessions: Sessions, sky: PartnerInfo) -> None:
    alice, bob = await members(sessions, sky, "alice", "bob")
    async with sessions() as session, session.begin():
        outcomes = await post_transactions(
            session,
            [
                issue_spec(sky, alice, 100),
                redeem_spec(sky, alice, 150),
                redeem_spec(sky, alice, 100),
                transfer_spec(sky, alice, bob, 1),
            ],
        )
    issued, short, redeemed, broke = outcomes
    assert isinstance(issued, PostedTransaction) and isinstance(redeemed, PostedTransaction)
    assert isinstance(short, InsufficientPoints) and isinstance(broke, InsufficientPoints)
    assert short.extra == {"member_ref": "alice", "available": 100, "requested": 150}
    assert broke.extra == {"member_ref": "alice", "available": 0, "requested": 1}
    assert issued.balances[alice.account_id] == (100, 0)
    assert redeemed.balances[alice.account_id] == (0, 0)
    assert issued.id < redeemed.id
    async with sessions() as session:
        assert await lines_of(session, issued.id) == sorted(
            [Line(alice.account_id, 1, 100, 100), Line(alice.issuance_account_id, 1, -100, -100)]
        )
        assert await lines_of(session, redeemed.id) == sorted(
            [Line(alice.account_id, 2, -100, 0), Line(alice.issuance_account_id, 2, 100, 0)]
        )
        assert await account_row(session, alice.account_id) == (0, 0, 2)
        assert await account_row(session, bob.account_id) == (0, 0, 0)
        assert (await snapshot(session)).counts["ledger_transaction"] == 2
        assert await assert_chained(session) == 4
        await assert_ledger_whole(session)
        await assert_outstanding(session, sky, 0)
        assert (await verify_ledger(session)).ok


@pytest.mark.parametrize("transfers", [29, 2])
async def test_one_lock_one_insert_per_table_one_update_of_heads(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, transfers: int
) -> None:
    """A batch's rows go in one statement per table: on PostgreSQL by COPY from 64 rows (329
    transactions, 658 postings, 329 lots), as arrays below (3 transactions and their 6
    postings)."""
    people = await members(sessions, sky, *(f"m{n}" for n in range(30)))
    issues = 300 if transfers > 2 else 1
    specs = [issue_spec(sky, people[n % 30], n + 1) for n in range(issues)]
    specs += [transfer_spec(sky, people[n], people[n + 1], 1) for n in range(transfers)]
    async with sessions() as session, session.begin():
        await session.connection()  # BEGIN is not the engine's
        with statements(engine) as seen:
            outcomes = await post_transactions(session, specs)
    assert all(isinstance(o, PostedTransaction) for o in outcomes)
    account_reads = [s for s in seen if s.startswith("SELECT") and "FROM account" in s]
    if engine.dialect.name == "postgresql":
        # Locked, with the database's clock read as each row leaves the lock.
        assert all("FOR UPDATE" in s and "clock_timestamp()" in s for s in account_reads)
    assert len(account_reads) == 1
    writes = [s for s in seen if not s.startswith("SELECT")]
    count = len(specs)
    if engine.dialect.name == "postgresql" and count >= 64:
        # Every spec credits a member (a lot each); each transfer takes from a lot opened in
        # this same batch (so no lot read before changes), one consumption each.
        assert writes[:3] == [
            f"COPY ledger_transaction ({count} rows)",
            f"COPY posting ({2 * count} rows)",
            f"COPY lot ({count} rows)",
        ]
        assert writes[3].startswith("INSERT INTO lot_consumption") and "unnest(" in writes[3]
        assert writes[4].startswith("UPDATE account SET") and "unnest(" in writes[4]
        assert len(writes) == 5
    else:
        assert [" ".join(s.split()[:3]) for s in writes] == [
            "INSERT INTO ledger_transaction",
            "INSERT INTO posting",
            "INSERT INTO lot",
            "INSERT INTO lot_consumption",
            "UPDATE account SET",
        ]
        if engine.dialect.name == "postgresql":
            # One statement each, not one per row: every column goes as an array.
            assert all("unnest(" in s for s in writes)
    async with sessions() as session:
        assert await assert_chained(session) == 2 * count
        await assert_outstanding(session, sky, sum(range(1, issues + 1)))
        assert (await verify_ledger(session)).ok


async def test_a_balance_leaving_the_range_is_refused_alone(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    (alice,) = await members(sessions, sky, "alice")
    big = TransactionSpec(
        kind="issue",
        partner_id=sky.id,
        points=0,
        legs=(Leg(alice.account_id, 2**62), Leg(alice.issuance_account_id, -(2**62))),
    )
    async with sessions() as session, session.begin():
        outcomes = await post_transactions(session, [big, big, issue_spec(sky, alice, 5)])
    assert [type(o) for o in outcomes] == [PostedTransaction, LimitExceeded, PostedTransaction]
    async with sessions() as session:
        assert await account_row(session, alice.account_id) == (2**62 + 5, 0, 2)
        await assert_ledger_whole(session)


async def test_a_lone_refusal_is_raised_and_writes_nothing(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    (alice,) = await members(sessions, sky, "alice")
    async with sessions() as session:
        before = await snapshot(session)
    async with sessions() as session, session.begin():
        try:
            await post_transaction(session, redeem_spec(sky, alice, 1))
        except InsufficientPoints as refusal:
            assert refusal.extra == {"member_ref": "alice", "available": 0, "requested": 1}
        else:
            raise AssertionError("a redemption from an empty account posted")
    async with sessions() as session:
        assert await snapshot(session) == before
        assert await post_transactions(session, []) == []


async def test_expired_holds_are_released_before_the_batch_is_checked(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    alice, bob = await members(sessions, sky, "alice", "bob")
    async with sessions() as session, session.begin():
        await post_transactions(session, [issue_spec(sky, alice, 100), issue_spec(sky, bob, 10)])
        hold = await place_hold(session, sky, "alice", 80, expires_in=60)
        await session.execute(
            update(Hold)
            .where(Hold.id == hold.id)
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    async with sessions() as session, session.begin():
        outcomes = await post_transactions(
            session, [redeem_spec(sky, alice, 60), redeem_spec(sky, alice, 40)]
        )
    assert [type(o) for o in outcomes] == [PostedTransaction, PostedTransaction]
    async with sessions() as session:
        assert await account_row(session, alice.account_id) == (0, 0, 3)
        assert (await snapshot(session)).holds[0][1] == "expired"
        await assert_ledger_whole(session)


async def test_find_members_in_one_query(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo
) -> None:
    alice, bob = await members(sessions, sky, "alice", "bob")
    await members(sessions, htl, "carol")
    async with sessions() as session:
        await session.connection()
        with statements(engine) as seen:
            found = await find_members(session, sky, ["alice", "bob", "carol", "alice"])
    assert found == {"alice": alice, "bob": bob}
    assert len(seen) == 1


@pytest.mark.postgres_only
async def test_postings_take_the_databases_clock_not_the_process(
    sessions: Sessions, sky: PartnerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service process whose clock lags an hour (another host, say) still stamps alice's
    next posting after her last one, at the database's time: on PostgreSQL the engine reads
    the time in its locking statement, not from the process."""
    (alice,) = await members(sessions, sky, "alice")
    async with sessions() as session, session.begin():
        first = await post_transaction(session, issue_spec(sky, alice, 10))
    monkeypatch.setattr(
        "exchange.dialect.utcnow",
        lambda: dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
    )
    async with sessions() as session, session.begin():
        before = await session.scalar(select(func.clock_timestamp()))
        second = await post_transaction(session, issue_spec(sky, alice, 5))
        after = await session.scalar(select(func.clock_timestamp()))
    assert first.created_at <= before <= second.created_at <= after
    async with sessions() as session:
        stamps = (
            await session.scalars(
                select(Posting.created_at)
                .where(Posting.account_id == alice.account_id)
                .order_by(Posting.seq)
            )
        ).all()
    assert stamps == [first.created_at, second.created_at]
