"""Settlement of real postings, on SQLite and PostgreSQL: the worked example of
``settlement_support`` (three brands, a charity, the operator, two business days) through
``settle_day``, then statements, paying, and every refusal."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
import uuid
from dataclasses import replace

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.errors import (
    SettlementAlreadyPaid,
    SettlementNotDue,
    SettlementNotFound,
    SettlementOutOfOrder,
    StatementNotFound,
)
from exchange.ledger.engine import Leg, TransactionSpec, post_transaction
from exchange.ledger.models import Account, LedgerTransaction, Posting
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.verify import verify_ledger
from exchange.outbox import OutboxEvent
from exchange.settings import Settings, get_settings
from exchange.signing import ExchangeKeys, verify_document
from settlement.calendar import BusinessCalendar
from settlement.cli import settlement_group
from settlement.netting import pair_legs
from settlement.order import due_dates
from settlement.payments import mark_paid
from settlement.runs import settle_day, settle_due
from settlement.scheduler import run_scheduler
from settlement.statements import (
    CSV_COLUMNS,
    get_statement,
    list_statements,
    statement_csv,
    verify_statement_csv,
)
from settlement.views import BatchView, get_batch, list_batches
from tests.integration.settlement_support import (
    DAY1,
    DAY1_INSTRUCTIONS,
    DAY1_MATRIX,
    DAY1_POSITIONS,
    DAY2,
    DAY2_INSTRUCTIONS,
    DAY2_MATRIX,
    DAY2_POSITIONS,
    SETTLED,
    Cast,
    SteppedCalendar,
    convert,
    cutoff_now,
    named_instructions,
    named_matrix,
    named_positions,
    post_day1,
    post_day2,
    settlement_account,
)

HOUR = dt.timedelta(hours=1)


async def _two_days(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, keys: ExchangeKeys, cast: Cast
) -> tuple[SteppedCalendar, BatchView, BatchView]:
    await post_day1(sessions, cast)
    calendar = SteppedCalendar(DAY1, await cutoff_now(), HOUR)
    day1 = await settle_day(sessions, DAY1, settings=settings, keys=keys, calendar=calendar)
    await post_day2(sessions, cast)
    day2 = await settle_day(
        sessions,
        DAY2,
        settings=settings,
        keys=keys,
        calendar=calendar,
        now=calendar.cutoff_at(DAY2),
    )
    return calendar, day1, day2


async def test_worked_example_two_days(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    _, day1, day2 = await _two_days(sessions, settings, keys, cast)

    assert (day1.status, day1.postings, day1.currency, day1.minor_exponent) == (
        "complete", 14, "EUR", 2,
    )  # fmt: skip
    assert named_matrix(cast, day1.obligations) == DAY1_MATRIX
    assert named_positions(cast, day1.positions) == DAY1_POSITIONS
    assert named_instructions(cast, day1.instructions) == DAY1_INSTRUCTIONS

    assert (day2.status, day2.postings) == ("complete", 5)
    assert named_matrix(cast, day2.obligations) == DAY2_MATRIX
    assert named_positions(cast, day2.positions) == DAY2_POSITIONS
    assert named_instructions(cast, day2.instructions) == DAY2_INSTRUCTIONS

    # Nothing lost over the run, to the micro: payouts and carries account for every net.
    for name in DAY1_POSITIONS:
        nets = DAY1_POSITIONS[name][2] + DAY2_POSITIONS[name][2]
        paid = (DAY1_POSITIONS[name][4] + DAY2_POSITIONS[name][4]) * 10_000
        assert paid + DAY2_POSITIONS[name][5] == nets

    async with sessions() as session:
        # Each participant's net is what its settlement accounts moved in the batch.
        moved = await session.execute(
            text(
                f"SELECT a.partner_id, sum(e.amount) FROM ({SETTLED}) e"
                " JOIN account a ON a.id = e.account_id WHERE e.batch_id = :b"
                " GROUP BY a.partner_id"
            ),
            {"b": day1.id},
        )
        assert {cast.name_of(uuid.UUID(str(p))): int(a) for p, a in moved} == {
            name: position[2] for name, position in DAY1_POSITIONS.items()
        }
        events = await session.execute(
            select(OutboxEvent.partner_id, OutboxEvent.event_type, OutboxEvent.payload)
        )
        ready = sorted((cast.name_of(p), t) for p, t, _ in events)
    assert ready == sorted([(name, "settlement.ready") for name in DAY1_POSITIONS] * 2)


async def test_running_a_day_again_returns_the_same_batch(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    calendar, day1, day2 = await _two_days(sessions, settings, keys, cast)
    again = await settle_day(sessions, DAY1, settings=settings, keys=keys, calendar=calendar)
    assert again == day1
    later = calendar.cutoff_at(DAY2) + HOUR
    assert await settle_due(
        sessions, settings=settings, keys=keys, calendar=calendar, now=later - HOUR
    ) == []  # fmt: skip
    async with sessions() as session:
        assert await session.scalar(text(f"SELECT count(*) FROM ({SETTLED}) e")) == 19
        assert await get_batch(session, DAY2) == day2
        summaries = await list_batches(session)
    assert [b.business_date for b in summaries] == [DAY2, DAY1]
    assert summaries[1].as_dict() == {
        key: value
        for key, value in day1.as_dict().items()
        if key
        in ("id", "business_date", "cutoff_at", "status", "postings", "completed_at", "paid_at")
    }


async def test_days_settle_in_order_and_only_once_ended(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    await post_day1(sessions, cast)
    calendar = SteppedCalendar(DAY1, await cutoff_now(), HOUR)
    with pytest.raises(SettlementNotDue):
        await settle_day(sessions, DAY2, settings=settings, keys=keys, calendar=calendar)
    day3 = DAY2 + dt.timedelta(days=1)
    late = calendar.cutoff_at(day3) + dt.timedelta(minutes=1)  # past the grace period
    with pytest.raises(SettlementOutOfOrder) as refused:
        await settle_day(sessions, DAY2, settings=settings, keys=keys, calendar=calendar, now=late)
    assert refused.value.extra == {"next_business_date": "2026-11-20"}

    async with sessions() as session:
        assert await due_dates(session, settings=settings, calendar=calendar, now=late) == [
            DAY1,
            DAY2,
            day3,
        ]
    # Catching up: every ended day, in order; the days with nothing carry the carries on.
    settled = await settle_due(sessions, settings=settings, keys=keys, calendar=calendar, now=late)
    assert [b.business_date for b in settled] == [DAY1, DAY2, day3]
    assert named_positions(cast, settled[0].positions) == DAY1_POSITIONS
    assert settled[1].postings == settled[2].postings == 0
    carries = {name: p[5] for name, p in DAY1_POSITIONS.items()}
    assert {k: v[3] for k, v in named_positions(cast, settled[1].positions).items()} == carries
    with pytest.raises(SettlementOutOfOrder):
        await settle_day(
            sessions, day3 + dt.timedelta(days=2), settings=settings, keys=keys,
            calendar=calendar, now=late + 3 * HOUR,
        )  # fmt: skip


async def test_statements_are_signed_and_private(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    _, day1, _ = await _two_days(sessions, settings, keys, cast)
    outsider = await _outsider(sessions, settings)
    async with sessions() as session:
        sky_doc, sky_sig = await get_statement(session, cast.sky.id, DAY1)
        aid_doc, aid_sig = await get_statement(session, cast.aid.id, DAY1)
        summaries = await list_statements(session, cast.sky.id)
        # Only a participant's own statement: another's is "not found", as is a day it missed.
        with pytest.raises(StatementNotFound):
            await get_statement(session, outsider.id, DAY1)
        with pytest.raises(StatementNotFound):
            await get_statement(session, cast.sky.id, DAY2 + dt.timedelta(days=1))

    public = keys.published[sky_sig["key_id"]]
    assert verify_document(sky_doc, sky_sig, public)
    assert verify_document(aid_doc, aid_sig, public)
    assert not verify_document({**sky_doc, "payout_minor": -7_174}, sky_sig, public)
    assert not verify_document(sky_doc, aid_sig, public)

    name = cast.name_of
    assert sky_doc["participant"] == {
        "id": str(cast.sky.id), "kind": "brand", "name": "Sky Air", "currency": "SKY",
    }  # fmt: skip
    assert (sky_doc["business_date"], sky_doc["currency"], sky_doc["batch_id"]) == (
        "2026-11-20", "EUR", day1.id,
    )  # fmt: skip
    assert {
        name(uuid.UUID(c["partner_id"])): (c["owed_micros"], c["owing_micros"])
        for c in sky_doc["counterparties"]
    } == {
        "HTL": (0, 61_872_525),
        "OP": (0, 1_234_500),
        "AID": (12_345_000, 24_690_000),
        "RET": (3_703_500, 0),
    }
    assert (
        sky_doc["gross_owed_micros"], sky_doc["gross_owing_micros"], sky_doc["net_micros"],
        sky_doc["carry_in_micros"], sky_doc["payout_minor"], sky_doc["carry_out_micros"],
    ) == DAY1_POSITIONS["SKY"]  # fmt: skip
    assert [i["amount_minor"] for i in sky_doc["instructions"]] == [5_171, 1_312, 548, 144]
    assert sky_doc["owed_to_charities"] == [
        {
            "charity_id": str(cast.aid.id),
            "charity_name": "Aid",
            "donated_micros": 24_690_000,
            "refunded_micros": 12_345_000,
            "net_micros": 12_345_000,
        }
    ]
    assert sorted(aid_doc["donations_by_brand"], key=lambda d: d["currency"]) == [
        {
            "brand_id": str(cast.ret.id), "brand_name": "Shop", "currency": "RET",
            "donations": 1, "donated_points": 777, "reversals": 0, "reversed_points": 0,
            "donated_micros": 777_777, "refunded_micros": 0, "net_micros": 777_777,
        },
        {
            "brand_id": str(cast.sky.id), "brand_name": "Sky Air", "currency": "SKY",
            "donations": 1, "donated_points": 2_000, "reversals": 1, "reversed_points": 1_000,
            "donated_micros": 24_690_000, "refunded_micros": 12_345_000, "net_micros": 12_345_000,
        },
    ]  # fmt: skip
    assert [i["payee_id"] for i in aid_doc["instructions"]] == [str(cast.aid.id)]
    assert [(s.business_date, s.payout_minor, s.status) for s in summaries] == [
        (DAY2, 200, "complete"),
        (DAY1, -7_175, "complete"),
    ]

    csv_text = statement_csv(aid_doc, keys)
    assert verify_statement_csv(csv_text, keys.published)
    assert not verify_statement_csv(csv_text.replace("1312", "1313"), keys.published)
    lines = csv_text.split("\r\n")
    assert lines[0] == ",".join(CSV_COLUMNS)
    assert lines[-2].startswith(f"#signature,{keys.key_id},ed25519,") and lines[-1] == ""
    rows = [
        {key: value for key, value in row.items() if value}
        for row in csv.DictReader(io.StringIO("\r\n".join(lines[:-2])))
    ]
    aid, ret, sky = str(cast.aid.id), str(cast.ret.id), str(cast.sky.id)
    day = {"business_date": "2026-11-20", "currency": "EUR", "participant_id": aid}
    assert rows == [
        {
            "record": "position", **day, "owed_micros": "25467777", "owing_micros": "12345000",
            "net_micros": "13122777", "carry_in_micros": "0", "payout_minor": "1312",
            "carry_out_micros": "2777",
        },
        *sorted(
            [
                {
                    "record": "counterparty", **day, "counterparty_id": ret,
                    "counterparty_kind": "brand", "counterparty_name": "Shop",
                    "owed_micros": "777777", "owing_micros": "0", "net_micros": "777777",
                    "donations": "1", "donated_points": "777", "reversals": "0",
                    "reversed_points": "0",
                },
                {
                    "record": "counterparty", **day, "counterparty_id": sky,
                    "counterparty_kind": "brand", "counterparty_name": "Sky Air",
                    "owed_micros": "24690000", "owing_micros": "12345000",
                    "net_micros": "12345000", "donations": "1", "donated_points": "2000",
                    "reversals": "1", "reversed_points": "1000",
                },
            ],
            key=lambda row: row["counterparty_id"],
        ),
        {
            "record": "instruction", **day, "instruction_seq": "2", "payer_id": sky,
            "payee_id": aid, "amount_minor": "1312",
        },
    ]  # fmt: skip


async def _outsider(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> PartnerInfo:
    from tests.conftest import make_partner

    return await make_partner(sessions, settings, "brand", "Elsewhere", "ELS")


async def test_marking_paid_books_the_payouts_and_freezes_the_batch(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    await post_day1(sessions, cast)
    calendar = SteppedCalendar(DAY1, await cutoff_now(), HOUR)
    day1 = await settle_day(sessions, DAY1, settings=settings, keys=keys, calendar=calendar)
    async with sessions() as session, session.begin():
        paid = await mark_paid(session, DAY1)
    assert (paid.status, paid.positions, paid.instructions) == (
        "paid", day1.positions, day1.instructions,
    )  # fmt: skip
    assert paid.paid_at is not None and paid.settle_transaction_id is not None
    async with sessions() as session, session.begin():
        with pytest.raises(SettlementAlreadyPaid):
            await mark_paid(session, DAY1)
        with pytest.raises(SettlementNotFound):
            await mark_paid(session, DAY2)

    # The settle transaction is on the money ledger between the two cutoffs, yet day 2 leaves it.
    await post_day2(sessions, cast)
    day2 = await settle_day(
        sessions, DAY2, settings=settings, keys=keys, calendar=calendar,
        now=calendar.cutoff_at(DAY2),
    )  # fmt: skip
    assert day2.postings == 5
    assert named_positions(cast, day2.positions) == DAY2_POSITIONS
    async with sessions() as session, session.begin():
        await mark_paid(session, DAY2)

    async with sessions() as session:
        settle = await session.scalar(
            select(func.count())
            .select_from(Posting)
            .join(LedgerTransaction, LedgerTransaction.id == Posting.transaction_id)
            .where(LedgerTransaction.kind == "settle")
        )
        assert settle == 5 + 4  # day 1: five payouts; day 2: four (RET's is zero)
        # Paid out, each settlement account keeps exactly its carry.
        balances = await session.execute(
            select(Account.partner_id, func.sum(Account.balance))
            .where(Account.kind == "settlement")
            .group_by(Account.partner_id)
        )
        assert {cast.name_of(p): int(b) for p, b in balances} == {
            name: position[5] for name, position in DAY2_POSITIONS.items()
        }
        report = await verify_ledger(session)
        assert report.ok, report.as_dict()

    for statement in (
        "UPDATE settlement_batch SET postings = 0",
        "UPDATE settlement_position SET payout_minor = 0",
        "DELETE FROM settlement_range",
        "UPDATE settlement_range SET through_seq = through_seq + 1",
        "DELETE FROM settlement_batch",
    ):
        async with sessions() as session:
            with pytest.raises(DBAPIError):
                async with session.begin():
                    await session.execute(text(statement))


async def test_a_partner_joining_later_is_settled_from_its_first_posting(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    await post_day1(sessions, cast)
    calendar = SteppedCalendar(DAY1, await cutoff_now(), HOUR)
    await settle_day(sessions, DAY1, settings=settings, keys=keys, calendar=calendar)
    newcomer = await _outsider(sessions, settings)
    await convert(sessions, cast.sky, newcomer, cast.op, 1_000_000, 0)
    day2 = await settle_day(
        sessions, DAY2, settings=settings, keys=keys, calendar=calendar,
        now=calendar.cutoff_at(DAY2),
    )  # fmt: skip
    assert day2.postings == 2
    assert [(o.debtor_id, o.creditor_id, o.amount_micros) for o in day2.obligations] == [
        (cast.sky.id, newcomer.id, 1_000_000)
    ]
    payouts = {p.partner_id: (p.net_micros, p.payout_minor) for p in day2.positions}
    assert payouts[newcomer.id] == (1_000_000, 100)


async def test_the_operator_commands(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    keys: ExchangeKeys,
    cast: Cast,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    await post_day1(sessions, cast)
    cutoff = await cutoff_now()
    env = {
        "EXCHANGE_DATA_DIR": str(settings.data_dir),
        "EXCHANGE_DATABASE_URL": settings.database_url or "",
        "EXCHANGE_AUTO_MIGRATE": "0",
        "EXCHANGE_SETTLEMENT_GRACE_SECONDS": "0",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    def invoke(*args: str) -> tuple[int, str, str]:
        get_settings.cache_clear()
        try:
            result = CliRunner().invoke(settlement_group, list(args))
        finally:
            get_settings.cache_clear()
        return result.exit_code, result.stdout, result.stderr

    # By the real calendar (UTC days) the postings are today's, which has not ended: nothing
    # is due, and naming the day is refused with a problem on stderr.
    code, out, _ = await asyncio.to_thread(invoke, "run")
    assert (code, json.loads(out)) == (0, [])
    today = utcnow().date().isoformat()
    code, _, err = await asyncio.to_thread(invoke, "run", "--date", today)
    # The problem is the last line on stderr, after the progress bar.
    assert code == 1 and json.loads(err.splitlines()[-1])["type"] == "settlement-not-due"

    calendar = SteppedCalendar(DAY1, cutoff, HOUR)
    day1 = await settle_day(sessions, DAY1, settings=settings, keys=keys, calendar=calendar)
    code, out, _ = await asyncio.to_thread(invoke, "show", "2026-11-20")
    assert code == 0 and json.loads(out) == day1.as_dict()

    code, out, _ = await asyncio.to_thread(invoke, "mark-paid", "2026-11-20")
    paid = json.loads(out)
    assert (
        code == 0 and paid["status"] == "paid" and paid["positions"] == day1.as_dict()["positions"]
    )
    code, _, err = await asyncio.to_thread(invoke, "mark-paid", "2026-11-20")
    assert code == 1 and json.loads(err) == {
        "type": "settlement-already-paid",
        "detail": f"business date 2026-11-20 was marked paid at {paid['paid_at']}",
        "business_date": "2026-11-20",
    }
    code, _, err = await asyncio.to_thread(invoke, "show", "2026-11-19")
    assert code == 1 and json.loads(err)["type"] == "settlement-not-found"


async def test_transactions_the_exchange_does_not_make_still_pair_exactly(
    sessions: async_sessionmaker[AsyncSession], settings: Settings, keys: ExchangeKeys, cast: Cast
) -> None:
    """Legs the services never write, but the ledger allows: several partners on both sides
    (paired greedily, as ``pair_legs`` does), and a partner on both sides of a transaction
    through two of its shards (it owes only its net)."""

    async def post(*legs: tuple[PartnerInfo, int, int]) -> None:
        async with sessions() as session, session.begin():
            await post_transaction(
                session,
                TransactionSpec(
                    kind="convert",
                    partner_id=cast.sky.id,
                    legs=[
                        Leg(await settlement_account(session, partner, shard=shard), amount)
                        for partner, amount, shard in legs
                    ],
                ),
            )

    await post((cast.sky, -5_000_000, 0), (cast.htl, -7_000_000, 0), (cast.ret, 4_000_000, 0),
               (cast.aid, 8_000_000, 0))  # fmt: skip
    await post((cast.sky, -10_000_000, 0), (cast.sky, 3_000_000, 1), (cast.htl, 7_000_000, 0))
    await post((cast.op, 10_000_000, 0), (cast.op, -3_000_000, 1), (cast.ret, -7_000_000, 0))
    calendar = SteppedCalendar(DAY1, await cutoff_now(), HOUR)
    batch = await settle_day(sessions, DAY1, settings=settings, keys=keys, calendar=calendar)

    several = pair_legs(
        {str(cast.sky.id): -5_000_000, str(cast.htl.id): -7_000_000,
         str(cast.ret.id): 4_000_000, str(cast.aid.id): 8_000_000}
    )  # fmt: skip
    expected: dict[tuple[str, str], int] = {("SKY", "HTL"): 7_000_000, ("RET", "OP"): 7_000_000}
    for o in several:
        key = (cast.name_of(uuid.UUID(o.debtor)), cast.name_of(uuid.UUID(o.creditor)))
        expected[key] = expected.get(key, 0) + o.amount_micros
    assert named_matrix(cast, batch.obligations) == expected
    assert {name: p[2] for name, p in named_positions(cast, batch.positions).items()} == {
        "SKY": -12_000_000, "HTL": 0, "RET": -3_000_000, "AID": 8_000_000, "OP": 7_000_000,
    }  # fmt: skip


async def test_the_scheduler_settles_each_day_after_its_cutoff(
    engine: AsyncEngine,
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    keys: ExchangeKeys,
    cast: Cast,
) -> None:
    # Business days of the real calendar that end (UTC) a second or two from now.
    cutoff = (utcnow() + dt.timedelta(seconds=2)).replace(microsecond=0)
    settings = replace(
        settings,
        scheduler=True,
        settlement_cutoff=cutoff.strftime("%H:%M:%S"),
        settlement_grace_seconds=0,
        settlement_poll_seconds=1,
        webhook_poll_seconds=1,
    )
    postings = await post_day1(sessions, cast)
    business_date = BusinessCalendar.from_settings(settings).business_date_of(utcnow())
    scheduler = asyncio.create_task(run_scheduler(engine, settings, keys))
    try:
        async with asyncio.timeout(20):
            while True:
                await asyncio.sleep(0.2)
                async with sessions() as session:
                    batches = await list_batches(session)
                if batches:
                    break
    finally:
        scheduler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler
    assert [(b.business_date, b.postings) for b in batches] == [(business_date, postings)]
    assert utcnow() >= cutoff
    assert await run_scheduler(engine, replace(settings, scheduler=False), keys) is None
