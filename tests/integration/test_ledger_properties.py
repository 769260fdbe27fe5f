"""Random sequences of ledger operations, against a real database and a model of what they must do.

Hypothesis drives a state machine. Each example gets a fresh database with two brands (SKY, HTL;
four issuance shards each), ann and ben enrolled at both with 1 000 points, and runs up to 20
operations: enrol, issue, redeem, transfer, hold, capture, void, reverse. Debits ask for a share of
what may be taken, so most succeed and some ask for too much; dan exists only once enrolled; a
transfer is now and then to oneself, and a capture, void or reversal now and then comes from the
other brand. After every operation:

* the outcome is the model's: the same refusal (the same error class), or success;
* a refusal changed nothing (row counts, account heads, holds);
* every ledger sums to zero, over the postings and over the account balances, and so does every
  transaction in each ledger;
* no member account is negative, and no member's held points exceed its balance;
* each member's balance and held points are the model's, held = the active holds, the service
  reports available = balance - held, and each brand's issuance shards add up to minus its
  members' points;
* ``verify_ledger`` finds nothing.

A pure property of ``reversal_legs`` closes the file: partial reversals add up exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule, run_state_machine_as_test
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.db import create_engine
from exchange.errors import (
    DomainError,
    HoldExceeded,
    HoldNotActive,
    HoldNotFound,
    InsufficientPoints,
    InvalidInput,
    MemberNotFound,
    NotReversible,
    ReversalExceedsOriginal,
    TransactionNotFound,
)
from exchange.ledger import holds, operations, reads, reversal
from exchange.ledger.members import enrol_member
from exchange.ledger.models import Account, Member
from exchange.ledger.parties import PartnerInfo
from exchange.settings import Settings
from partners.service import create_partner
from tests.conftest import POSTGRES_URL, base_settings
from tests.integration.ledger_checks import assert_ledger_whole, snapshot

ENROLLED = ("ann", "ben")
MEMBERS = (*ENROLLED, "dan")
BRANDS = ("SKY", "HTL")
REVERSIBLE = {"issue", "redeem", "transfer", "capture"}
_databases = itertools.count()
account_t = Account.__table__
member_t = Member.__table__

# --- the operations ------------------------------------------------------------------------------
# Member operations are (kind, brand, member..., points). Operations on an earlier hold or
# transaction are (kind, pick, foreign, points or None for "all of it"): ``pick`` chooses it
# (modulo how many there are) and ``foreign`` makes the other brand the caller.

brands = st.sampled_from(BRANDS)
members = st.sampled_from(MEMBERS)
picks = st.integers(0, 50)
foreign = st.integers(0, 7).map(lambda n: n == 0)  # now and then
# A debit is a share of what it may take (the member's available points, the hold, what remains
# to reverse), so that most succeed, and one in five or so asks for too much on purpose.
percents = st.integers(1, 125)


# --- the model -----------------------------------------------------------------------------------


@dataclass
class ModelHold:
    id: uuid.UUID
    brand: str
    member: str
    points: int
    status: str = "active"


@dataclass
class ModelTransaction:
    id: uuid.UUID
    brand: str
    kind: str
    points: int
    moves: dict[str, int]
    """member -> points credited (+) or debited (-)"""
    reversed: int = 0


@dataclass
class Model:
    balance: dict[tuple[str, str], int] = field(default_factory=dict)
    holds: list[ModelHold] = field(default_factory=list)
    transactions: list[ModelTransaction] = field(default_factory=list)

    def held(self, brand: str, member: str) -> int:
        return sum(
            h.points
            for h in self.holds
            if (h.brand, h.member, h.status) == (brand, member, "active")
        )

    def available(self, brand: str, member: str) -> int:
        return self.balance[brand, member] - self.held(brand, member)

    def expect(self, op: tuple[Any, ...]) -> type[DomainError] | None:
        """The refusal the operation must meet, or None if it must succeed."""
        kind, b = op[0], self.brand_for(op)
        enrolled = {m for (bb, m) in self.balance if bb == b}
        if kind in ("issue", "redeem", "hold"):
            _, _, m, p = op
            if m not in enrolled:
                return MemberNotFound
            if kind != "issue" and p > self.available(b, m):
                return InsufficientPoints
        elif kind == "transfer":
            _, _, source, target, p = op
            if source == target:
                return InvalidInput
            if source not in enrolled or target not in enrolled:
                return MemberNotFound
            if p > self.available(b, source):
                return InsufficientPoints
        elif kind in ("capture", "void"):
            hold = self.hold_for(op)
            if hold is None or hold.brand != b:
                return HoldNotFound
            if hold.status != "active":
                return HoldNotActive
            if kind == "capture" and op[3] is not None and op[3] > hold.points:
                return HoldExceeded
        elif kind == "reverse":
            original = self.transaction_for(op)
            if original is None or original.brand != b:
                return TransactionNotFound
            if original.kind not in REVERSIBLE:
                return NotReversible
            remaining = original.points - original.reversed
            amount = remaining if op[3] is None else op[3]
            if amount <= 0 or amount > remaining:
                return ReversalExceedsOriginal
            for m, moved in original.moves.items():
                if moved > 0 and amount > self.available(b, m):
                    return InsufficientPoints
        return None

    def hold_for(self, op: tuple[Any, ...]) -> ModelHold | None:
        return self.holds[op[1] % len(self.holds)] if self.holds else None

    def transaction_for(self, op: tuple[Any, ...]) -> ModelTransaction | None:
        return self.transactions[op[1] % len(self.transactions)] if self.transactions else None

    def brand_for(self, op: tuple[Any, ...]) -> str:
        """The brand that makes the call: for an earlier hold or transaction, its own brand
        (when there is none yet: SKY), or the other one when the operation is ``foreign``."""
        kind = op[0]
        if kind not in ("capture", "void", "reverse"):
            return str(op[1])
        earlier = self.transaction_for(op) if kind == "reverse" else self.hold_for(op)
        own = earlier.brand if earlier else BRANDS[0]
        return own if not op[2] else next(b for b in BRANDS if b != own)


# --- playing a sequence --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fresh_database(
    db_kind: str, workdir: Path, sqlite_template: Path, postgres_template: str | None
) -> AsyncIterator[Settings]:
    """A migrated database of its own for one example."""
    number = next(_databases)
    if db_kind == "sqlite":
        directory = workdir / f"example-{number}"
        directory.mkdir()
        shutil.copy(sqlite_template, directory / "exchange.sqlite3")
        yield base_settings(directory, None)
        return
    name = f"exchange_prop_{number}_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(POSTGRES_URL)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
        try:
            yield base_settings(workdir, f"{POSTGRES_URL.rpartition('/')[0]}/{name}")
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def run_operation(
    s: AsyncSession, partners: dict[str, PartnerInfo], model: Model, op: tuple[Any, ...]
) -> Any:
    kind, partner = op[0], partners[model.brand_for(op)]
    if kind == "enrol":
        return await enrol_member(s, partner, op[2])
    if kind == "issue":
        return await operations.issue(s, partner, op[2], op[3])
    if kind == "redeem":
        return await operations.redeem(s, partner, op[2], op[3])
    if kind == "transfer":
        return await operations.transfer(s, partner, op[2], op[3], op[4])
    if kind == "hold":
        return await holds.place_hold(s, partner, op[2], op[3], expires_in=3600)
    if kind in ("capture", "void"):
        hold = model.hold_for(op)
        hold_id = hold.id if hold else uuid.uuid4()
        if kind == "void":
            return await holds.void_hold(s, partner, hold_id)
        return await holds.capture_hold(s, partner, hold_id, op[3])
    original = model.transaction_for(op)
    return await reversal.reverse(s, partner, original.id if original else uuid.uuid4(), op[3])


def apply(model: Model, op: tuple[Any, ...], result: Any) -> None:
    """Bring the model up to date with an operation that succeeded."""
    kind, b = op[0], model.brand_for(op)
    if kind == "enrol":
        model.balance.setdefault((b, op[2]), 0)
    elif kind in ("issue", "redeem"):
        moved = op[3] if kind == "issue" else -op[3]
        model.balance[b, op[2]] += moved
        model.transactions.append(ModelTransaction(result.id, b, kind, op[3], {op[2]: moved}))
    elif kind == "transfer":
        _, _, source, target, p = op
        model.balance[b, source] -= p
        model.balance[b, target] += p
        model.transactions.append(ModelTransaction(result.id, b, kind, p, {source: -p, target: p}))
    elif kind == "hold":
        model.holds.append(ModelHold(result.id, b, op[2], op[3]))
        model.transactions.append(ModelTransaction(result.transaction_id, b, "hold", op[3], {}))
    elif kind == "capture":
        hold = model.hold_for(op)
        assert hold is not None
        view, posted = result
        captured = hold.points if op[3] is None else op[3]
        assert (view.status, view.captured) == ("captured", captured)
        hold.status = "captured"
        model.balance[b, hold.member] -= captured
        model.transactions.append(
            ModelTransaction(posted.id, b, "capture", captured, {hold.member: -captured})
        )
    elif kind == "void":
        hold = model.hold_for(op)
        assert hold is not None
        hold.status = "voided"
        model.transactions.append(
            ModelTransaction(result.transaction_id, b, "void", hold.points, {})
        )
    else:
        original = model.transaction_for(op)
        assert original is not None
        amount = original.points - original.reversed if op[3] is None else op[3]
        assert result.points == amount
        original.reversed += amount
        for m, moved in original.moves.items():
            model.balance[b, m] -= amount if moved > 0 else -amount
        model.transactions.append(ModelTransaction(result.id, b, "reverse", amount, {}))


async def assert_matches_model(
    s: AsyncSession, partners: dict[str, PartnerInfo], model: Model, op: tuple[Any, ...]
) -> None:
    # Whole: zero-sums, nothing negative, each account's held == its active holds, verify ok.
    await assert_ledger_whole(s)
    accounts = {
        (ledger, ref): (balance, held)
        for ledger, ref, balance, held in await s.execute(
            select(
                account_t.c.ledger, member_t.c.member_ref, account_t.c.balance, account_t.c.held
            ).join(member_t, member_t.c.id == account_t.c.member_id)
        )
    }
    assert accounts == {key: (balance, model.held(*key)) for key, balance in model.balance.items()}
    # What the service reports for the members the operation named.
    if op[0] in ("enrol", "issue", "redeem", "transfer", "hold"):
        b = op[1]
        for m in {op[2], op[3]} if op[0] == "transfer" else {op[2]}:
            if (b, m) in model.balance:
                seen = await reads.member_balance(s, partners[b], m)
                held = model.held(b, m)
                expected = (model.balance[b, m], held, model.balance[b, m] - held)
                assert (seen.balance, seen.held, seen.available) == expected, (b, m)
    # Each brand's issuance shards are minus what its members hold.
    pools = {
        (partner_id, kind): total
        for partner_id, kind, total in await s.execute(
            select(account_t.c.partner_id, account_t.c.kind, func.sum(account_t.c.balance))
            .where(account_t.c.kind != "settlement")
            .group_by(account_t.c.partner_id, account_t.c.kind)
        )
    }
    for b, partner in partners.items():
        outstanding = sum(v for (bb, _), v in model.balance.items() if bb == b)
        assert pools[partner.id, "member"] == outstanding
        assert pools[partner.id, "issuance"] == -outstanding


class Ledger:
    """A database of its own, with SKY and HTL, ann and ben holding 1 000 at both, driven one
    operation at a time on an event loop of its own and checked against the model."""

    def __init__(self, database: contextlib.AbstractAsyncContextManager[Settings]) -> None:
        self.loop = asyncio.new_event_loop()
        self.database = database
        self.model = Model()
        self.loop.run_until_complete(self._open())

    async def _open(self) -> None:
        settings = await self.database.__aenter__()
        self.engine = create_engine(settings)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self.partners: dict[str, PartnerInfo] = {}
        async with self.sessions() as s, s.begin():
            for code in BRANDS:
                self.partners[code] = await create_partner(
                    s,
                    kind="brand",
                    name=f"Brand {code}",
                    currency=code,
                    settlement_currency=settings.settlement_currency,
                    shards=settings.issuance_shards,
                )
            for code, partner in self.partners.items():
                for m in ENROLLED:
                    await enrol_member(s, partner, m)
                    issued = await operations.issue(s, partner, m, 1000)
                    self.model.balance[code, m] = 1000
                    self.model.transactions.append(
                        ModelTransaction(issued.id, code, "issue", 1000, {m: 1000})
                    )

    def close(self) -> None:
        async def close() -> None:
            await self.engine.dispose()
            await self.database.__aexit__(None, None, None)

        try:
            self.loop.run_until_complete(close())
        finally:
            self.loop.close()

    def play(self, op: tuple[Any, ...]) -> None:
        self.loop.run_until_complete(self._play(op))

    async def _play(self, op: tuple[Any, ...]) -> None:
        model, sessions = self.model, self.sessions
        expected = model.expect(op)
        if expected is not None:
            async with sessions() as s:
                before = await snapshot(s)
        outcome: Any
        try:
            async with sessions() as s, s.begin():
                outcome = await run_operation(s, self.partners, model, op)
        except DomainError as refusal:
            outcome = refusal
        if expected is None:
            assert not isinstance(outcome, DomainError), (op, outcome)
            apply(model, op, outcome)
        else:
            assert type(outcome) is expected, (op, outcome)
        async with sessions() as s:
            if expected is not None:
                assert await snapshot(s) == before, op
            await assert_matches_model(s, self.partners, model, op)


class LedgerMachine(RuleBasedStateMachine):
    """Hypothesis picks the rules; each one is an operation on the ledger. ``database`` is set
    by the test (SQLite or PostgreSQL)."""

    database: Callable[[], contextlib.AbstractAsyncContextManager[Settings]]

    def __init__(self) -> None:
        super().__init__()
        self.ledger = Ledger(self.database())

    def teardown(self) -> None:
        self.ledger.close()

    def has_holds(self) -> bool:
        return bool(self.ledger.model.holds)

    def has_transactions(self) -> bool:
        return bool(self.ledger.model.transactions)

    @rule(brand=brands, member=members)
    def enrol(self, brand: str, member: str) -> None:
        self.ledger.play(("enrol", brand, member))

    @rule(brand=brands, member=members, points=st.integers(1, 500))
    def issue(self, brand: str, member: str, points: int) -> None:
        self.ledger.play(("issue", brand, member, points))

    def share_of_available(self, brand: str, member: str, percent: int) -> int:
        model = self.ledger.model
        available = model.available(brand, member) if (brand, member) in model.balance else 0
        return max(1, available * percent // 100)

    @rule(brand=brands, member=members, percent=percents)
    def redeem(self, brand: str, member: str, percent: int) -> None:
        points = self.share_of_available(brand, member, percent)
        self.ledger.play(("redeem", brand, member, points))

    @rule(
        brand=brands,
        source=members,
        offset=st.integers(1, len(MEMBERS) - 1),
        to_self=foreign,
        percent=percents,
    )
    def transfer(self, brand: str, source: str, offset: int, to_self: bool, percent: int) -> None:
        """To another member (now and then: to oneself, which is refused)."""
        recipient = source if to_self else MEMBERS[(MEMBERS.index(source) + offset) % len(MEMBERS)]
        points = self.share_of_available(brand, source, percent)
        self.ledger.play(("transfer", brand, source, recipient, points))

    @rule(brand=brands, member=members, percent=percents)
    def hold(self, brand: str, member: str, percent: int) -> None:
        points = self.share_of_available(brand, member, percent)
        self.ledger.play(("hold", brand, member, points))

    @precondition(has_holds)
    @rule(pick=picks, foreign=foreign, percent=st.none() | percents)
    def capture(self, pick: int, foreign: bool, percent: int | None) -> None:
        hold = self.ledger.model.hold_for(("capture", pick))
        assert hold is not None
        points = None if percent is None else max(1, hold.points * percent // 100)
        self.ledger.play(("capture", pick, foreign, points))

    @precondition(has_holds)
    @rule(pick=picks, foreign=foreign)
    def void(self, pick: int, foreign: bool) -> None:
        self.ledger.play(("void", pick, foreign))

    @precondition(has_transactions)
    @rule(pick=picks, foreign=foreign, percent=st.none() | percents)
    def reverse(self, pick: int, foreign: bool, percent: int | None) -> None:
        original = self.ledger.model.transaction_for(("reverse", pick))
        assert original is not None
        remaining = original.points - original.reversed
        points = None if percent is None else max(1, remaining * percent // 100)
        self.ledger.play(("reverse", pick, foreign, points))


# A database per example costs more on PostgreSQL; SQLite takes the bulk of the examples.
EXAMPLES = {"sqlite": 20, "postgresql": 5}


def test_random_operations_keep_the_ledger_whole(
    db_kind: str, tmp_path: Path, sqlite_template: Path, postgres_template: str | None
) -> None:
    if db_kind == "postgresql" and postgres_template is None:
        pytest.skip("PostgreSQL is not reachable")

    class Machine(LedgerMachine):
        @staticmethod
        def database() -> contextlib.AbstractAsyncContextManager[Settings]:
            return fresh_database(db_kind, tmp_path, sqlite_template, postgres_template)

    run_state_machine_as_test(
        Machine,
        settings=hypothesis_settings(
            max_examples=EXAMPLES[db_kind],
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        ),
    )


# --- partial reversals, pure ---------------------------------------------------------------------


@st.composite
def originals_and_parts(draw: st.DrawFn) -> tuple[list[tuple[int, str, int]], int, list[int]]:
    """Postings of one transaction over one to three ledgers, each ledger summing to zero, its
    principal, and that principal cut into the points of successive partial reversals."""
    originals: list[tuple[int, str, int]] = []
    account = itertools.count(1)
    for ledger in draw(st.lists(st.sampled_from(["SKY", "HTL", "EUR"]), min_size=1, unique=True)):
        amounts = draw(
            st.lists(st.integers(-(10**9), 10**9).filter(bool), min_size=1, max_size=4).filter(
                lambda xs: sum(xs) != 0
            )
        )
        amounts.append(-sum(amounts))
        originals += [(next(account), ledger, amount) for amount in amounts]
    total = draw(st.integers(1, 10**6))
    cuts = sorted(draw(st.sets(st.integers(1, total - 1), max_size=6))) if total > 1 else []
    parts = [b - a for a, b in itertools.pairwise([0, *cuts, total])]
    return originals, total, parts


@hypothesis_settings(max_examples=200, deadline=None)
@given(originals_and_parts())
def test_partial_reversals_add_up_to_exactly_the_original(
    case: tuple[list[tuple[int, str, int]], int, list[int]],
) -> None:
    """Each partial reversal sums to zero in each ledger, none reverses an account past what it
    was moved, and together they reverse every posting exactly."""
    originals, total, parts = case
    ledger_of = {account: ledger for account, ledger, _ in originals}
    amount_of = {account: amount for account, _, amount in originals}
    reversed_so_far = dict.fromkeys(amount_of, 0)
    before = 0
    for part in parts:
        legs = reversal.reversal_legs(originals, total, before, before + part)
        sums: dict[str, int] = {}
        for leg in legs:
            assert leg.amount != 0
            sums[ledger_of[leg.account_id]] = sums.get(ledger_of[leg.account_id], 0) + leg.amount
            reversed_so_far[leg.account_id] += leg.amount
        assert all(total_ == 0 for total_ in sums.values()), sums
        for account, amount in amount_of.items():
            assert abs(reversed_so_far[account]) <= abs(amount), (account, amount)
        before += part
    assert reversed_so_far == {account: -amount for account, amount in amount_of.items()}
