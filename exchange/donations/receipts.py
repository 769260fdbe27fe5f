"""The member's donation receipt and the canonical document the exchange signs for it."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import msgspec

from exchange.base import rfc3339
from exchange.contract.schemas import DonationReceiptOut
from exchange.signing import ExchangeKeys


@dataclass(frozen=True)
class DonationReceipt:
    """What the member is given for a donation; the API signs :func:`donation_receipt_document`."""

    id: uuid.UUID
    """The donation's transaction id."""
    member_ref: str
    points_currency: str
    charity_id: uuid.UUID
    charity_name: str
    points: int
    amount_micros: int
    currency: str
    """The settlement currency ``amount_micros`` is in."""
    created_at: dt.datetime


def donation_receipt_document(receipt: DonationReceipt) -> dict[str, Any]:
    """The canonical document of a receipt, as signed: JSON types only, times in UTC ISO 8601,
    and a ``type`` so a signature over it cannot pass for one over another kind of document."""
    return {
        "type": "donation-receipt",
        "id": str(receipt.id),
        "member_ref": receipt.member_ref,
        "points_currency": receipt.points_currency,
        "charity": {"id": str(receipt.charity_id), "name": receipt.charity_name},
        "points": receipt.points,
        "amount_micros": receipt.amount_micros,
        "currency": receipt.currency,
        "created_at": rfc3339(receipt.created_at),
    }


def signed_receipt(keys: ExchangeKeys, receipt: DonationReceipt) -> DonationReceiptOut:
    """The receipt's document with the exchange's signature over it, as the API answers it."""
    document = donation_receipt_document(receipt)
    return msgspec.convert(
        {**document, "signature": keys.sign_document(document)}, DonationReceiptOut
    )
