"""The database itself refuses what must never happen to the ledger, whatever code runs against
it: postings and transactions cannot be changed or removed (triggers, on both databases), on
PostgreSQL postings that leave a transaction not summing to zero in each ledger cannot be written
(a statement-level trigger, which sums every transaction an INSERT touches), and CHECK
constraints keep member accounts whole.

Every statement here goes straight to the database, past the services."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.base import utcnow, uuid7
from exchange.dialect import insert_columns
from exchange.ledger.members import enrol_member
from exchange.ledger.models import Account, LedgerTransaction, Posting
from exchange.ledger.operations import issue, redeem
from exchange.ledger.parties import PartnerInfo
from tests.integration.ledger_checks import ZERO_HASH, assert_ledger_whole, snapshot

Sessions = async_sessionmaker[AsyncSession]
account_t = Account.__table__
posting_t = Posting.__table__
transaction_t = LedgerTransaction.__table__


@pytest.fixture
async def ledger(sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo) -> dict[str, int]:
    """alice: 100 SKY issued, 40 redeemed; hana: 10 HTL. Returns the member account ids, and
    the id of the issuance shard alice meets (``sky_issuance``)."""
    async with sessions() as s, s.begin():
        alice, _ = await enrol_member(s, sky, "alice")
        await issue(s, sky, "alice", 100)
        await redeem(s, sky, "alice", 40)
        hana, _ = await enrol_member(s, htl, "hana")
        await issue(s, htl, "hana", 10)
    return {
        "alice": alice.account_id,
        "hana": hana.account_id,
        "sky_issuance": alice.issuance_account_id,
    }


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


def _leg_rows(
    transaction_id: uuid.UUID, legs: list[tuple[int, str, int]], heads: dict[int, tuple[int, bytes]]
) -> list[dict[str, object]]:
    rows = []
    for account_id, ledger, amount in legs:
        seq, head = heads[account_id]
        rows.append(
            {
                "transaction_id": transaction_id,
                "account_id": account_id,
                "ledger": ledger,
                "seq": seq + 1,
                "amount": amount,
                "balance_after": amount,
                "prev_hash": head,
                "hash": uuid.uuid4().bytes * 2,
                "created_at": utcnow(),
            }
        )
        heads[account_id] = (seq + 1, uuid.uuid4().bytes * 2)
    return rows


async def _last_written(engine: AsyncEngine, account_id: int) -> tuple[int, bytes]:
    """The account's last posting's seq (these writes bypass the account row's head)."""
    async with engine.connect() as connection:
        seq = await connection.scalar(
            select(func.coalesce(func.max(posting_t.c.seq), 0)).where(
                posting_t.c.account_id == account_id
            )
        )
    return int(seq or 0), ZERO_HASH


async def write_directly(
    engine: AsyncEngine,
    partner: PartnerInfo,
    statements: list[list[tuple[int, str, int]]],
    *,
    transaction_id: uuid.UUID | None = None,
) -> uuid.UUID:
    """A transaction row (unless ``transaction_id`` names one already written) and postings,
    each inner list one multi-row INSERT, with plain SQL; then COMMIT. The zero-sum trigger has
    its say at the end of each INSERT."""
    new = transaction_id is None
    transaction_id = transaction_id or uuid7()
    heads = {
        account_id: await _last_written(engine, account_id)
        for legs in statements
        for account_id, _ledger, _amount in legs
    }
    async with engine.connect() as connection:
        transaction = await connection.begin()
        if new:
            await connection.execute(
                insert(transaction_t).values(
                    id=transaction_id,
                    kind="issue",
                    partner_id=partner.id,
                    points=5,
                    created_at=utcnow(),
                )
            )
        for legs in statements:
            # One multi-row VALUES statement (a list of parameter sets would be an executemany:
            # one statement per row).
            await connection.execute(
                insert(posting_t).values(_leg_rows(transaction_id, legs, heads))
            )
        await transaction.commit()
    return transaction_id


@pytest.mark.postgres_only
async def test_an_unbalanced_transaction_cannot_be_written(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, ledger: dict[str, int]
) -> None:
    """Five points credited to alice out of nowhere: refused, and nothing is left."""
    async with sessions() as s:
        before = await snapshot(s)
    with pytest.raises(IntegrityError, match="does not sum to zero on ledger SKY"):
        await write_directly(engine, sky, [[(ledger["alice"], "SKY", 5)]])
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
        await write_directly(
            engine, sky, [[(ledger["alice"], "SKY", 5), (ledger["hana"], "HTL", -5)]]
        )
    async with sessions() as s:
        assert await snapshot(s) == before


@pytest.mark.postgres_only
async def test_a_balanced_transaction_in_one_statement_is_taken(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, ledger: dict[str, int]
) -> None:
    """The guard's other side: +5 / -5 on SKY in one INSERT is written (so the refusals above
    are the trigger's doing, not any INSERT's)."""
    alice, issuance = ledger["alice"], ledger["sky_issuance"]
    transaction_id = await write_directly(engine, sky, [[(alice, "SKY", 5), (issuance, "SKY", -5)]])
    async with sessions() as s:
        amounts = (
            await s.scalars(
                select(posting_t.c.amount).where(posting_t.c.transaction_id == transaction_id)
            )
        ).all()
    assert sorted(amounts) == [-5, 5]


@pytest.mark.postgres_only
async def test_rows_sent_by_copy_meet_the_same_guard(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, ledger: dict[str, int]
) -> None:
    """The engine sends a batch's rows with COPY (from 64 rows): the statement-level triggers
    fire for it as for an INSERT. A transaction, then 64 postings of +1 to alice with no leg
    against them, through the engine's own writer: refused, and nothing is left."""
    alice = ledger["alice"]
    async with sessions() as s:
        before = await snapshot(s)
    transaction_id, now = uuid7(), utcnow()
    heads = {alice: await _last_written(engine, alice)}
    rows = []
    for _ in range(64):  # one after another on alice's chain
        (row,) = _leg_rows(transaction_id, [(alice, "SKY", 1)], heads)
        heads[alice] = (int(row["seq"]), bytes(row["hash"]))  # type: ignore[call-overload]
        rows.append(row)
    columns = {name: [row[name] for row in rows] for name in rows[0] if name != "created_at"}
    async with sessions() as s:
        await s.begin()
        await insert_columns(
            s, transaction_t, {"id": [transaction_id], "kind": ["issue"],
            "partner_id": [sky.id], "points": [64]}, {"created_at": now},
        )  # fmt: skip
        with pytest.raises(
            asyncpg.IntegrityConstraintViolationError, match="does not sum to zero on ledger SKY"
        ):
            await insert_columns(s, posting_t, columns, {"created_at": now})
        await s.rollback()
    async with sessions() as s:
        assert await snapshot(s) == before


@pytest.mark.postgres_only
async def test_a_transaction_is_written_whole_or_not_at_all(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, ledger: dict[str, int]
) -> None:
    """Balanced legs split over two INSERTs are refused at the first; a posting added later to a
    transaction already written (balanced, committed) is refused too. Nothing is left of
    either."""
    alice, issuance = ledger["alice"], ledger["sky_issuance"]
    async with sessions() as s:
        before = await snapshot(s)
    with pytest.raises(IntegrityError, match="does not sum to zero on ledger SKY"):
        await write_directly(engine, sky, [[(alice, "SKY", 5)], [(issuance, "SKY", -5)]])
    async with sessions() as s:
        assert await snapshot(s) == before
    written = await write_directly(engine, sky, [[(alice, "SKY", 5), (issuance, "SKY", -5)]])
    async with sessions() as s:
        before = await snapshot(s)
    with pytest.raises(IntegrityError, match=f"transaction {written} does not sum to zero"):
        await write_directly(engine, sky, [[(alice, "SKY", 1)]], transaction_id=written)
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


@pytest.mark.postgres_only
async def test_postings_of_a_transaction_that_does_not_exist_are_refused(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, ledger: dict[str, int]
) -> None:
    """Balanced postings, but no transaction row: the statement trigger's existence check (in
    place of a per-row foreign key) refuses them, and nothing is left."""
    issuance = ledger["sky_issuance"]
    async with sessions() as s:
        before = await snapshot(s)
    nowhere = uuid7()
    with pytest.raises(IntegrityError, match=f"transaction {nowhere}, which does not exist"):
        await write_directly(
            engine,
            sky,
            [[(ledger["alice"], "SKY", 5), (issuance, "SKY", -5)]],
            transaction_id=nowhere,
        )
    async with sessions() as s:
        assert await snapshot(s) == before


@pytest.mark.postgres_only
async def test_a_temporary_table_cannot_stand_in_for_the_transactions(
    engine: AsyncEngine, sessions: Sessions, ledger: dict[str, int]
) -> None:
    """The trigger's function keeps its own search path (the session's temporary schema last):
    a TEMP table named ``ledger_transaction`` holding a made-up id does not satisfy it."""
    nowhere = uuid7()
    heads = {
        account_id: await _last_written(engine, account_id)
        for account_id in (ledger["alice"], ledger["sky_issuance"])
    }
    legs = [(ledger["alice"], "SKY", 5), (ledger["sky_issuance"], "SKY", -5)]
    async with sessions() as s:
        before = await snapshot(s)
    with pytest.raises(IntegrityError, match=f"transaction {nowhere}, which does not exist"):
        async with engine.connect() as connection, connection.begin():
            await connection.execute(text("CREATE TEMP TABLE ledger_transaction (id uuid)"))
            await connection.execute(
                text("INSERT INTO pg_temp.ledger_transaction VALUES (:id)"), {"id": nowhere}
            )
            await connection.execute(insert(posting_t).values(_leg_rows(nowhere, legs, heads)))
    async with sessions() as s:
        assert await snapshot(s) == before


@pytest.mark.postgres_only
async def test_postings_and_transactions_must_refer_to_what_exists(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, ledger: dict[str, int]
) -> None:
    """Checked once per INSERT statement (in place of per-row foreign keys): a posting on an
    account that does not exist, a transaction of a partner that does not exist, a reversal
    of a transaction that does not exist. Each is refused and nothing is left."""
    async with sessions() as s:
        before = await snapshot(s)
    ghost = 10**12
    with pytest.raises(IntegrityError, match=f"postings refer to account {ghost}"):
        await write_directly(engine, sky, [[(ledger["alice"], "SKY", 5), (ghost, "SKY", -5)]])
    nobody, nothing = uuid7(), uuid7()
    for values, message in (
        ({"partner_id": nobody}, f"refer to partner {nobody}"),
        ({"partner_id": sky.id, "reverses_id": nothing}, f"reverses transaction {nothing}"),
    ):
        with pytest.raises(IntegrityError, match=message):
            async with engine.begin() as connection:
                await connection.execute(
                    insert(transaction_t).values(
                        id=uuid7(), kind="reverse", points=1, created_at=utcnow(), **values
                    )
                )
    async with sessions() as s:
        assert await snapshot(s) == before


async def test_accounts_and_partners_are_never_deleted(
    engine: AsyncEngine, sessions: Sessions, sky: PartnerInfo, ledger: dict[str, int]
) -> None:
    """Postings and transactions name them; the database refuses to remove them, even an
    account without a posting."""
    async with sessions() as s, s.begin():
        bob, _ = await enrol_member(s, sky, "bob")
    for statement in (
        f"DELETE FROM account WHERE id = {bob.account_id}",
        f"DELETE FROM account WHERE id = {ledger['alice']}",
        f"DELETE FROM partner WHERE id = '{sky.id.hex}'",
    ):
        with pytest.raises(IntegrityError, match=r"DELETE on (account|partner) refused"):
            async with engine.begin() as connection:
                await connection.execute(text(statement))
