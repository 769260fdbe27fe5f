"""Donations on the real ledger: the worked example, its reversal in parts, the receipt, refusals.

SKY points are worth 12 000 micros (1.2 cents) each; money in micros of EUR.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.donations import receipts
from exchange.donations import service as donations
from exchange.errors import (
    BelowCharityMinimum,
    DomainError,
    InsufficientPoints,
    MemberNotFound,
    NotACharity,
    PointValueNotFound,
)
from exchange.ledger.members import enrol_member
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.operations import issue
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reversal import reverse
from exchange.ledger.verify import verify_ledger
from exchange.pricing import service as rates
from exchange.settings import Settings
from exchange.signing import ExchangeKeys, verify_document
from tests.conftest import make_partner
from tests.integration.ledger_pages import balances, counts, ledger_sums, postings

Sessions = async_sessionmaker[AsyncSession]


@pytest.fixture
async def charity(sessions: Sessions, settings: Settings, sky: PartnerInfo) -> PartnerInfo:
    """A charity taking donations of 100 points or more (registered after SKY)."""
    return await make_partner(sessions, settings, "charity", "Clean Water", min_donation_points=100)


@pytest.fixture
async def alice(sessions: Sessions, sky: PartnerInfo) -> str:
    """Alice, a SKY member with 20 000 points; SKY points worth 12 000 micros each."""
    async with sessions() as s, s.begin():
        await rates.set_point_value(s, "SKY", 12_000)
        await enrol_member(s, sky, "alice")
        await issue(s, sky, "alice", 20_000)
    return "alice"


async def test_member_donates_5_000_sky_to_a_charity(
    sessions: Sessions, sky: PartnerInfo, charity: PartnerInfo, alice: str
) -> None:
    async with sessions() as s:
        before = await balances(s)
    async with sessions() as s, s.begin():
        receipt = await donations.post_donation(s, sky, "alice", charity.id, 5_000)

    # 5 000 SKY * 12 000 micros = 60 000 000 micros: SKY owes Clean Water 60.00 EUR
    assert (receipt.points, receipt.amount_micros, receipt.currency) == (5_000, 60_000_000, "EUR")
    assert (receipt.charity_id, receipt.charity_name) == (charity.id, "Clean Water")
    assert (receipt.member_ref, receipt.points_currency) == ("alice", "SKY")
    async with sessions() as s:
        assert await postings(s, receipt.id) == {
            "SKY:alice": -5_000,
            "SKY:issuance": 5_000,
            "EUR:Sky Air": -60_000_000,
            "EUR:Clean Water": 60_000_000,
        }
        row = (
            await s.execute(
                select(LedgerTransaction.__table__).where(
                    LedgerTransaction.__table__.c.id == receipt.id
                )
            )
        ).one()
    assert (row.kind, row.points, row.partner_id, row.rate_version_id) == (
        "donate", 5_000, sky.id, None,
    )  # fmt: skip
    assert json.loads(row.details)["amount_micros"] == 60_000_000

    # Reverse 1 234 points, then the other 3 766: the money follows the points exactly.
    async with sessions() as s, s.begin():
        first = await reverse(s, sky, receipt.id, 1_234)
    async with sessions() as s:
        assert await postings(s, first.id) == {
            "SKY:alice": 1_234,
            "SKY:issuance": -1_234,
            "EUR:Sky Air": 14_808_000,
            "EUR:Clean Water": -14_808_000,
        }
    async with sessions() as s, s.begin():
        rest = await reverse(s, sky, receipt.id)
    async with sessions() as s:
        assert await postings(s, rest.id) == {
            "SKY:alice": 3_766,
            "SKY:issuance": -3_766,
            "EUR:Sky Air": 45_192_000,
            "EUR:Clean Water": -45_192_000,
        }
        assert await balances(s) == before
        assert set((await ledger_sums(s)).values()) == {0}
        assert (await verify_ledger(s)).ok


async def test_the_receipt_document_is_what_gets_signed(
    sessions: Sessions, sky: PartnerInfo, charity: PartnerInfo, alice: str
) -> None:
    async with sessions() as s, s.begin():
        receipt = await donations.post_donation(s, sky, "alice", str(charity.id), 100)
    document = receipts.donation_receipt_document(receipt)
    assert document == {
        "type": "donation-receipt",
        "id": str(receipt.id),
        "member_ref": "alice",
        "points_currency": "SKY",
        "charity": {"id": str(charity.id), "name": "Clean Water"},
        "points": 100,
        "amount_micros": 1_200_000,
        "currency": "EUR",
        "created_at": receipt.created_at.isoformat().replace("+00:00", "Z"),
    }
    assert document["created_at"].endswith("Z")  # RFC 3339 UTC, as every timestamp (issue 16)
    private = Ed25519PrivateKey.generate()
    keys = ExchangeKeys(private, "test", {"test": private.public_key()})
    signature = keys.sign_document(document)
    assert verify_document(document, signature, private.public_key())
    assert not verify_document({**document, "points": 101}, signature, private.public_key())


async def _refused(
    sessions: Sessions, error: type[DomainError], work: Callable[[AsyncSession], Awaitable[Any]]
) -> DomainError:
    async with sessions() as s:
        before = await counts(s)
    with pytest.raises(error) as refused:
        async with sessions() as s, s.begin():
            await work(s)
    async with sessions() as s:
        assert await counts(s) == before
    return refused.value


@pytest.mark.parametrize(
    ("case", "error", "slug"),
    [
        ("to a brand", NotACharity, "not-a-charity"),
        ("to nobody", NotACharity, "not-a-charity"),
        ("to a malformed id", NotACharity, "not-a-charity"),
        ("below the charity's minimum", BelowCharityMinimum, "below-charity-minimum"),
        ("more than available", InsufficientPoints, "insufficient-points"),
        ("not a member", MemberNotFound, "member-not-found"),
    ],
)
async def test_donation_refusals(
    sessions: Sessions,
    sky: PartnerInfo,
    htl: PartnerInfo,
    charity: PartnerInfo,
    alice: str,
    case: str,
    error: type[DomainError],
    slug: str,
) -> None:
    attempts: dict[str, Callable[[AsyncSession], Awaitable[Any]]] = {
        "to a brand": lambda s: donations.post_donation(s, sky, "alice", htl.id, 1_000),
        "to nobody": lambda s: donations.post_donation(s, sky, "alice", uuid.uuid4(), 1_000),
        "to a malformed id": lambda s: donations.post_donation(
            s, sky, "alice", "clean-water", 1_000
        ),
        "below the charity's minimum": lambda s: donations.post_donation(
            s, sky, "alice", charity.id, 99
        ),
        "more than available": lambda s: donations.post_donation(
            s, sky, "alice", charity.id, 20_001
        ),
        "not a member": lambda s: donations.post_donation(s, sky, "carol", charity.id, 1_000),
    }
    refused = await _refused(sessions, error, attempts[case])
    assert refused.slug == slug
    if case == "below the charity's minimum":
        assert refused.extra == {"points": 99, "min_donation_points": 100}


async def test_a_donation_needs_a_point_value_in_force(
    sessions: Sessions, sky: PartnerInfo, htl: PartnerInfo, charity: PartnerInfo
) -> None:
    async with sessions() as s, s.begin():
        await enrol_member(s, htl, "bob")
        await issue(s, htl, "bob", 1_000)
    await _refused(
        sessions,
        PointValueNotFound,
        lambda s: donations.post_donation(s, htl, "bob", charity.id, 1_000),
    )
