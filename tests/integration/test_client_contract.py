"""The typed SDK against a real exchange over TCP: every operation family answers the contract's
Struct, and what it answers is what ``GET /v1/transactions/{id}`` shows afterwards.

Each test runs through the sync and the async client (``flavour``), on SQLite and PostgreSQL.
Sky Air (SKY) and Hotel Co (HTL) are brands, Clean Water a charity; the operator sets the
worked example's values (a SKY point 1.2 cents, an HTL point 0.8) and rate (1000 SKY : 750 HTL,
1% fee), through the SDK's plain ``request``.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.contract.batches import BatchIssue, BatchRedemption, BatchTransfer
from exchange.contract.schemas import (
    CharityOut,
    ConversionOut,
    DonationOut,
    HoldOperationOut,
    OperationOut,
    PricingOut,
    QuoteOut,
    TransactionOut,
    TransactionReceiptOut,
)
from exchange.ledger.parties import PartnerInfo
from exchange.settings import Settings
from tests.conftest import make_partner
from tests.integration.conftest import Credentials, register_key
from tests.integration.live_server import LiveServer, live_server
from tests.integration.test_client import FLAVOURS, Key, Sdk, sdk_for

__all__ = ["live_server"]  # the fixture, imported for pytest


@dataclass(frozen=True)
class Coalition:
    server: LiveServer
    operator: Key
    sky: Key
    htl: Key
    charity: uuid.UUID


def _key(credentials: Credentials) -> Key:
    assert not isinstance(credentials.key, bytes)
    return Key(credentials.key_id, credentials.alg, credentials.key)


@pytest.fixture
async def coalition(
    live_server: LiveServer,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    sky: PartnerInfo,
    htl: PartnerInfo,
) -> Coalition:
    operator = await make_partner(sessions, settings, "operator", "Coalition operator")
    water = await make_partner(sessions, settings, "charity", "Clean Water", None, 100)
    keys = [
        _key(await register_key(sessions, live_server.master_key, partner))
        for partner in (operator, sky, htl)
    ]
    coalition = Coalition(live_server, *keys, charity=water.id)
    async with sdk_for("async", live_server, coalition.operator) as as_operator:
        for currency, micros in (("SKY", 12_000), ("HTL", 8_000)):
            body = {"currency": currency, "micros_per_point": micros}
            answer = await as_operator("request", "POST", "/v1/point-values", json=body)
            assert answer.status_code == 201, answer.text
        terms = {
            "from_currency": "SKY", "to_currency": "HTL",
            "from_points": 1_000, "to_points": 750, "fee_bps": 100,
        }  # fmt: skip
        answer = await as_operator("request", "POST", "/v1/rates", json=terms)
        assert answer.status_code == 201, answer.text
    return coalition


@pytest.fixture(params=FLAVOURS)
async def sky_sdk(request: pytest.FixtureRequest, coalition: Coalition) -> AsyncIterator[Sdk]:
    """Sky Air's client, sync or async, with Alice enrolled and holding 20 000 SKY."""
    async with sdk_for(request.param, coalition.server, coalition.sky) as sdk:
        await sdk("enrol", "alice")
        await sdk("enrol", "bob")
        await sdk("issue", "alice", 20_000)
        yield sdk


async def shown_as_answered(
    sdk: Sdk, answer: OperationOut | HoldOperationOut | ConversionOut | DonationOut
) -> TransactionReceiptOut:
    """``GET /v1/transactions/{id}`` shows the transaction the answer carried, field for field,
    signed over the same document."""
    shown = await sdk("transaction", answer.transaction.id)
    assert isinstance(shown, TransactionReceiptOut)
    assert shown.transaction == answer.transaction
    assert shown.receipt == answer.receipt
    return shown


async def balances_are_current(
    sdk: Sdk, answer: OperationOut | HoldOperationOut | ConversionOut | DonationOut
) -> None:
    """Right after an operation, its answer's balances are what ``GET /v1/members/{ref}``
    says."""
    for line in answer.balances:
        member = await sdk("member", line.member_ref)
        assert (member.balance, member.held, member.available) == (
            line.balance,
            line.held,
            line.available,
        )


def typed(transaction: TransactionOut) -> None:
    """The Struct's fields are decoded into their types, not left as JSON strings."""
    assert isinstance(transaction.id, uuid.UUID)
    assert isinstance(transaction.partner, uuid.UUID)
    assert isinstance(transaction.created_at, dt.datetime)
    assert transaction.created_at.tzinfo is not None


async def test_ledger_operations(sky_sdk: Sdk) -> None:
    """Issue, redeem, transfer and a partial reversal: each answer an OperationOut whose
    transaction is the one the exchange shows."""
    sdk = sky_sdk
    issued = await sdk("issue", "alice", 1_000, reference="flight LH1")
    await balances_are_current(sdk, issued)
    redeemed = await sdk("redeem", "alice", 300, reference="upgrade")
    await balances_are_current(sdk, redeemed)
    moved = await sdk("transfer", "alice", "bob", 200)
    await balances_are_current(sdk, moved)
    reversed_ = await sdk("reverse", issued.transaction.id, 100)
    await balances_are_current(sdk, reversed_)
    for answer, kind, points in [
        (issued, "issue", 1_000),
        (redeemed, "redeem", 300),
        (moved, "transfer", 200),
        (reversed_, "reverse", 100),
    ]:
        assert isinstance(answer, OperationOut)
        typed(answer.transaction)
        assert (answer.transaction.kind, answer.transaction.points) == (kind, points)
        await shown_as_answered(sdk, answer)
    assert issued.transaction.reference == "flight LH1"
    assert reversed_.transaction.reverses == issued.transaction.id
    assert [b.member_ref for b in moved.balances] == ["alice", "bob"]
    assert (await sdk("member", "alice")).balance == 20_000 + 1_000 - 300 - 200 - 100


async def test_holds(sky_sdk: Sdk) -> None:
    """Place, capture part of; place, void: each answer a HoldOperationOut whose hold names the
    transaction the exchange shows."""
    sdk = sky_sdk
    held = await sdk("hold", "alice", 500, expires_in=600, reference="cart 9")
    await balances_are_current(sdk, held)
    captured = await sdk("capture", held.hold.id, 200)
    await balances_are_current(sdk, captured)
    second = await sdk("hold", "alice", 50)
    await balances_are_current(sdk, second)
    voided = await sdk("void", second.hold.id)
    await balances_are_current(sdk, voided)
    for answer, status in [
        (held, "active"),
        (captured, "captured"),
        (second, "active"),
        (voided, "voided"),
    ]:
        assert isinstance(answer, HoldOperationOut)
        typed(answer.transaction)
        assert answer.hold.status == status
        assert answer.hold.transaction_id == answer.transaction.id
        shown = await shown_as_answered(sdk, answer)
        assert shown.transaction.hold == answer.hold.id
    assert (captured.hold.points, captured.hold.captured) == (500, 200)
    assert held.hold.expires_at - held.hold.created_at == dt.timedelta(seconds=600)
    assert [(b.balance, b.held) for b in voided.balances] == [(20_000 - 200, 0)]


async def test_conversions(sky_sdk: Sdk, coalition: Coalition) -> None:
    """Alice converts 10 000 SKY to HTL, once at a quote and once at the rate in force: 1% fee
    (100), 9 900 at 1000:750 is 7 425 HTL. The answer's transaction is what Sky Air sees; Hotel
    Co sees the same transaction with its own side, Alice's 7 425 HTL."""
    sdk = sky_sdk
    pricing = await sdk("rates")
    assert isinstance(pricing, PricingOut)
    [rate] = pricing.rates
    assert (rate.from_currency, rate.to_currency, rate.fee_bps) == ("SKY", "HTL", 100)
    async with sdk_for("async", coalition.server, coalition.htl) as htl:
        await htl("enrol", "alice")
        quote = await sdk("quote", "alice", "HTL", "alice", 10_000)
        assert isinstance(quote, QuoteOut)
        assert (quote.fee, quote.out, quote.rate_version_id) == (100, 7_425, rate.id)
        at_quote = await sdk("convert", None, None, None, None, quote_id=quote.quote_id)
        await balances_are_current(sdk, at_quote)
        at_rate = await sdk("convert", "alice", "HTL", "alice", 10_000)
        await balances_are_current(sdk, at_rate)
        for answer in (at_quote, at_rate):
            assert isinstance(answer, ConversionOut)
            typed(answer.transaction)
            assert answer.conversion.out == 7_425
            assert answer.conversion.money.destination_micros == 7_425 * 8_000
            assert answer.conversion.money.operator_fee_micros == 100 * 12_000
            await shown_as_answered(sdk, answer)
            theirs = await htl("transaction", answer.transaction.id)
            assert theirs.transaction.id == answer.transaction.id
            credited = [p.amount for p in theirs.transaction.postings if p.member_ref == "alice"]
            assert credited == [7_425]
        assert at_quote.conversion.quote_id == quote.quote_id
        assert at_rate.conversion.quote_id is None
        assert (await htl("member", "alice")).balance == 2 * 7_425


async def test_donations(sky_sdk: Sdk, coalition: Coalition) -> None:
    """Alice gives 5 000 SKY to Clean Water: the answer's transaction is the one shown, and its
    receipt names the transaction, the charity and what Sky Air owes (5 000 x 1.2 cents)."""
    sdk = sky_sdk
    charities = await sdk("charities")
    assert charities == [CharityOut(coalition.charity, "Clean Water", 100)]
    given = await sdk("donate", "alice", coalition.charity, 5_000)
    assert isinstance(given, DonationOut)
    await balances_are_current(sdk, given)
    typed(given.transaction)
    await shown_as_answered(sdk, given)
    receipt = given.donation_receipt
    assert receipt.id == str(given.transaction.id)
    assert (receipt.member_ref, receipt.points, receipt.amount_micros) == (
        "alice",
        5_000,
        5_000 * 12_000,
    )
    assert receipt.charity.id == str(coalition.charity)
    again = await sdk("donate", "alice", str(coalition.charity), 100)  # the id as a string
    assert again.donation_receipt.points == 100


async def test_batches(sky_sdk: Sdk) -> None:
    """A batch of an issue, a redemption too large and a transfer: two posted, one refused;
    each posted item's transaction is the one shown, and a replay of the batch posts nothing."""
    sdk = sky_sdk
    operations: list[BatchIssue | BatchRedemption | BatchTransfer] = [
        BatchIssue("b-1", "bob", 70),
        BatchRedemption("b-2", "bob", 10**9),
        BatchTransfer("b-3", "alice", "bob", 30),
    ]
    batch = await sdk("batch", operations)
    assert (batch.posted, batch.replayed, batch.refused) == (2, 0, 1)
    issued, refused, moved = batch.results
    assert refused.transaction is None
    assert refused.problem is not None
    assert str(refused.problem["type"]).endswith("insufficient-points")
    for item, kind in [(issued, "issue"), (moved, "transfer")]:
        assert item.transaction is not None
        typed(item.transaction)
        assert item.transaction.kind == kind
        shown = await sdk("transaction", item.transaction.id)
        assert shown.transaction == item.transaction
    replay = await sdk("batch", operations)
    assert (replay.posted, replay.replayed, replay.refused) == (0, 2, 1)
    assert (await sdk("member", "bob")).balance == 100
