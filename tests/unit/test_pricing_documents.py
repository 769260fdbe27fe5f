"""Pure pieces of pricing: the donation receipt document and the CLI's reading of times."""

from __future__ import annotations

import datetime as dt
import uuid

import click
import pytest

from exchange.donations.receipts import DonationReceipt, donation_receipt_document
from exchange.signing import canonical_json

CET = dt.timezone(dt.timedelta(hours=1))


def _receipt(created_at: dt.datetime) -> DonationReceipt:
    return DonationReceipt(
        id=uuid.UUID("01a203ea-a2f7-76f2-9bbb-a10aaa303926"),
        member_ref="alice",
        points_currency="SKY",
        charity_id=uuid.UUID("01a203ea-9b2c-74d9-8d4e-30b7b695b2dd"),
        charity_name="Clean Water",
        points=5_000,
        amount_micros=60_000_000,
        currency="EUR",
        created_at=created_at,
    )


def test_the_receipt_document_is_canonical_json_in_utc() -> None:
    document = donation_receipt_document(_receipt(dt.datetime(2026, 11, 22, 16, 30, tzinfo=CET)))
    assert canonical_json(document) == (
        b'{"amount_micros":60000000,"charity":{"id":"01a203ea-9b2c-74d9-8d4e-30b7b695b2dd",'
        b'"name":"Clean Water"},"created_at":"2026-11-22T15:30:00Z","currency":"EUR",'
        b'"id":"01a203ea-a2f7-76f2-9bbb-a10aaa303926","member_ref":"alice","points":5000,'
        b'"points_currency":"SKY","type":"donation-receipt"}'
    )


def test_the_same_moment_in_another_zone_gives_the_same_document() -> None:
    utc = dt.datetime(2026, 11, 22, 15, 30, tzinfo=dt.UTC)
    assert donation_receipt_document(_receipt(utc)) == donation_receipt_document(
        _receipt(utc.astimezone(CET))
    )


@pytest.mark.filterwarnings("ignore:The declarative_mixin decorator:DeprecationWarning")
@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2030-01-01", dt.datetime(2030, 1, 1, tzinfo=dt.UTC)),
        ("2030-01-01T12:00:00", dt.datetime(2030, 1, 1, 12, tzinfo=dt.UTC)),
        ("2030-01-01T12:00:00+01:00", dt.datetime(2030, 1, 1, 11, tzinfo=dt.UTC)),
    ],
)
def test_the_cli_reads_iso_times_and_takes_a_bare_time_as_utc(
    given: str, expected: dt.datetime
) -> None:
    from exchange.pricing.cli import parse_moment

    assert parse_moment(None, None, given) == expected


@pytest.mark.filterwarnings("ignore:The declarative_mixin decorator:DeprecationWarning")
def test_the_cli_refuses_what_is_not_a_time() -> None:
    from exchange.pricing.cli import parse_moment

    with pytest.raises(click.BadParameter):
        parse_moment(None, None, "next tuesday")
