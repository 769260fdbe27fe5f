"""Bodies of earn rules and purchases: a brand's rules turning an order into points, the orders
(purchases) that earned them, their returns and quotes.

The arithmetic behind the numbers (a rate per currency, multipliers in basis points, one floor
per line, a cap shared out by largest remainder) is ``exchange.purchases.arithmetic``'s.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated

import msgspec

from exchange.contract.schemas import (
    AwareTime,
    BalanceOut,
    DocumentSignature,
    RequestBody,
    TransactionOut,
)
from exchange.contract.types import MemberRef, Points

MAX_ORDER_LINES = 100
"""An order has 1 to 100 lines."""
MAX_MINOR_UNITS = 10**12
"""A line's amount, in minor units of its currency (cents), is 0 to 10^12."""
MAX_QUANTITY = 10**6
MAX_MULTIPLIER_BPS = 1_000_000
"""A multiplier is 0 to 100x, in basis points (10 000 = 1x)."""
MAX_RATE_POINTS = 10**6
MAX_RATE_MINOR_UNITS = 10**9
MAX_PROMOTIONS = 50
MAX_MULTIPLIERS = 200

Label = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=64,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="A SKU, product type or category, as the brand names it (1 to 64 characters).",
    ),
]
OrderId = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f\x7f]+$",
        description="The brand's own order number, unique per brand.",
    ),
]
MoneyCurrency = Annotated[
    str, msgspec.Meta(pattern=r"^[A-Z]{3}$", description="ISO 4217 code of the order's money.")
]
MinorUnits = Annotated[
    int,
    msgspec.Meta(
        ge=0, le=MAX_MINOR_UNITS, description="Minor units of the currency (cents), 0 to 10^12."
    ),
]
Quantity = Annotated[int, msgspec.Meta(ge=1, le=MAX_QUANTITY)]
MultiplierBps = Annotated[
    int,
    msgspec.Meta(
        ge=0,
        le=MAX_MULTIPLIER_BPS,
        description="Basis points: 10 000 is 1x, 15 000 is 1.5x, 20 000 double points.",
    ),
]
LineNumber = Annotated[
    int, msgspec.Meta(ge=1, le=MAX_ORDER_LINES, description="A line of the order, from 1.")
]


class EarnRate(RequestBody):
    """``points`` per ``per_minor_units`` minor units spent in ``currency``: 1 point per euro is
    ``{"currency": "EUR", "points": 1, "per_minor_units": 100}``."""

    currency: MoneyCurrency
    points: Annotated[int, msgspec.Meta(ge=1, le=MAX_RATE_POINTS)]
    per_minor_units: Annotated[int, msgspec.Meta(ge=1, le=MAX_RATE_MINOR_UNITS)]


class Promotion(RequestBody):
    """A multiplier for the lines of a category (and/or product type; neither: every line) on
    orders made from ``starts_at`` (included) to ``ends_at`` (excluded)."""

    multiplier_bps: MultiplierBps
    starts_at: AwareTime
    ends_at: AwareTime
    category: Label | None = None
    product_type: Label | None = None


class EarnRulesCreate(RequestBody):
    """A new version of the calling brand's earn rules, in force from ``effective_at`` (now by
    default, never earlier) until the next version."""

    rates: Annotated[list[EarnRate], msgspec.Meta(min_length=1, max_length=50)]
    """One per currency the brand takes orders in (each currency once)."""
    product_type_multipliers_bps: Annotated[
        dict[str, MultiplierBps], msgspec.Meta(max_length=MAX_MULTIPLIERS)
    ] = {}
    category_multipliers_bps: Annotated[
        dict[str, MultiplierBps], msgspec.Meta(max_length=MAX_MULTIPLIERS)
    ] = {}
    promotions: Annotated[list[Promotion], msgspec.Meta(max_length=MAX_PROMOTIONS)] = []
    order_cap: Points | None = None
    """The most points one order earns; absent: no cap."""
    effective_at: AwareTime | None = None


class EarnRulesOut(msgspec.Struct):
    id: uuid.UUID
    """The rule version: every purchase records the one it was priced with."""
    partner_id: uuid.UUID
    rates: list[EarnRate]
    product_type_multipliers_bps: dict[str, int]
    category_multipliers_bps: dict[str, int]
    promotions: list[Promotion]
    order_cap: int | None
    effective_at: dt.datetime
    created_at: dt.datetime


class EarnRulesPage(msgspec.Struct):
    at: dt.datetime
    current: EarnRulesOut | None
    """The version in force at ``at``; null before the first."""
    versions: list[EarnRulesOut]
    """Every version, the latest ``effective_at`` first (future ones included)."""


class OrderLine(RequestBody):
    sku: Label
    product_type: Label
    category: Label
    amount_minor: MinorUnits
    """What the whole line cost (all its units), in minor units of the order's currency."""
    quantity: Quantity = 1


class PurchaseCreate(RequestBody):
    order_id: OrderId
    member_ref: MemberRef
    currency: MoneyCurrency
    lines: Annotated[list[OrderLine], msgspec.Meta(min_length=1, max_length=MAX_ORDER_LINES)]


class PurchaseQuoteCreate(RequestBody):
    """An order as it stands at checkout: what it would earn now, nothing posted."""

    currency: MoneyCurrency
    lines: Annotated[list[OrderLine], msgspec.Meta(min_length=1, max_length=MAX_ORDER_LINES)]


class ReturnLine(RequestBody):
    line: LineNumber
    quantity: Quantity
    """Units of that line given back (of its ``quantity``, less what was returned before)."""


class ReturnCreate(RequestBody):
    lines: Annotated[list[ReturnLine], msgspec.Meta(min_length=1, max_length=MAX_ORDER_LINES)]
    """Each line of the order at most once."""


class LineEarnOut(msgspec.Struct):
    line: int
    sku: str
    product_type: str
    category: str
    quantity: int
    amount_minor: int
    product_type_bps: int
    category_bps: int
    promotion_bps: int
    """The multipliers that applied (10 000 where none did)."""
    points: int
    """What the line earned, after the order's cap."""
    returned_quantity: int = 0
    returned_points: int = 0


class EarnQuoteOut(msgspec.Struct):
    rule_version_id: uuid.UUID
    currency: str
    points: int
    """What the order earns: the sum of its lines' points."""
    capped: bool
    """The rule version's ``order_cap`` cut the lines' points down to it."""
    lines: list[LineEarnOut]


class ReturnLineOut(msgspec.Struct):
    line: int
    quantity: int
    points: int


class ReturnView(msgspec.Struct):
    id: uuid.UUID
    transaction_id: uuid.UUID | None
    """The ``reverse`` transaction that took the points back; null when they came to 0."""
    points: int
    created_at: dt.datetime
    lines: list[ReturnLineOut]


class PurchaseView(msgspec.Struct):
    id: uuid.UUID
    order_id: str
    member_ref: str
    currency: str
    rule_version_id: uuid.UUID
    transaction_id: uuid.UUID
    """The ``earn`` transaction."""
    points: int
    returned_points: int
    """Taken back by the returns, never more than ``points``."""
    created_at: dt.datetime
    lines: list[LineEarnOut]
    returns: list[ReturnView]


class PurchaseOut(msgspec.Struct):
    """The answer to a purchase: the order and its points, the ``earn`` transaction, the
    exchange's signature over it and the member's new balance."""

    purchase: PurchaseView
    transaction: TransactionOut
    receipt: DocumentSignature
    """Over ``transaction``."""
    balances: list[BalanceOut]


class ReturnOut(msgspec.Struct):
    purchase: PurchaseView
    returned: ReturnView
    """This return."""
    transaction: TransactionOut | None
    """Its ``reverse`` transaction; null when the units returned carried no points."""
    receipt: DocumentSignature | None
    balances: list[BalanceOut]
