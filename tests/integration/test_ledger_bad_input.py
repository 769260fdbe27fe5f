"""Every ledger service refuses bad input with a domain error, and writes nothing: the row counts
of posting, ledger_transaction, hold, member and account, every account's head and every hold's
state are the same before and after, even when the caller commits after the refusal.

The book every test starts from (worked out by hand):

    SKY  alice   issued 100; hold 10 active; hold 5 captured (-5); hold 5 voided;
                 1 point of the issue reversed (-1)   -> balance 94, held 10, available 84
         bob     enrolled, 0
    HTL  hana    issued 50; hold 10 active            -> balance 50, held 10, available 40
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import uuid7
from exchange.errors import (
    DomainError,
    HoldExceeded,
    HoldNotActive,
    HoldNotFound,
    InsufficientPoints,
    InvalidAmount,
    InvalidInput,
    MemberNotFound,
    NotABrand,
    NotReversible,
    ReversalExceedsOriginal,
    TransactionNotFound,
)
from exchange.ledger.holds import capture_hold, place_hold, void_hold
from exchange.ledger.members import enrol_member
from exchange.ledger.operations import issue, redeem, transfer
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import member_balance, member_history
from exchange.ledger.reversal import reverse
from exchange.settings import Settings
from tests.conftest import make_partner
from tests.integration.ledger_checks import assert_ledger_whole, snapshot

Sessions = async_sessionmaker[AsyncSession]
Call = Callable[[AsyncSession], Awaitable[Any]]


@dataclass(frozen=True)
class Book:
    sky: PartnerInfo
    htl: PartnerInfo
    issue_id: uuid.UUID
    reversal_id: uuid.UUID
    hold_transaction_id: uuid.UUID
    void_transaction_id: uuid.UUID
    active_hold: uuid.UUID
    captured_hold: uuid.UUID
    voided_hold: uuid.UUID
    htl_issue_id: uuid.UUID
    htl_hold: uuid.UUID


@pytest.fixture
async def book(sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo) -> Book:
    async with sessions() as s, s.begin():
        await enrol_member(s, sky, "alice")
        await enrol_member(s, sky, "bob")
        issued = await issue(s, sky, "alice", 100)
        active = await place_hold(s, sky, "alice", 10, expires_in=3600)
        to_capture = await place_hold(s, sky, "alice", 5, expires_in=3600)
        await capture_hold(s, sky, to_capture.id)
        to_void = await place_hold(s, sky, "alice", 5, expires_in=3600)
        voided = await void_hold(s, sky, to_void.id)
        reversal = await reverse(s, sky, issued.id, 1)
        await enrol_member(s, htl, "hana")
        htl_issued = await issue(s, htl, "hana", 50)
        htl_hold = await place_hold(s, htl, "hana", 10, expires_in=3600)
    async with sessions() as s:
        alice = await member_balance(s, sky, "alice")
        assert (alice.balance, alice.held, alice.available) == (94, 10, 84)
    return Book(
        sky, htl, issued.id, reversal.id, active.transaction_id, voided.transaction_id,
        active.id, to_capture.id, to_void.id, htl_issued.id, htl_hold.id,
    )  # fmt: skip


async def assert_refused(sessions: Sessions, call: Call, error: type[DomainError]) -> DomainError:
    """``call`` raises ``error``, and nothing changed: not before the transaction ends, and not
    after the caller commits it anyway."""
    async with sessions() as s:
        before = await snapshot(s)
    async with sessions() as s, s.begin():
        with pytest.raises(error) as refused:
            await call(s)
        assert await snapshot(s) == before
    async with sessions() as s:
        assert await snapshot(s) == before
    return refused.value


async def assert_all_refused(
    sessions: Sessions, calls: dict[str, Call], error: type[DomainError], **facts: Any
) -> None:
    """Each call is refused with ``error`` carrying ``facts``; then the ledger is still whole."""
    for name, call in calls.items():
        try:
            refusal = await assert_refused(sessions, call, error)
        except BaseException as failure:
            failure.add_note(f"while calling: {name}")
            raise
        for fact, value in facts.items():
            assert refusal.extra[fact] == value, (name, refusal.extra)
    async with sessions() as s:
        await assert_ledger_whole(s)


async def alice(sessions: Sessions, brand: PartnerInfo) -> tuple[int, int, int]:
    async with sessions() as s:
        balance = await member_balance(s, brand, "alice")
    return balance.balance, balance.held, balance.available


BAD_AMOUNTS: list[Any] = [0, -1, 1.5, "10", True, 10**12 + 1, 10**13, None]


async def test_a_bad_amount_is_refused_by_every_operation(sessions: Sessions, book: Book) -> None:
    sky = book.sky
    calls: dict[str, Call] = {}
    for p in BAD_AMOUNTS:
        calls |= {
            f"issue {p!r}": lambda s, p=p: issue(s, sky, "alice", p),
            f"redeem {p!r}": lambda s, p=p: redeem(s, sky, "alice", p),
            f"transfer {p!r}": lambda s, p=p: transfer(s, sky, "alice", "bob", p),
            f"hold {p!r}": lambda s, p=p: place_hold(s, sky, "alice", p, expires_in=60),
        }
        if p is not None:  # None means "all of it" to a capture and a reversal
            calls |= {
                f"capture {p!r}": lambda s, p=p: capture_hold(s, sky, book.active_hold, p),
                f"reverse {p!r}": lambda s, p=p: reverse(s, sky, book.issue_id, p),
            }
    await assert_all_refused(sessions, calls, InvalidAmount, field="points")
    assert await alice(sessions, sky) == (94, 10, 84)


async def test_the_largest_amount_and_the_longest_member_ref_are_accepted(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    ref = "m" * 128
    async with sessions() as s, s.begin():
        _, created = await enrol_member(s, sky, ref)
        await issue(s, sky, ref, 10**12)
        await redeem(s, sky, ref, 1)
    async with sessions() as s:
        balance = await member_balance(s, sky, ref)
        assert created and balance.balance == 10**12 - 1
        await assert_ledger_whole(s)


async def test_a_bad_hold_lifetime_is_refused(sessions: Sessions, book: Book) -> None:
    calls: dict[str, Call] = {
        f"expires_in={e!r}": lambda s, e=e: place_hold(s, book.sky, "alice", 5, expires_in=e)
        for e in [0, -5, 90 * 24 * 3600 + 1, "60", 60.0, True, None]
    }
    await assert_all_refused(sessions, calls, InvalidInput, field="expires_in")


async def test_an_unknown_member_is_not_found(sessions: Sessions, book: Book) -> None:
    sky = book.sky
    calls: dict[str, Call] = {
        "issue": lambda s: issue(s, sky, "nobody", 5),
        "redeem": lambda s: redeem(s, sky, "nobody", 5),
        "transfer from": lambda s: transfer(s, sky, "nobody", "bob", 5),
        "transfer to": lambda s: transfer(s, sky, "alice", "nobody", 5),
        "hold": lambda s: place_hold(s, sky, "nobody", 5, expires_in=60),
        "balance": lambda s: member_balance(s, sky, "nobody"),
        "history": lambda s: member_history(s, sky, "nobody"),
    }
    await assert_all_refused(sessions, calls, MemberNotFound, member_ref="nobody")


async def test_another_brands_member_is_not_found(sessions: Sessions, book: Book) -> None:
    """hana is HTL's member; to SKY she does not exist."""
    sky = book.sky
    calls: dict[str, Call] = {
        "issue": lambda s: issue(s, sky, "hana", 5),
        "redeem": lambda s: redeem(s, sky, "hana", 5),
        "transfer to": lambda s: transfer(s, sky, "alice", "hana", 5),
        "balance": lambda s: member_balance(s, sky, "hana"),
    }
    await assert_all_refused(sessions, calls, MemberNotFound, member_ref="hana")


async def test_a_transfer_to_oneself_is_refused(sessions: Sessions, book: Book) -> None:
    refusal = await assert_refused(
        sessions, lambda s: transfer(s, book.sky, "alice", "alice", 5), InvalidInput
    )
    assert refusal.extra["field"] == "to_member_ref"


async def test_an_unknown_or_another_brands_hold_is_not_found(
    sessions: Sessions, book: Book
) -> None:
    """A made-up id and HTL's hold look the same to SKY: there is no such hold."""
    for hold_id in (uuid7(), book.htl_hold):
        calls: dict[str, Call] = {
            "capture": lambda s, h=hold_id: capture_hold(s, book.sky, h),
            "capture part": lambda s, h=hold_id: capture_hold(s, book.sky, h, 1),
            "void": lambda s, h=hold_id: void_hold(s, book.sky, h),
        }
        await assert_all_refused(sessions, calls, HoldNotFound, hold_id=str(hold_id))


async def test_a_finished_hold_is_not_active(sessions: Sessions, book: Book) -> None:
    for status, hold_id in (("captured", book.captured_hold), ("voided", book.voided_hold)):
        calls: dict[str, Call] = {
            "capture": lambda s, h=hold_id: capture_hold(s, book.sky, h),
            "capture part": lambda s, h=hold_id: capture_hold(s, book.sky, h, 1),
            "void": lambda s, h=hold_id: void_hold(s, book.sky, h),
        }
        await assert_all_refused(
            sessions, calls, HoldNotActive, hold_id=str(hold_id), status=status
        )


async def test_capturing_more_than_is_held_is_refused(sessions: Sessions, book: Book) -> None:
    refusal = await assert_refused(
        sessions, lambda s: capture_hold(s, book.sky, book.active_hold, 11), HoldExceeded
    )
    assert refusal.extra == {"field": "points", "held": 10, "requested": 11}
    assert refusal.title == "A capture cannot take more than the hold reserved"
    assert await alice(sessions, book.sky) == (94, 10, 84)


async def test_reversing_more_than_remains_is_refused(sessions: Sessions, book: Book) -> None:
    """1 of the 100 issued is reversed already, so 99 remain."""
    refusal = await assert_refused(
        sessions,
        lambda s: reverse(s, book.sky, book.issue_id, 100),
        ReversalExceedsOriginal,
    )
    assert refusal.extra == {"original": 100, "reversed": 1, "remaining": 99, "requested": 100}


async def test_a_reversal_a_hold_or_a_void_cannot_be_reversed(
    sessions: Sessions, book: Book
) -> None:
    """None of them moved points: a reversal is corrected by the original, a hold by a void."""
    for kind, transaction_id in (
        ("reverse", book.reversal_id),
        ("hold", book.hold_transaction_id),
        ("void", book.void_transaction_id),
    ):
        calls: dict[str, Call] = {
            f"all of a {kind}": lambda s, t=transaction_id: reverse(s, book.sky, t),
            f"part of a {kind}": lambda s, t=transaction_id: reverse(s, book.sky, t, 1),
        }
        await assert_all_refused(sessions, calls, NotReversible, kind=kind)


async def test_another_partners_transaction_is_not_found(sessions: Sessions, book: Book) -> None:
    missing = uuid7()
    calls: dict[str, Call] = {
        "HTL's issue": lambda s: reverse(s, book.sky, book.htl_issue_id),
        "no such transaction": lambda s: reverse(s, book.sky, missing),
    }
    await assert_all_refused(sessions, calls, TransactionNotFound)
    refusal = await assert_refused(
        sessions, lambda s: reverse(s, book.sky, book.htl_issue_id), TransactionNotFound
    )
    assert refusal.extra == {"transaction_id": str(book.htl_issue_id)}


async def test_insufficient_points_are_refused_with_the_facts(
    sessions: Sessions, book: Book
) -> None:
    """alice has 94 of which 10 are held: 84 available, so 85 is one too many for a redemption,
    a transfer or a new hold; 84 itself then goes through."""
    sky = book.sky
    calls: dict[str, Call] = {
        "redeem": lambda s: redeem(s, sky, "alice", 85),
        "transfer": lambda s: transfer(s, sky, "alice", "bob", 85),
        "hold": lambda s: place_hold(s, sky, "alice", 85, expires_in=60),
    }
    await assert_all_refused(
        sessions, calls, InsufficientPoints, member_ref="alice", available=84, requested=85
    )
    async with sessions() as s, s.begin():
        await redeem(s, sky, "alice", 84)
    assert await alice(sessions, sky) == (10, 10, 0)


async def test_a_reversal_that_would_overdraw_the_member_is_refused(
    sessions: Sessions, book: Book
) -> None:
    """bob is issued 20 and spends 15; taking the 20 back would leave him at -5."""
    sky = book.sky
    async with sessions() as s, s.begin():
        issued = await issue(s, sky, "bob", 20)
        await redeem(s, sky, "bob", 15)
    refusal = await assert_refused(
        sessions, lambda s: reverse(s, sky, issued.id), InsufficientPoints
    )
    assert refusal.extra == {"member_ref": "bob", "available": 5, "requested": 20}


async def test_only_a_brand_has_members_and_points(
    sessions: Sessions, settings: Settings, book: Book
) -> None:
    for kind in ("charity", "operator"):
        partner = await make_partner(sessions, settings, kind, f"The {kind}")
        calls: dict[str, Call] = {
            f"{kind} enrols": lambda s, p=partner: enrol_member(s, p, "alice"),
            f"{kind} issues": lambda s, p=partner: issue(s, p, "alice", 5),
            f"{kind} redeems": lambda s, p=partner: redeem(s, p, "alice", 5),
            f"{kind} transfers": lambda s, p=partner: transfer(s, p, "alice", "bob", 5),
            f"{kind} holds": lambda s, p=partner: place_hold(s, p, "alice", 5, expires_in=60),
            f"{kind} reads": lambda s, p=partner: member_balance(s, p, "alice"),
        }
        await assert_all_refused(sessions, calls, NotABrand)


BAD_MEMBER_REFS: list[Any] = [
    "", "x" * 129, "nul\x00byte", "tab\there", "new\nline", "\x7f", "\u200b", " alice", "alice ",
    "a/b", None, 7,
]  # fmt: skip


async def test_a_bad_member_ref_is_refused(sessions: Sessions, book: Book) -> None:
    """Empty, over 128 characters, control or format characters, outer spaces, a slash (it
    could not be addressed in a URL path), not a string."""
    sky = book.sky
    calls: dict[str, Call] = {}
    for ref in BAD_MEMBER_REFS:
        calls |= {
            f"enrol {ref!r}": lambda s, r=ref: enrol_member(s, sky, r),
            f"issue {ref!r}": lambda s, r=ref: issue(s, sky, r, 5),
            f"redeem {ref!r}": lambda s, r=ref: redeem(s, sky, r, 5),
            f"hold {ref!r}": lambda s, r=ref: place_hold(s, sky, r, 5, expires_in=60),
            f"balance {ref!r}": lambda s, r=ref: member_balance(s, sky, r),
        }
    await assert_all_refused(sessions, calls, InvalidInput, field="member_ref")
    for ref in BAD_MEMBER_REFS:
        await assert_all_refused(
            sessions,
            {
                f"from {ref!r}": lambda s, r=ref: transfer(s, sky, r, "bob", 5),
                f"to {ref!r}": lambda s, r=ref: transfer(s, sky, "alice", r, 5),
            },
            InvalidInput,
        )


async def test_a_bad_history_page_is_refused(sessions: Sessions, book: Book) -> None:
    pages: list[tuple[Any, str | None, str]] = [
        (0, None, "limit"),
        (501, None, "limit"),
        ("10", None, "limit"),
        (10, "not-a-cursor", "cursor"),
        (10, "eyJzZXEiOiAwfQ", "cursor"),  # {"seq": 0}
    ]
    for limit, cursor, field in pages:
        refusal = await assert_refused(
            sessions,
            lambda s, n=limit, c=cursor: member_history(s, book.sky, "alice", limit=n, cursor=c),
            InvalidInput,
        )
        assert refusal.extra["field"] == field, (limit, cursor)
