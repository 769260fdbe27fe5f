"""Bodies of the signed API, as msgspec Structs.

Request bodies are decoded strictly (see ``exchange.http.signed_api.decode_strictly``): points
must be a JSON integer (not ``1.0``, ``"10"`` or ``true``), and unknown fields are refused with
a 422 rather than ignored, so that a misspelt optional field (``refrence``) is not silently
dropped. Answers may gain fields over time; clients should ignore fields they do not know.

One module (under 600 lines) of the request and answer Structs of every feature, kept
together because they are one document: the contract partners integrate against, read the way
the OpenAPI document lists it; settlement's answers have a module of their own
(``exchange.contract.settlement``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Literal

import msgspec

from exchange.contract.types import (
    MAX_MICROS_PER_POINT,
    MemberRef,
    Points,
    PointsFloor,
    Reference,
)

MAX_HOLD_SECONDS = 90 * 24 * 3600


class RequestBody(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Base of request bodies: unknown fields are refused. Encoded (by the SDK) without the
    optional fields left at their default, as a partner would write the body by hand."""


class MemberCreate(RequestBody):
    member_ref: MemberRef


class IssuanceCreate(RequestBody):
    member_ref: MemberRef
    points: Points
    reference: Reference | None = None


class RedemptionCreate(RequestBody):
    member_ref: MemberRef
    points: Points
    reference: Reference | None = None


class TransferCreate(RequestBody):
    from_member_ref: MemberRef
    to_member_ref: MemberRef
    points: Points
    reference: Reference | None = None


class HoldCreate(RequestBody):
    member_ref: MemberRef
    points: Points
    expires_in: (
        Annotated[
            int,
            msgspec.Meta(
                ge=1,
                le=MAX_HOLD_SECONDS,
                description="Seconds until the hold lapses (default: the service's setting).",
            ),
        ]
        | None
    ) = None
    reference: Reference | None = None


class HoldCapture(RequestBody):
    points: Points | None = None
    """Points to redeem, at most the held points; absent: all of them. The rest is released."""


class ReversalCreate(RequestBody):
    points: Points | None = None
    """Points to reverse; absent: all that remain to reverse."""


class PartnerCreate(RequestBody):
    kind: Literal["brand", "charity", "operator"]
    name: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z0-9]{1,15}$")] | None = None
    """A brand's points currency code, such as ``SKY``."""
    min_donation_points: Points | None = None
    """A charity's minimum donation."""
    code: Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z0-9]{1,15}$")] | None = None
    """A charity's stable code, which donations may name it by."""


class KeyCreate(RequestBody):
    alg: Literal["ed25519", "hmac-sha256"]
    public_key: Annotated[str, msgspec.Meta(max_length=4096)] | None = None
    """ed25519: the partner's public key, PEM (SubjectPublicKeyInfo). hmac-sha256: absent."""


class PublicKey(msgspec.Struct):
    """One of the exchange's public keys (``GET /v1/keys``), to verify what it signs."""

    key_id: str
    alg: str
    public_key: str
    """PEM (SubjectPublicKeyInfo)."""


class PartnerOut(msgspec.Struct):
    id: uuid.UUID
    kind: str
    name: str
    currency: str | None
    min_donation_points: Points | None = None


class MemberOut(msgspec.Struct):
    member_ref: MemberRef
    currency: str


class DocumentSignature(msgspec.Struct):
    """The exchange's detached Ed25519 signature over the canonical JSON (sorted keys, no spaces,
    UTF-8) of a document; the key is one of ``GET /v1/keys``."""

    key_id: str
    alg: str
    signature: str
    """Base64."""


class AccountHead(msgspec.Struct):
    """The head of a member account's hash chain, as the exchange signs it."""

    currency: str
    member_ref: MemberRef
    seq: int
    balance: int
    head_hash: str
    """Hex SHA-256 of the account's latest posting (64 zeros before the first)."""
    signed_at: dt.datetime


class MemberBalanceOut(msgspec.Struct):
    member_ref: MemberRef
    currency: str
    balance: int
    held: int
    available: int
    head: AccountHead
    signature: DocumentSignature
    """Over ``head``."""
    next_expiry_at: dt.datetime | None = None
    """When the member's next points expire (``None``: none of its points expire)."""
    next_expiry_points: int = 0
    """How many points expire then (held points included: an expiry takes only what is
    available, the rest at a later run)."""


class HistoryItem(msgspec.Struct):
    """One posting of the member's account chain, with every field its hash covers (the
    encoding is in the README, "What a partner can prove"), so a partner can recompute it."""

    transaction_id: uuid.UUID
    kind: str
    seq: int
    amount: int
    balance_after: int
    reference: str | None
    created_at: dt.datetime
    account_id: int = 0
    prev_hash: str = ""
    """Hex hash of the account's previous posting (64 zeros before the first)."""
    hash: str = ""
    """Hex SHA-256 of this posting's encoding."""
    counterparty_account_id: int = 0


class HistoryPage(msgspec.Struct):
    items: list[HistoryItem]
    next_cursor: str | None
    """Pass as ``cursor`` for the next (older) page; null on the last page."""


class PostingOut(msgspec.Struct):
    ledger: str
    account: str
    """The account's kind: ``member``, ``issuance`` or ``settlement``."""
    member_ref: MemberRef | None
    seq: int
    amount: int
    balance_after: int
    hash: str
    """Hex SHA-256 chaining this posting to the account's previous one."""
    account_id: int = 0
    prev_hash: str = ""
    """Hex hash of the account's previous posting: with ``account_id``, ``seq``, the
    transaction's id, ``amount``, ``balance_after`` and ``counterparty_account_id``, everything
    ``hash`` covers (the encoding is in docs/partner-guide-proofs.md)."""
    counterparty_account_id: int = 0


class TransactionOut(msgspec.Struct):
    """A transaction and the postings the caller may see (those on its own accounts)."""

    id: uuid.UUID
    kind: str
    partner: uuid.UUID
    """The partner that made it."""
    points: int
    reference: str | None
    reverses: uuid.UUID | None
    hold: uuid.UUID | None
    created_at: dt.datetime
    postings: list[PostingOut]


class BalanceOut(msgspec.Struct):
    member_ref: MemberRef
    balance: int
    held: int
    available: int


class TransactionReceiptOut(msgspec.Struct):
    transaction: TransactionOut
    receipt: DocumentSignature
    """Over ``transaction``."""


class OperationOut(msgspec.Struct):
    """The answer to a ledger operation: what was posted, signed, and the members' new balances."""

    transaction: TransactionOut
    receipt: DocumentSignature
    """Over ``transaction``."""
    balances: list[BalanceOut]


class HoldOut(msgspec.Struct):
    id: uuid.UUID
    member_ref: MemberRef
    points: Points
    captured: int
    status: str
    """``active``, ``captured``, ``voided`` or ``expired``."""
    expires_at: dt.datetime
    created_at: dt.datetime
    transaction_id: uuid.UUID
    """The latest transaction of the hold (placed, captured or voided)."""


class HoldOperationOut(msgspec.Struct):
    hold: HoldOut
    transaction: TransactionOut
    receipt: DocumentSignature
    """Over ``transaction``."""
    balances: list[BalanceOut]


class KeyOut(msgspec.Struct):
    key_id: str
    partner_id: uuid.UUID
    alg: str
    secret: str | None = None
    """hmac-sha256 only: the shared secret (base64), in this answer once and never again. A
    retry with the same Idempotency-Key answers with the same key id and a null secret."""


class KeyRevocationOut(msgspec.Struct):
    key_id: str
    partner_id: uuid.UUID
    revoked_at: dt.datetime


# --- pricing, conversions and donations ---------------------------------------------------------

CurrencyCode = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Z][A-Z0-9]{1,15}$", description="A brand's points currency code, e.g. SKY."
    ),
]
AwareTime = Annotated[
    dt.datetime, msgspec.Meta(tz=True, description="RFC 3339, with a time zone or offset.")
]
DestinationBrand = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        description="The destination brand: its points currency code (``HTL``) or its partner id.",
    ),
]


class PointValueCreate(RequestBody):
    currency: CurrencyCode
    micros_per_point: Annotated[
        int,
        msgspec.Meta(
            ge=1,
            le=MAX_MICROS_PER_POINT,
            description="Settlement-currency micros one point is worth (12000 = 1.2 cents);"
            " at most 10^6, one unit of the settlement currency.",
        ),
    ]
    effective_at: AwareTime | None = None
    """From when the value holds: now (the default) or later, never earlier."""


class RateCreate(RequestBody):
    from_currency: CurrencyCode
    to_currency: CurrencyCode
    from_points: Points
    to_points: Points
    """Destination points given per ``from_points`` source points."""
    fee_bps: Annotated[int, msgspec.Meta(ge=0, le=10_000)]
    """The operator's fee in basis points of the source points, rounded up."""
    min_points: PointsFloor = 0
    """The fewest source points one conversion may take."""
    effective_at: AwareTime | None = None
    """From when the version holds: now (the default) or later, never earlier."""


class PointValueOut(msgspec.Struct):
    id: uuid.UUID
    partner_id: uuid.UUID
    currency: str
    micros_per_point: int
    effective_at: dt.datetime
    created_at: dt.datetime


class RateOut(msgspec.Struct):
    id: uuid.UUID
    """The rate version's id: conversions and quotes name it as ``rate_version_id``."""
    from_partner_id: uuid.UUID
    from_currency: str
    to_partner_id: uuid.UUID
    to_currency: str
    from_points: Points
    to_points: Points
    fee_bps: int
    min_points: PointsFloor
    effective_at: dt.datetime
    created_at: dt.datetime


class PricingOut(msgspec.Struct):
    at: dt.datetime
    """The moment the versions below are in force at."""
    point_values: list[PointValueOut]
    rates: list[RateOut]


class CharityOut(msgspec.Struct):
    id: uuid.UUID
    """What ``POST /v1/donations`` takes as ``charity`` (or the ``code``)."""
    name: str
    min_donation_points: Points | None
    code: str | None = None
    """The charity's stable code (``AID``), as a brand has its currency; ``POST /v1/donations``
    takes it as ``charity``."""


class QuoteCreate(RequestBody):
    member_ref: MemberRef
    to_partner: DestinationBrand
    to_member_ref: MemberRef
    """The member at the destination brand, enrolled there."""
    points: Points


class ConversionCreate(RequestBody):
    """Either the four fields, or ``quote_id`` (and any of the four, which must match it)."""

    member_ref: MemberRef | None = None
    to_partner: DestinationBrand | None = None
    to_member_ref: MemberRef | None = None
    points: Points | None = None
    quote_id: uuid.UUID | None = None
    """A quote of the caller's from ``POST /v1/quotes``, unused and unexpired: the conversion
    takes its rate version and values."""
    reference: Reference | None = None


class ConversionMoney(msgspec.Struct):
    """What the conversion makes the source brand owe, in micros of the settlement currency."""

    currency: str
    destination_micros: int
    """Owed to the destination brand: ``out * destination_value_micros``."""
    operator_fee_micros: int
    """Owed to the operator: ``fee * source_value_micros``."""


class QuoteOut(msgspec.Struct):
    quote_id: uuid.UUID
    rate_version_id: uuid.UUID
    from_currency: str
    to_currency: str
    member_ref: MemberRef
    to_member_ref: MemberRef
    points: Points
    fee: int
    """Source points kept as the operator's fee: ``ceil(points * fee_bps / 10000)``."""
    out: int
    """Destination points the member will get:
    ``floor((points - fee) * to_points / from_points)``."""
    source_value_micros: int
    destination_value_micros: int
    money: ConversionMoney
    expires_at: dt.datetime
    """Spend it with ``POST /v1/conversions`` ``{"quote_id": ...}`` before then."""
    created_at: dt.datetime


class ConversionTerms(msgspec.Struct):
    rate_version_id: uuid.UUID
    quote_id: uuid.UUID | None
    from_currency: str
    to_currency: str
    member_ref: MemberRef
    to_member_ref: MemberRef
    points: Points
    fee: int
    out: int
    source_value_micros: int
    destination_value_micros: int
    money: ConversionMoney


class ConversionOut(msgspec.Struct):
    """What was posted (the postings on the caller's accounts), signed; its terms; the source
    member's new balance. The destination brand sees its side with ``GET /v1/transactions/{id}``."""

    transaction: TransactionOut
    receipt: DocumentSignature
    """Over ``transaction``."""
    conversion: ConversionTerms
    balances: list[BalanceOut]


class DonationCreate(RequestBody):
    member_ref: MemberRef
    charity: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    """The charity's code (``AID``) or partner id (``GET /v1/charities`` lists both)."""
    points: Points
    reference: Reference | None = None


class CharityRef(msgspec.Struct):
    id: str
    name: str


class DonationReceiptOut(msgspec.Struct, forbid_unknown_fields=True):
    """The member's donation receipt. ``signature`` is the exchange's over the other members of
    this object, encoded canonically, exactly as they appear here (so ``created_at`` is the
    signed string, not re-formatted)."""

    type: str
    """Always ``donation-receipt``."""
    id: str
    """The donation's transaction id."""
    member_ref: MemberRef
    points_currency: str
    charity: CharityRef
    points: Points
    amount_micros: int
    """What the brand owes the charity for the points, in micros of ``currency``."""
    currency: str
    created_at: str
    signature: DocumentSignature


class DonationOut(msgspec.Struct):
    """Shaped as every operation's answer: ``transaction`` and ``receipt`` (the exchange's
    signature over it), then what is particular to a donation under its own name."""

    transaction: TransactionOut
    receipt: DocumentSignature
    """Over ``transaction``, as in every other operation's answer."""
    donation_receipt: DonationReceiptOut
    """The member's donation receipt, signed by the exchange over its own members."""
    balances: list[BalanceOut]
