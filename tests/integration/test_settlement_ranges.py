"""Settlement by ranges of each account's chain, on both databases.

What the engine records for settlement (each posting's counterparty), how a batch's ranges are
found (a cutoff in the middle of an account's chain) and chained (the database refuses a range
that overlaps, skips or goes back), and the postings that are paired transaction by transaction:
several partners on both sides.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.base import utcnow, uuid7
from exchange.ledger.chain import GENESIS_HASH, SEVERAL_COUNTERPARTIES
from exchange.ledger.engine import Leg, TransactionSpec, post_transaction
from exchange.ledger.models import Account, LedgerTransaction, Posting
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.verify import verify_ledger
from exchange.settings import Settings
from exchange.signing import ExchangeKeys
from settlement.models import SettlementBatch, SettlementRange
from settlement.netting import pair_legs
from settlement.runs import settle_day
from tests.integration.ledger_checks import expected_hash
from tests.integration.settlement_support import (
    DAY1,
    DAY2,
    Cast,
    SteppedCalendar,
    convert,
    cutoff_now,
    named_matrix,
    settlement_account,
)

Sessions = async_sessionmaker[AsyncSession]
HOUR = dt.timedelta(hours=1)


async def _post(
    sessions: Sessions,
    cast: Cast,
    legs: Sequence[tuple[str, int, int]],
    *,
    kind: str = "convert",
    paired: bool = True,
) -> dict[tuple[str, int], tuple[str, int]]:
    """One money transaction, legs given as (partner name, shard, amount). Returns, per leg's
    (partner name, shard), the name and shard its posting names as counterparty, as
    ``("self", 0)`` for its own account and ``("several", 0)`` for the mark of several."""
    async with sessions() as session, session.begin():
        accounts = {
            (name, shard): await settlement_account(session, getattr(cast, name), shard=shard)
            for name, shard, _ in legs
        }
        posted = await post_transaction(
            session,
            TransactionSpec(
                kind=kind,
                partner_id=cast.sky.id,
                legs=[Leg(accounts[name, shard], amount) for name, shard, amount in legs],
                paired=paired,
            ),
        )
        rows = await session.execute(
            select(Posting.account_id, Posting.counterparty_account_id).where(
                Posting.transaction_id == posted.id
            )
        )
        named = {account_id: key for key, account_id in accounts.items()}
        result: dict[tuple[str, int], tuple[str, int]] = {}
        for account_id, counterparty in rows:
            if counterparty == account_id:
                result[named[account_id]] = ("self", 0)
            elif counterparty == 0:
                result[named[account_id]] = ("several", 0)
            else:
                result[named[account_id]] = named[counterparty]
    return result


async def test_the_engine_names_each_legs_counterparty(sessions: Sessions, cast: Cast) -> None:
    # A conversion: SKY alone owes, so the others' legs name SKY's debited account.
    assert await _post(sessions, cast, [("sky", 0, -1_100), ("htl", 0, 1_000), ("op", 0, 100)]) == {
        ("sky", 0): ("self", 0),
        ("htl", 0): ("sky", 0),
        ("op", 0): ("sky", 0),
    }
    # Its reversal: SKY alone is owed, so the others' legs name SKY's credited account.
    assert await _post(
        sessions, cast, [("sky", 1, 1_100), ("htl", 0, -1_000), ("op", 0, -100)], kind="reverse"
    ) == {("sky", 1): ("self", 0), ("htl", 0): ("sky", 1), ("op", 0): ("sky", 1)}
    # The single debtor over two shards: its lowest debited account.
    low, high = await _shards(sessions, cast.sky, 2, 3)
    legs = [("sky", 3, -600), ("sky", 2, -400), ("htl", 1, 1_000)]
    lowest = ("sky", 2) if low < high else ("sky", 3)
    assert (await _post(sessions, cast, legs))["htl", 1] == lowest
    # One partner on both sides, and a transaction marked unpaired: nobody to pair with.
    assert await _post(sessions, cast, [("sky", 0, -5), ("sky", 1, 5)]) == {
        ("sky", 0): ("self", 0),
        ("sky", 1): ("self", 0),
    }
    assert await _post(
        sessions, cast, [("sky", 0, -5), ("htl", 0, 5)], kind="settle", paired=False
    ) == {("sky", 0): ("self", 0), ("htl", 0): ("self", 0)}
    # Several partners on both sides, or a leg against its partner's net on the many side:
    # paired at settlement, transaction by transaction.
    assert set(
        (
            await _post(
                sessions, cast, [("sky", 0, -100), ("htl", 0, -50), ("ret", 0, 120), ("aid", 0, 30)]
            )
        ).values()
    ) == {("several", 0)}
    assert set(
        (await _post(sessions, cast, [("sky", 0, -100), ("htl", 0, 150), ("htl", 1, -50)])).values()
    ) == {("several", 0)}
    # A partner whose legs net to zero pairs with no one; the others pair as usual.
    assert await _post(
        sessions, cast, [("sky", 0, -100), ("htl", 0, 100), ("ret", 0, 7), ("ret", 1, -7)]
    ) == {
        ("sky", 0): ("self", 0),
        ("htl", 0): ("sky", 0),
        ("ret", 0): ("self", 0),
        ("ret", 1): ("self", 0),
    }
    async with sessions() as session:
        report = await verify_ledger(session)
    assert report.ok, report.as_dict()


async def _shards(sessions: Sessions, partner: PartnerInfo, *shards: int) -> list[int]:
    async with sessions() as session:
        return [await settlement_account(session, partner, shard=shard) for shard in shards]


async def _ranges(sessions: Sessions, batch_id: int) -> dict[int, tuple[int | None, int]]:
    async with sessions() as session:
        rows = await session.execute(
            select(
                SettlementRange.account_id, SettlementRange.after_seq, SettlementRange.through_seq
            ).where(SettlementRange.batch_id == batch_id)
        )
        return {account_id: (after, through) for account_id, after, through in rows}


async def test_a_cutoff_in_the_middle_of_the_chains_splits_them_there(
    sessions: Sessions, settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    """Three conversions before the cutoff and four after, on the same three accounts: the
    first day's ranges end at seq 3, the second's run from 3 to 7, and each day owes exactly
    its own conversions."""
    for _ in range(3):
        await convert(sessions, cast.sky, cast.htl, cast.op, 1_000, 10)
    cutoff = await cutoff_now()
    for _ in range(4):
        await convert(sessions, cast.sky, cast.htl, cast.op, 2_000, 20)
    calendar = SteppedCalendar(DAY1, cutoff, HOUR)
    day1 = await settle_day(sessions, DAY1, settings=settings, keys=keys, calendar=calendar)
    sky, htl, op = [
        (await _shards(sessions, partner, 0))[0] for partner in (cast.sky, cast.htl, cast.op)
    ]
    assert await _ranges(sessions, day1.id) == {sky: (None, 3), htl: (None, 3), op: (None, 3)}
    assert day1.postings == 9
    assert named_matrix(cast, day1.obligations) == {("SKY", "HTL"): 3_000, ("SKY", "OP"): 30}

    day2 = await settle_day(
        sessions, DAY2, settings=settings, keys=keys, calendar=calendar,
        now=calendar.cutoff_at(DAY2),
    )  # fmt: skip
    assert await _ranges(sessions, day2.id) == {sky: (3, 7), htl: (3, 7), op: (3, 7)}
    assert day2.postings == 12
    assert named_matrix(cast, day2.obligations) == {("SKY", "HTL"): 8_000, ("SKY", "OP"): 80}


async def test_the_database_keeps_each_accounts_ranges_one_chain(
    sessions: Sessions, settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    for _ in range(3):
        await convert(sessions, cast.sky, cast.htl, cast.op, 1_000, 10)
    calendar = SteppedCalendar(DAY1, await cutoff_now(), HOUR)
    day1 = await settle_day(sessions, DAY1, settings=settings, keys=keys, calendar=calendar)
    (sky,) = await _shards(sessions, cast.sky, 0)
    assert (await _ranges(sessions, day1.id))[sky] == (None, 3)

    async def attempt(after: int | None, through: int) -> bool:
        """Write a range of SKY's account for a batch of its own; True if the database took it
        (the transaction is rolled back either way)."""
        async with sessions() as session:
            try:
                async with session.begin():
                    batch_id = await session.scalar(
                        insert(SettlementBatch)
                        .values(
                            business_date=DAY2, cutoff_at=utcnow(), status="open",
                            currency="EUR", minor_exponent=2, postings=0,
                        )
                        .returning(SettlementBatch.id)
                    )  # fmt: skip
                    await session.execute(
                        insert(SettlementRange).values(
                            batch_id=batch_id, account_id=sky, after_seq=after, through_seq=through
                        )
                    )
                    await session.flush()
                    raise _Accepted
            except _Accepted:
                return True
            except DBAPIError:
                return False

    assert await attempt(3, 5)  # the range that follows on: taken
    assert not await attempt(None, 5)  # a second first range: overlaps seq 1..3
    assert not await attempt(2, 5)  # starts where no range ended: overlaps seq 3
    assert not await attempt(4, 5)  # starts where no range ended: leaves seq 4 out
    assert not await attempt(3, 3)  # goes nowhere
    assert not await attempt(3, 2)  # goes back


class _Accepted(Exception):
    pass


async def test_transactions_with_several_partners_on_both_sides_are_paired_by_transaction(
    sessions: Sessions, settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    await convert(sessions, cast.sky, cast.htl, cast.op, 1_000_000, 10_000)
    several = [("sky", 0, -100_000), ("htl", 0, -50_000), ("ret", 0, 120_000), ("aid", 0, 30_000)]
    await _post(sessions, cast, several)
    await _post(sessions, cast, several)
    calendar = SteppedCalendar(DAY1, await cutoff_now(), HOUR)
    day1 = await settle_day(sessions, DAY1, settings=settings, keys=keys, calendar=calendar)

    expected: dict[tuple[str, str], int] = defaultdict(int)
    expected["SKY", "HTL"] += 1_000_000
    expected["SKY", "OP"] += 10_000
    for _ in range(2):
        amounts = {str(getattr(cast, name).id): amount for name, _, amount in several}
        for o in pair_legs(amounts):
            expected[cast.name_of(uuid.UUID(o.debtor)), cast.name_of(uuid.UUID(o.creditor))] += (
                o.amount_micros
            )
    assert named_matrix(cast, day1.obligations) == dict(expected)
    assert day1.postings == 3 + 4 + 4


async def _write_stamped(
    engine: AsyncEngine,
    session_accounts: dict[int, int],
    initiator: PartnerInfo,
    created_at: dt.datetime,
) -> None:
    """A money transaction written directly with the stamp ``created_at``, as a clock that
    stepped back would stamp it: its postings marked as having several counterparties (so it is
    paired by transaction), and the account heads moved to match."""
    transaction_id = uuid7()
    async with engine.begin() as connection:
        heads = {
            row.id: row
            for row in await connection.execute(
                select(Account.id, Account.balance, Account.seq, Account.head_hash)
                .where(Account.id.in_(sorted(session_accounts)))
                .with_for_update()
            )
        }
        await connection.execute(
            insert(LedgerTransaction).values(
                id=transaction_id,
                kind="convert",
                partner_id=initiator.id,
                points=1,
                created_at=created_at,
            )
        )
        rows = []
        for account_id, amount in session_accounts.items():
            head = heads[account_id]
            seq, balance = head.seq + 1, head.balance + amount
            previous = bytes(head.head_hash) if head.seq else GENESIS_HASH
            digest = expected_hash(
                account_id, seq, transaction_id, amount, balance, previous, SEVERAL_COUNTERPARTIES
            )
            rows.append(
                {
                    "transaction_id": transaction_id, "account_id": account_id, "ledger": "EUR",
                    "seq": seq, "amount": amount, "balance_after": balance,
                    "prev_hash": previous, "hash": digest, "created_at": created_at,
                    "counterparty_account_id": SEVERAL_COUNTERPARTIES,
                }
            )  # fmt: skip
            await connection.execute(
                update(Account)
                .where(Account.id == account_id)
                .values(balance=balance, seq=seq, head_hash=digest)
            )
        await connection.execute(insert(Posting).values(rows))


async def test_a_transaction_stamped_out_of_order_is_paired_once_when_whole(
    engine: AsyncEngine, sessions: Sessions, settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    """Postings stamped against their order (a clock that stepped back) may run across a
    cutoff. Written in this order, stamped late (after the first cutoff), early, late:

        A  HTL -1 000, OP +1 000   late   (HTL seq 1, OP seq 1)
        B  SKY -505, HTL +500, OP +5  early  (SKY seq 1, HTL seq 2, OP seq 2)
        C  HTL -7, SKY +7          late   (HTL seq 3, SKY seq 2)

    The first day takes OP 1..2 and SKY 1 (each chain up to its last early posting it can
    bisect to), so A and B are each cut in two. Each posting is still settled once, the first
    day pairs neither half-transaction, and the second, which takes the rest, pairs both."""
    sky, htl, op = [(await _shards(sessions, p, 0))[0] for p in (cast.sky, cast.htl, cast.op)]
    cutoff = utcnow()
    late, early = cutoff + dt.timedelta(seconds=1), cutoff - dt.timedelta(seconds=1)
    await _write_stamped(engine, {htl: -1_000, op: 1_000}, cast.htl, late)
    await _write_stamped(engine, {sky: -505, htl: 500, op: 5}, cast.sky, early)
    await _write_stamped(engine, {htl: -7, sky: 7}, cast.htl, late)
    calendar = SteppedCalendar(DAY1, cutoff, HOUR)
    day1 = await settle_day(
        sessions, DAY1, settings=settings, keys=keys, calendar=calendar, now=late
    )
    assert await _ranges(sessions, day1.id) == {op: (None, 2), sky: (None, 1)}
    assert (day1.postings, day1.obligations) == (3, ())
    day2 = await settle_day(
        sessions, DAY2, settings=settings, keys=keys, calendar=calendar,
        now=calendar.cutoff_at(DAY2),
    )  # fmt: skip
    assert await _ranges(sessions, day2.id) == {htl: (None, 3), sky: (1, 2)}
    assert day2.postings == 4
    assert named_matrix(cast, day2.obligations) == {
        ("HTL", "OP"): 1_000,
        ("SKY", "HTL"): 500,
        ("SKY", "OP"): 5,
        ("HTL", "SKY"): 7,
    }
