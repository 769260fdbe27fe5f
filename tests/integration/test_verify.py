"""``verify_ledger`` (and ``litestar ledger verify``) finds a single changed, deleted or inserted
posting and names it.

The ledger under test (SKY):

    alice   seq 1  issue     +100 → 100
            seq 2  transfer   -30 →  70   (to bob)
            seq 3  redeem     -20 →  50
    bob     seq 1  transfer   +30 →  30

The tampering goes straight to the database, past the guards: on PostgreSQL the guard triggers
are switched off for that one transaction (``session_replication_role = replica``; the tests
connect as a superuser), on SQLite they are dropped first."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.ledger.members import enrol_member
from exchange.ledger.models import Account, Posting
from exchange.ledger.operations import issue, redeem, transfer
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.verify import Fault, VerifyReport, verify_ledger
from exchange.settings import Settings
from tests.integration.ledger_checks import expected_hash
from tests.integration.operator_cli import litestar

Sessions = async_sessionmaker[AsyncSession]
account_t = Account.__table__
posting_t = Posting.__table__

SQLITE_GUARDS = ("posting_no_update", "posting_no_delete")


@dataclass(frozen=True)
class Page:
    alice: int
    bob: int
    issue: uuid.UUID
    transfer: uuid.UUID
    redeem: uuid.UUID
    postings: dict[tuple[int, int], int]
    """(account, seq) -> posting id"""


@pytest.fixture
async def page(sessions: Sessions, sky: PartnerInfo) -> Page:
    async with sessions() as s, s.begin():
        alice, _ = await enrol_member(s, sky, "alice")
        bob, _ = await enrol_member(s, sky, "bob")
        issued = await issue(s, sky, "alice", 100)
        moved = await transfer(s, sky, "alice", "bob", 30)
        redeemed = await redeem(s, sky, "alice", 20)
    async with sessions() as s:
        rows = await s.execute(select(posting_t.c.account_id, posting_t.c.seq, posting_t.c.id))
        postings = {(account, seq): posting for account, seq, posting in rows}
        report = await verify_ledger(s)
    assert report.ok, report.as_dict()
    assert (report.postings, len(postings)) == (6, 6)
    return Page(alice.account_id, bob.account_id, issued.id, moved.id, redeemed.id, postings)


async def tamper(engine: AsyncEngine, db_kind: str, *statements: object) -> None:
    """Run ``statements`` in one transaction with the immutability guards out of the way."""
    async with engine.begin() as connection:
        if db_kind == "postgresql":
            await connection.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            for trigger in SQLITE_GUARDS:
                await connection.execute(text(f"DROP TRIGGER IF EXISTS {trigger}"))
        for statement in statements:
            await connection.execute(
                statement if not isinstance(statement, str) else text(statement)
            )  # type: ignore[arg-type]


async def verify(sessions: Sessions) -> VerifyReport:
    async with sessions() as s:
        return await verify_ledger(s)


def faults_of(report: VerifyReport, kind: str) -> list[Fault]:
    return [fault for fault in report.faults if fault.kind == kind]


async def test_an_untouched_ledger_verifies(sessions: Sessions, page: Page) -> None:
    report = await verify(sessions)
    assert report.ok
    assert report.as_dict()["first_fault"] is None
    assert report.postings == 6


async def test_a_changed_amount_is_named(
    engine: AsyncEngine, sessions: Sessions, db_kind: str, page: Page
) -> None:
    """alice's transfer of 30 becomes 3: that posting no longer adds up, and its transaction no
    longer sums to zero."""
    changed = page.postings[page.alice, 2]
    await tamper(engine, db_kind, f"UPDATE posting SET amount = -3 WHERE id = {changed}")
    report = await verify(sessions)
    assert not report.ok
    first = report.faults[0]
    assert (first.kind, first.posting_id, first.account_id, first.seq) == (
        "chain", changed, page.alice, 2,
    )  # fmt: skip
    assert first.transaction_id == page.transfer
    assert [f.transaction_id for f in faults_of(report, "zero-sum")] == [page.transfer]


async def test_a_changed_balance_and_amount_are_named(
    engine: AsyncEngine, sessions: Sessions, db_kind: str, page: Page
) -> None:
    """Changed consistently (amount and balance after), the row no longer hashes to its hash."""
    changed = page.postings[page.alice, 2]
    await tamper(
        engine, db_kind, f"UPDATE posting SET amount = -3, balance_after = 97 WHERE id = {changed}"
    )
    report = await verify(sessions)
    assert (report.faults[0].kind, report.faults[0].posting_id) == ("chain", changed)
    assert "hash" in report.faults[0].detail


@pytest.mark.parametrize("counterparty", ["alice", "NULL"])
async def test_a_changed_counterparty_is_named(
    engine: AsyncEngine, sessions: Sessions, db_kind: str, page: Page, counterparty: str
) -> None:
    """Who a posting pairs with decides who owes whom at settlement, so it is in the hash:
    pointed at another account, or cleared (every posting has one), bob's posting no longer
    hashes to its hash."""
    changed = page.postings[page.bob, 1]
    async with sessions() as s:
        recorded = await s.scalar(
            select(posting_t.c.counterparty_account_id).where(posting_t.c.id == changed)
        )
    assert recorded == page.bob  # one partner on both sides: it pairs with no one
    value = page.alice if counterparty == "alice" else "NULL"
    change = f"UPDATE posting SET counterparty_account_id = {value} WHERE id = {changed}"
    await tamper(engine, db_kind, change)
    report = await verify(sessions)
    assert [(f.kind, f.posting_id) for f in report.faults] == [("chain", changed)]
    assert "hash" in report.faults[0].detail


async def test_a_posting_moved_to_another_ledger_is_named(
    engine: AsyncEngine, sessions: Sessions, db_kind: str, page: Page
) -> None:
    """The hash does not cover the ledger (the account fixes it): a posting of alice's on
    another ledger than her account's is named all the same, and its transaction no longer
    sums to zero on either."""
    changed = page.postings[page.alice, 2]
    await tamper(engine, db_kind, f"UPDATE posting SET ledger = 'HTL' WHERE id = {changed}")
    report = await verify(sessions)
    first = report.faults[0]
    assert (first.kind, first.posting_id, first.account_id) == ("chain", changed, page.alice)
    assert "is on ledger HTL, its account on SKY" in first.detail
    assert {f.transaction_id for f in faults_of(report, "zero-sum")} == {page.transfer}


async def test_a_posting_deleted_in_the_middle_is_named(
    engine: AsyncEngine, sessions: Sessions, db_kind: str, page: Page
) -> None:
    """alice's seq 2 is gone: her seq 3 follows seq 1, and the transfer is left one-legged."""
    deleted = page.postings[page.alice, 2]
    await tamper(engine, db_kind, f"DELETE FROM posting WHERE id = {deleted}")
    report = await verify(sessions)
    first = report.faults[0]
    assert (first.kind, first.account_id, first.seq) == ("chain", page.alice, 3)
    assert first.posting_id == page.postings[page.alice, 3]
    assert "seq 2..2 missing" in first.detail
    [unbalanced] = faults_of(report, "zero-sum")
    assert unbalanced.transaction_id == page.transfer
    assert "sums to 30" in unbalanced.detail


async def test_the_last_posting_deleted_is_named(
    engine: AsyncEngine, sessions: Sessions, db_kind: str, page: Page
) -> None:
    """alice's seq 3 (the redemption) is gone: the chain that is left is sound, but the account
    row still says seq 3 and balance 50."""
    deleted = page.postings[page.alice, 3]
    await tamper(engine, db_kind, f"DELETE FROM posting WHERE id = {deleted}")
    report = await verify(sessions)
    first = report.faults[0]
    assert (first.kind, first.account_id, first.seq) == ("account-head", page.alice, 3)
    assert "seq 3..3 missing" in first.detail
    [unbalanced] = faults_of(report, "zero-sum")
    assert unbalanced.transaction_id == page.redeem


async def test_an_inserted_posting_is_named(
    engine: AsyncEngine, sessions: Sessions, db_kind: str, page: Page
) -> None:
    """Someone with database access appends 1 000 points to alice's chain, perfectly chained
    and hashed, riding on the original issue. The account row was not touched, so the chain now
    runs past its head, and the issue no longer sums to zero: the extra posting is named."""
    async with engine.connect() as connection:
        head = (
            await connection.execute(
                select(account_t.c.seq, account_t.c.balance, account_t.c.head_hash).where(
                    account_t.c.id == page.alice
                )
            )
        ).one()
    assert (head.seq, head.balance) == (3, 50)
    seq, balance_after = 4, 1050
    forged = insert(posting_t).values(
        transaction_id=page.issue, account_id=page.alice, ledger="SKY", seq=seq, amount=1000,
        balance_after=balance_after, prev_hash=head.head_hash, counterparty_account_id=page.alice,
        hash=expected_hash(
            page.alice, seq, page.issue, 1000, balance_after, head.head_hash, page.alice
        ),
        created_at=utcnow(),
    )  # fmt: skip
    await tamper(engine, db_kind, forged)
    async with sessions() as s:
        inserted = await s.scalar(
            select(posting_t.c.id).where(posting_t.c.account_id == page.alice, posting_t.c.seq == 4)
        )
    report = await verify(sessions)
    first = report.faults[0]
    assert (first.kind, first.account_id, first.posting_id) == (
        "account-head", page.alice, inserted,
    )  # fmt: skip
    assert [f.transaction_id for f in faults_of(report, "zero-sum")] == [page.issue]


async def test_the_operator_command_exits_non_zero_and_names_the_posting(
    engine: AsyncEngine, sessions: Sessions, db_kind: str, settings: Settings, page: Page
) -> None:
    clean = litestar(settings, "ledger", "verify")
    assert clean.returncode == 0, clean.stderr
    answer = json.loads(clean.stdout)
    assert (answer["ok"], answer["postings"], answer["first_fault"]) == (True, 6, None)

    changed = page.postings[page.bob, 1]
    await tamper(engine, db_kind, f"UPDATE posting SET amount = 300 WHERE id = {changed}")
    tampered = litestar(settings, "ledger", "verify")
    assert tampered.returncode == 1, tampered.stderr
    answer = json.loads(tampered.stdout)
    assert answer["ok"] is False
    assert answer["first_fault"]["posting_id"] == changed
    assert answer["first_fault"]["account_id"] == page.bob
    assert answer["first_fault"]["transaction_id"] == str(page.transfer)


async def _split_everywhere(sessions: Sessions, page: Page, points: list[int]) -> None:
    """Walked in two processes, split at each of ``points`` (the second walk starting at that
    posting id), verify says exactly what one walk says."""
    whole = (await verify(sessions)).as_dict()
    for split_at in points:
        async with sessions() as s:
            halves = (await verify_ledger(s, split_at=split_at)).as_dict()
        assert halves == whole, split_at


@pytest.mark.postgres_only
async def test_a_clean_ledger_split_anywhere_verifies(sessions: Sessions, page: Page) -> None:
    ids = sorted(page.postings.values())
    await _split_everywhere(sessions, page, [ids[1], ids[3], ids[-1], ids[-1] + 1])
    async with sessions() as s:
        report = await verify_ledger(s, split_at=ids[2])
    assert report.ok and report.postings == 6


@pytest.mark.postgres_only
@pytest.mark.parametrize(
    "change",
    [
        "UPDATE posting SET amount = -3 WHERE id = {alice_2}",
        "UPDATE posting SET amount = -3, balance_after = 97 WHERE id = {alice_2}",
        "DELETE FROM posting WHERE id = {alice_2}",
        "UPDATE posting SET prev_hash = hash WHERE id = {alice_3}",
    ],
)
async def test_a_split_walk_names_what_one_walk_names(
    engine: AsyncEngine, sessions: Sessions, page: Page, change: str
) -> None:
    """Around the changed row: the second walk starting at it (so the junction must catch a
    posting that does not follow on) and just after it."""
    alice_2, alice_3 = page.postings[page.alice, 2], page.postings[page.alice, 3]
    await tamper(engine, "postgresql", change.format(alice_2=alice_2, alice_3=alice_3))
    assert not (await verify(sessions)).ok
    await _split_everywhere(sessions, page, [alice_2, alice_3, alice_3 + 1])
