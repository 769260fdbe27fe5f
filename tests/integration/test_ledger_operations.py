"""Worked examples, one per ledger operation, written the way an accountant checks a page: the
exact postings (account, seq, amount, balance after), each chained to the one before it, the
member's balance, held and available points, and the brand's issuance shards at minus the points
outstanding. Sky Air's points currency is SKY; every number here is worked out by hand."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from dataclasses import dataclass

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.errors import HoldNotActive, ReversalExceedsOriginal
from exchange.ledger.expiry import release_expired_holds
from exchange.ledger.holds import capture_hold, place_hold, void_hold
from exchange.ledger.members import enrol_member
from exchange.ledger.models import Account, Hold, LedgerTransaction, Member
from exchange.ledger.operations import issue, redeem, transfer
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import member_balance, member_history
from exchange.ledger.reversal import reverse
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
hold_t = Hold.__table__
transaction_t = LedgerTransaction.__table__


@dataclass(frozen=True)
class Enrolled:
    """A member's account, and the one issuance shard it always meets."""

    ref: str
    account: int
    issuance: int


async def enrol(sessions: Sessions, brand: PartnerInfo, ref: str) -> Enrolled:
    async with sessions() as s, s.begin():
        member, created = await enrol_member(s, brand, ref)
        assert created
        # The shard is found here from the table, not taken from the service's answer.
        issuance = await s.scalar(
            select(Account.id).where(
                Account.partner_id == brand.id,
                Account.kind == "issuance",
                Account.shard == member.account_id % brand.shards,
            )
        )
    assert issuance == member.issuance_account_id
    return Enrolled(ref, member.account_id, issuance)


async def enrol_with(sessions: Sessions, brand: PartnerInfo, ref: str, points: int) -> Enrolled:
    member = await enrol(sessions, brand, ref)
    async with sessions() as s, s.begin():
        await issue(s, brand, ref, points)
    return member


async def points_of(s: AsyncSession, brand: PartnerInfo, ref: str) -> tuple[int, int, int]:
    """(balance, held, available) as the service reports them."""
    balance = await member_balance(s, brand, ref)
    assert balance.available == balance.balance - balance.held
    return balance.balance, balance.held, balance.available


async def transaction_row(s: AsyncSession, transaction_id: uuid.UUID) -> dict[str, object]:
    row = (await s.execute(select(transaction_t).where(transaction_t.c.id == transaction_id))).one()
    return dict(row._mapping)


async def hold_row(s: AsyncSession, hold_id: uuid.UUID) -> dict[str, object]:
    row = (await s.execute(select(hold_t).where(hold_t.c.id == hold_id))).one()
    return dict(row._mapping)


async def test_enrolling_twice_gives_the_same_member(sessions: Sessions, sky: PartnerInfo) -> None:
    async with sessions() as s, s.begin():
        first, created_first = await enrol_member(s, sky, "alice")
    async with sessions() as s, s.begin():
        again, created_again = await enrol_member(s, sky, "alice")
    assert (created_first, created_again) == (True, False)
    assert again == first
    async with sessions() as s:
        assert await s.scalar(select(func.count()).select_from(Member)) == 1
        account = await s.get(Account, first.account_id)
        assert account is not None
        assert (account.kind, account.ledger, account.member_id) == (
            "member",
            "SKY",
            first.member_id,
        )
        assert (account.balance, account.held, account.seq) == (0, 0, 0)
        assert account.head_hash == bytes(32)
        assert await points_of(s, sky, "alice") == (0, 0, 0)
        await assert_ledger_whole(s)


async def test_issue_credits_the_member_and_debits_issuance(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    """Sky Air credits alice 1 000 SKY for a flight.

    alice            seq 1   +1 000   balance  1 000
    SKY issuance     seq 1   -1 000   balance -1 000
    """
    alice = await enrol(sessions, sky, "alice")
    async with sessions() as s, s.begin():
        posted = await issue(s, sky, "alice", 1000, reference="flight SK100")
    async with sessions() as s:
        assert await lines_of(s, posted.id) == sorted(
            [Line(alice.account, 1, 1000, 1000), Line(alice.issuance, 1, -1000, -1000)]
        )
        tx = await transaction_row(s, posted.id)
        assert (tx["kind"], tx["points"], tx["partner_id"], tx["reference"]) == (
            "issue", 1000, sky.id, "flight SK100",
        )  # fmt: skip
        assert tx["reverses_id"] is None
        assert await assert_chained(s) == 2
        assert await points_of(s, sky, "alice") == (1000, 0, 1000)
        assert await account_row(s, alice.issuance) == (-1000, 0, 1)
        await assert_outstanding(s, sky, 1000)
        await assert_ledger_whole(s)


async def test_redeem_debits_the_member_and_credits_issuance(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    """alice, holding 1 000 SKY, spends 400 on a seat upgrade.

    alice            seq 2     -400   balance    600
    SKY issuance     seq 2     +400   balance   -600
    """
    alice = await enrol_with(sessions, sky, "alice", 1000)
    async with sessions() as s, s.begin():
        posted = await redeem(s, sky, "alice", 400, reference="upgrade")
    async with sessions() as s:
        assert await lines_of(s, posted.id) == sorted(
            [Line(alice.account, 2, -400, 600), Line(alice.issuance, 2, 400, -600)]
        )
        assert (await transaction_row(s, posted.id))["kind"] == "redeem"
        assert await assert_chained(s) == 4
        assert await points_of(s, sky, "alice") == (600, 0, 600)
        await assert_outstanding(s, sky, 600)
        await assert_ledger_whole(s)


async def test_transfer_moves_points_between_members_of_one_brand(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    """alice (1 000 SKY) gives bob (0 SKY) 250. Issuance is not touched: the points outstanding
    stay 1 000.

        alice            seq 2     -250   balance    750
        bob              seq 1     +250   balance    250
    """
    alice = await enrol_with(sessions, sky, "alice", 1000)
    bob = await enrol(sessions, sky, "bob")
    async with sessions() as s, s.begin():
        posted = await transfer(s, sky, "alice", "bob", 250)
    async with sessions() as s:
        assert await lines_of(s, posted.id) == sorted(
            [Line(alice.account, 2, -250, 750), Line(bob.account, 1, 250, 250)]
        )
        assert (await transaction_row(s, posted.id))["kind"] == "transfer"
        assert await assert_chained(s) == 4
        assert await points_of(s, sky, "alice") == (750, 0, 750)
        assert await points_of(s, sky, "bob") == (250, 0, 250)
        await assert_outstanding(s, sky, 1000)
        await assert_ledger_whole(s)


async def test_hold_then_partial_capture_releases_the_rest(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    """alice (1 000 SKY) books a hotel: 300 held, 200 captured at checkout, 100 released.

    hold 300         no postings; balance 1 000, held 300, available 700
    capture 200:
    alice            seq 2     -200   balance    800
    SKY issuance     seq 2     +200   balance   -800
    after            balance 800, held 0, available 800
    """
    alice = await enrol_with(sessions, sky, "alice", 1000)
    async with sessions() as s, s.begin():
        hold = await place_hold(s, sky, "alice", 300, expires_in=3600)
    async with sessions() as s:
        assert await lines_of(s, hold.transaction_id) == []
        tx = await transaction_row(s, hold.transaction_id)
        assert (tx["kind"], tx["points"], tx["hold_id"]) == ("hold", 300, hold.id)
        assert await points_of(s, sky, "alice") == (1000, 300, 700)
        assert await account_row(s, alice.account) == (1000, 300, 1)
        await assert_ledger_whole(s)

    async with sessions() as s, s.begin():
        view, posted = await capture_hold(s, sky, hold.id, 200)
    assert (view.status, view.points, view.captured) == ("captured", 300, 200)
    async with sessions() as s:
        assert await lines_of(s, posted.id) == sorted(
            [Line(alice.account, 2, -200, 800), Line(alice.issuance, 2, 200, -800)]
        )
        tx = await transaction_row(s, posted.id)
        assert (tx["kind"], tx["points"], tx["hold_id"]) == ("capture", 200, hold.id)
        row = await hold_row(s, hold.id)
        assert (row["status"], row["points"], row["captured"]) == ("captured", 300, 200)
        assert row["closed_at"] is not None
        assert await points_of(s, sky, "alice") == (800, 0, 800)
        assert await account_row(s, alice.account) == (800, 0, 2)
        assert await assert_chained(s) == 4
        await assert_outstanding(s, sky, 800)
        await assert_ledger_whole(s)

    # The 100 not captured are spendable again: all 800 can go.
    async with sessions() as s, s.begin():
        await redeem(s, sky, "alice", 800)
    async with sessions() as s:
        assert await points_of(s, sky, "alice") == (0, 0, 0)


async def test_hold_then_void_releases_everything(sessions: Sessions, sky: PartnerInfo) -> None:
    """alice (1 000 SKY): 300 held, then the booking is cancelled. Nothing is posted at all."""
    alice = await enrol_with(sessions, sky, "alice", 1000)
    async with sessions() as s, s.begin():
        hold = await place_hold(s, sky, "alice", 300, expires_in=3600)
    async with sessions() as s, s.begin():
        view = await void_hold(s, sky, hold.id)
    assert (view.status, view.captured) == ("voided", 0)
    async with sessions() as s:
        assert await lines_of(s, view.transaction_id) == []
        tx = await transaction_row(s, view.transaction_id)
        assert (tx["kind"], tx["points"], tx["hold_id"]) == ("void", 300, hold.id)
        row = await hold_row(s, hold.id)
        assert (row["status"], row["captured"]) == ("voided", 0)
        assert await points_of(s, sky, "alice") == (1000, 0, 1000)
        assert await account_row(s, alice.account) == (1000, 0, 1)
        assert await assert_chained(s) == 2
        await assert_outstanding(s, sky, 1000)
        await assert_ledger_whole(s)


async def test_an_expired_hold_gives_its_points_back(sessions: Sessions, sky: PartnerInfo) -> None:
    """alice (500 SKY) has 200 held for one second. Once it has passed, all 500 are available:
    the balance says so at once, and a redemption of all 500 goes through and marks the hold
    expired."""
    alice = await enrol_with(sessions, sky, "alice", 500)
    async with sessions() as s, s.begin():
        hold = await place_hold(s, sky, "alice", 200, expires_in=1)
    async with sessions() as s:
        assert await points_of(s, sky, "alice") == (500, 200, 300)

    await asyncio.sleep(1.1)
    async with sessions() as s:
        assert await points_of(s, sky, "alice") == (500, 0, 500)
        assert (await hold_row(s, hold.id))["status"] == "active"  # nobody has touched it yet

    async with sessions() as s, s.begin():
        posted = await redeem(s, sky, "alice", 500)
    async with sessions() as s:
        assert await lines_of(s, posted.id) == sorted(
            [Line(alice.account, 2, -500, 0), Line(alice.issuance, 2, 500, 0)]
        )
        row = await hold_row(s, hold.id)
        assert (row["status"], row["captured"]) == ("expired", 0)
        assert row["closed_at"] is not None
        assert await account_row(s, alice.account) == (0, 0, 2)
        await assert_outstanding(s, sky, 0)
        await assert_ledger_whole(s)

    async with sessions() as s, s.begin():
        with pytest.raises(HoldNotActive) as refused:
            await capture_hold(s, sky, hold.id)
    assert refused.value.extra["status"] == "expired"


async def test_the_sweep_releases_expired_holds(sessions: Sessions, sky: PartnerInfo) -> None:
    """The periodic sweep releases holds past their time (here: a clock a minute ahead), and
    only those: alice's 60-second hold goes, bob's one-hour hold stays."""
    alice = await enrol_with(sessions, sky, "alice", 500)
    bob = await enrol_with(sessions, sky, "bob", 100)
    async with sessions() as s, s.begin():
        short = await place_hold(s, sky, "alice", 200, expires_in=60)
        long = await place_hold(s, sky, "bob", 50, expires_in=3600)
    async with sessions() as s, s.begin():
        assert await release_expired_holds(s) == 0
    async with sessions() as s, s.begin():
        assert await release_expired_holds(s, utcnow() + dt.timedelta(seconds=61)) == 1
    async with sessions() as s:
        assert (await hold_row(s, short.id))["status"] == "expired"
        assert (await hold_row(s, long.id))["status"] == "active"
        assert await account_row(s, alice.account) == (500, 0, 1)
        assert await account_row(s, bob.account) == (100, 50, 1)
        assert await points_of(s, sky, "alice") == (500, 0, 500)
        assert await points_of(s, sky, "bob") == (100, 50, 50)
        await assert_ledger_whole(s)
    async with sessions() as s, s.begin():
        assert await release_expired_holds(s, utcnow() + dt.timedelta(seconds=61)) == 0


async def test_a_hold_captured_as_it_expires_is_counted_once(
    sessions: Sessions, sky: PartnerInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A capture decided an instant before its hold expired must not also release that hold as
    expired: the held points would be given back twice. The holds service's clock is pinned to
    the hold's creation to reach that instant; the engine keeps the real clock.

    alice (100 SKY): hold A 10 (one second), hold B 20 (an hour). A is captured whole.
    After: balance 90, held 20 (B alone), available 70."""
    alice = await enrol_with(sessions, sky, "alice", 100)
    async with sessions() as s, s.begin():
        hold_a = await place_hold(s, sky, "alice", 10, expires_in=1)
        await place_hold(s, sky, "alice", 20, expires_in=3600)
    await asyncio.sleep(1.1)
    monkeypatch.setattr("exchange.ledger.holds.utcnow", lambda: hold_a.created_at)
    async with sessions() as s, s.begin():
        await capture_hold(s, sky, hold_a.id)
    monkeypatch.undo()
    async with sessions() as s:
        assert (await hold_row(s, hold_a.id))["status"] == "captured"
        assert await account_row(s, alice.account) == (90, 20, 2)
        assert await points_of(s, sky, "alice") == (90, 20, 70)
        await assert_ledger_whole(s)


async def test_full_reversal_undoes_an_issue(sessions: Sessions, sky: PartnerInfo) -> None:
    """The 1 000 SKY credited to alice by mistake are taken back in full.

    alice            seq 2   -1 000   balance      0
    SKY issuance     seq 2   +1 000   balance      0
    """
    alice = await enrol(sessions, sky, "alice")
    async with sessions() as s, s.begin():
        original = await issue(s, sky, "alice", 1000)
    async with sessions() as s, s.begin():
        posted = await reverse(s, sky, original.id)
    async with sessions() as s:
        assert await lines_of(s, posted.id) == sorted(
            [Line(alice.account, 2, -1000, 0), Line(alice.issuance, 2, 1000, 0)]
        )
        tx = await transaction_row(s, posted.id)
        assert (tx["kind"], tx["points"], tx["reverses_id"]) == ("reverse", 1000, original.id)
        assert await assert_chained(s) == 4
        assert await points_of(s, sky, "alice") == (0, 0, 0)
        await assert_outstanding(s, sky, 0)
        await assert_ledger_whole(s)
        before = await snapshot(s)

    async with sessions() as s, s.begin():
        with pytest.raises(ReversalExceedsOriginal) as refused:
            await reverse(s, sky, original.id)
    assert refused.value.extra == {
        "original": 1000, "reversed": 1000, "remaining": 0, "requested": 0,
    }  # fmt: skip
    async with sessions() as s:
        assert await snapshot(s) == before


async def test_partial_reversals_then_an_over_reversal_is_refused(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    """alice (1 000 SKY) redeems 400; the shop refunds 150, then 150 again. 100 remain
    reversible, so 101 is refused and changes nothing; the last 100 (no amount: "the rest") go.

        redeem 400       alice seq 2  -400 →   600   issuance seq 2  +400 →   -600
        reverse 150      alice seq 3  +150 →   750   issuance seq 3  -150 →   -750
        reverse 150      alice seq 4  +150 →   900   issuance seq 4  -150 →   -900
        reverse 101      refused: 400 - 300 = 100 remain
        reverse rest     alice seq 5  +100 → 1 000   issuance seq 5  -100 → -1 000
    """
    alice = await enrol_with(sessions, sky, "alice", 1000)
    async with sessions() as s, s.begin():
        redemption = await redeem(s, sky, "alice", 400)
    async with sessions() as s, s.begin():
        first = await reverse(s, sky, redemption.id, 150)
    async with sessions() as s, s.begin():
        second = await reverse(s, sky, redemption.id, 150)
    async with sessions() as s:
        assert await lines_of(s, first.id) == sorted(
            [Line(alice.account, 3, 150, 750), Line(alice.issuance, 3, -150, -750)]
        )
        assert await lines_of(s, second.id) == sorted(
            [Line(alice.account, 4, 150, 900), Line(alice.issuance, 4, -150, -900)]
        )
        for reversal in (first, second):
            tx = await transaction_row(s, reversal.id)
            assert (tx["kind"], tx["points"], tx["reverses_id"]) == ("reverse", 150, redemption.id)
        assert await points_of(s, sky, "alice") == (900, 0, 900)
        await assert_outstanding(s, sky, 900)
        before = await snapshot(s)

    async with sessions() as s, s.begin():
        with pytest.raises(ReversalExceedsOriginal) as refused:
            await reverse(s, sky, redemption.id, 101)
    assert refused.value.extra == {
        "original": 400, "reversed": 300, "remaining": 100, "requested": 101,
    }  # fmt: skip
    async with sessions() as s:
        assert await snapshot(s) == before

    async with sessions() as s, s.begin():
        rest = await reverse(s, sky, redemption.id)
    async with sessions() as s:
        assert await lines_of(s, rest.id) == sorted(
            [Line(alice.account, 5, 100, 1000), Line(alice.issuance, 5, -100, -1000)]
        )
        assert (await transaction_row(s, rest.id))["points"] == 100
        assert await points_of(s, sky, "alice") == (1000, 0, 1000)
        assert await assert_chained(s) == 10
        await assert_outstanding(s, sky, 1000)
        await assert_ledger_whole(s)

        history, cursor = await member_history(s, sky, "alice", limit=3)
        assert [(h.kind, h.seq, h.amount, h.balance_after) for h in history] == [
            ("reverse", 5, 100, 1000),
            ("reverse", 4, 150, 900),
            ("reverse", 3, 150, 750),
        ]
        assert cursor is not None
        history, cursor = await member_history(s, sky, "alice", limit=3, cursor=cursor)
        assert [(h.kind, h.seq, h.amount, h.balance_after) for h in history] == [
            ("redeem", 2, -400, 600),
            ("issue", 1, 1000, 1000),
        ]
        assert cursor is None


async def test_reversals_of_a_transfer_are_capped_at_its_points(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    """alice sends bob 100 SKY; it is reversed as 33 + 33 + 34, which is all of it, so even one
    more point is refused. Each reversal moves points from bob back to alice.

        transfer 100     alice seq 2  -100 → 900     bob seq 1  +100 → 100
        reverse 33       alice seq 3   +33 → 933     bob seq 2   -33 →  67
        reverse 33       alice seq 4   +33 → 966     bob seq 3   -33 →  34
        reverse 34       alice seq 5   +34 → 1000    bob seq 4   -34 →   0
        reverse 1        refused: 0 remain
    """
    alice = await enrol_with(sessions, sky, "alice", 1000)
    bob = await enrol(sessions, sky, "bob")
    async with sessions() as s, s.begin():
        gift = await transfer(s, sky, "alice", "bob", 100)
    reversals = []
    for points in (33, 33, 34):
        async with sessions() as s, s.begin():
            reversals.append(await reverse(s, sky, gift.id, points))
    async with sessions() as s:
        assert [await lines_of(s, r.id) for r in reversals] == [
            sorted([Line(alice.account, 3, 33, 933), Line(bob.account, 2, -33, 67)]),
            sorted([Line(alice.account, 4, 33, 966), Line(bob.account, 3, -33, 34)]),
            sorted([Line(alice.account, 5, 34, 1000), Line(bob.account, 4, -34, 0)]),
        ]
        before = await snapshot(s)
    async with sessions() as s, s.begin():
        with pytest.raises(ReversalExceedsOriginal) as refused:
            await reverse(s, sky, gift.id, 1)
    assert refused.value.extra["remaining"] == 0
    async with sessions() as s:
        assert await snapshot(s) == before
        assert await points_of(s, sky, "alice") == (1000, 0, 1000)
        assert await points_of(s, sky, "bob") == (0, 0, 0)
        await assert_outstanding(s, sky, 1000)
        await assert_ledger_whole(s)
