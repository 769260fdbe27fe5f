"""Purchases: an order turned into points by the brand's earn rules, posted through the one engine
as ONE ``earn`` transaction, and its returns, each taking back its lines' share.

Every function works inside the caller's database transaction and never commits.

A purchase of an order that earns ``P`` points (``exchange.purchases.arithmetic``)

    ledger A      member  +P            A issuance  -P          (kind ``earn``)

records the rule version and each line's points in the transaction's details, and the order
with its lines in ``purchase`` and ``purchase_line``. The order's row is written first, so a
second purchase of the same order id waits on the unique index before it locks any account,
and is refused (``order-exists``) once the first commits.

A return of some units takes back their points (cumulative floors per line) with a ``reverse``
of the ``earn`` transaction (:func:`exchange.ledger.reversal.reverse`, kind restricted to
``earn``, capped by its points). If the member has spent them, the return is refused
(``insufficient-points``, with what is available) and nothing is recorded: a member's balance
never goes below zero, and forgiving the difference silently would leave the brand's books
claiming points that were never taken back. The brand decides (redeem later, settle otherwise)
and returns the units again when it can.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import utcnow, uuid7
from exchange.contract.purchases import (
    EarnQuoteOut,
    LineEarnOut,
    OrderLine,
    PurchaseCreate,
    PurchaseView,
    ReturnCreate,
    ReturnLineOut,
    ReturnView,
)
from exchange.contract.types import MAX_POINTS
from exchange.errors import (
    InvalidInput,
    LimitExceeded,
    NothingEarned,
    OrderExists,
    PurchaseNotFound,
    ReturnExceedsPurchase,
)
from exchange.ledger.engine import PostedTransaction, post_transaction
from exchange.ledger.members import MemberAccount, brand_currency, get_member
from exchange.ledger.operations import earn_spec
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reversal import EARN_KINDS, reverse
from exchange.pricing.service import moment_of
from exchange.purchases.arithmetic import Line, OrderEarn, order_earn, returned_points
from exchange.purchases.models import (
    Purchase,
    PurchaseLine,
    PurchaseReturn,
    PurchaseReturnLine,
)
from exchange.purchases.rules import earn_rules, rules_in_force

purchase_t = cast(Table, Purchase.__table__)
line_t = cast(Table, PurchaseLine.__table__)
return_t = cast(Table, PurchaseReturn.__table__)
return_line_t = cast(Table, PurchaseReturnLine.__table__)


@dataclass(frozen=True)
class PricedOrder:
    """An order priced under the rule version in force at ``at``."""

    rule_version_id: uuid.UUID
    currency: str
    lines: Sequence[OrderLine]
    earn: OrderEarn
    at: dt.datetime

    def line_rows(self, purchase_id: uuid.UUID) -> list[dict[str, Any]]:
        return [
            {
                "purchase_id": purchase_id,
                "line": number,
                "sku": line.sku,
                "product_type": line.product_type,
                "category": line.category,
                "quantity": line.quantity,
                "amount_minor": line.amount_minor,
                "product_type_bps": earned.product_type_bps,
                "category_bps": earned.category_bps,
                "promotion_bps": earned.promotion_bps,
                "points": earned.points,
            }
            for number, (line, earned) in enumerate(
                zip(self.lines, self.earn.lines, strict=True), start=1
            )
        ]

    def details(self, order_id: str, purchase_id: uuid.UUID, member_ref: str) -> dict[str, Any]:
        """What the ``earn`` transaction keeps of its purchase."""
        return {
            "purchase_id": str(purchase_id),
            "order_id": order_id,
            "member_ref": member_ref,
            "earn_rule_version_id": str(self.rule_version_id),
            "currency": self.currency,
            "line_points": [line.points for line in self.earn.lines],
        }


async def price_order(
    session: AsyncSession,
    caller: PartnerInfo,
    currency: str,
    lines: Sequence[OrderLine],
    at: dt.datetime | None = None,
) -> PricedOrder:
    """What the order would earn at ``at`` (default now) under the caller's rules in force."""
    brand_currency(caller)
    moment = moment_of(at)
    version = await rules_in_force(session, caller, moment)
    earn = order_earn(
        earn_rules(version),
        currency,
        [Line(x.sku, x.product_type, x.category, x.amount_minor, x.quantity) for x in lines],
        moment,
    )
    if earn.points > MAX_POINTS:
        raise LimitExceeded(
            f"the order would earn {earn.points} points, more than {MAX_POINTS} at once",
            points=earn.points,
        )
    return PricedOrder(version.id, currency, lines, earn, moment)


def quote_out(priced: PricedOrder) -> EarnQuoteOut:
    return EarnQuoteOut(
        rule_version_id=priced.rule_version_id,
        currency=priced.currency,
        points=priced.earn.points,
        capped=priced.earn.capped,
        lines=[_line_out(row) for row in priced.line_rows(uuid7())],
    )


def earning(priced: PricedOrder, order_id: str) -> int:
    """The order's points, refused when there are none (a transaction moves something)."""
    if priced.earn.points == 0:
        raise NothingEarned(f"order {order_id} earns no points", order_id=order_id)
    return priced.earn.points


async def _insert_purchase(session: AsyncSession, row: dict[str, Any]) -> None:
    """The order's row; ``order-exists`` when the brand's order id has one already (after the
    purchase that wrote it committed, if it was running)."""
    try:
        async with session.begin_nested():
            await session.execute(insert(purchase_t).values(**row))
    except IntegrityError as exc:
        raise OrderExists(
            f"order {row['order_id']} has earned its points already", order_id=row["order_id"]
        ) from exc


def purchase_row(
    caller: PartnerInfo,
    data: PurchaseCreate,
    priced: PricedOrder,
    purchase_id: uuid.UUID,
    transaction_id: uuid.UUID,
) -> dict[str, Any]:
    return {
        "id": purchase_id,
        "partner_id": caller.id,
        "order_id": data.order_id,
        "member_ref": data.member_ref,
        "currency": data.currency,
        "rule_version_id": priced.rule_version_id,
        "transaction_id": transaction_id,
        "points": priced.earn.points,
        "created_at": priced.at,
    }


async def post_purchase(
    session: AsyncSession,
    caller: PartnerInfo,
    data: PurchaseCreate,
    *,
    idempotency_key: str | None = None,
    at: dt.datetime | None = None,
) -> tuple[PurchaseView, PostedTransaction]:
    """Issue the points the order earns, as one ``earn`` transaction, and keep the order."""
    priced = await price_order(session, caller, data.currency, data.lines, at)
    points = earning(priced, data.order_id)
    member: MemberAccount = await get_member(session, caller, data.member_ref)
    purchase_id, transaction_id = uuid7(), uuid7()
    await _insert_purchase(session, purchase_row(caller, data, priced, purchase_id, transaction_id))
    await session.execute(insert(line_t), priced.line_rows(purchase_id))
    spec = earn_spec(
        caller, member, points,
        details=priced.details(data.order_id, purchase_id, data.member_ref),
        reference=data.order_id, idempotency_key=idempotency_key,
    )  # fmt: skip
    posted = await post_transaction(session, spec._replace(transaction_id=transaction_id))
    return await purchase_view(session, caller, purchase_id), posted


async def _purchase(
    session: AsyncSession, caller: PartnerInfo, purchase_id: uuid.UUID, *, lock: bool = False
) -> Any:
    """The caller's purchase; another brand's is as absent as one that never was."""
    query = select(purchase_t).where(
        purchase_t.c.id == purchase_id, purchase_t.c.partner_id == caller.id
    )
    row = (await session.execute(query.with_for_update() if lock else query)).first()
    if row is None:
        raise PurchaseNotFound(f"no purchase {purchase_id}", purchase_id=str(purchase_id))
    return row


def _line_out(row: Any, returned: tuple[int, int] = (0, 0)) -> LineEarnOut:
    """A line's row (a ``purchase_line`` row, or the dict written as one) as answered."""
    get: Mapping[str, Any] = row if isinstance(row, dict) else row._mapping
    return LineEarnOut(
        line=get["line"], sku=get["sku"], product_type=get["product_type"],
        category=get["category"], quantity=get["quantity"], amount_minor=get["amount_minor"],
        product_type_bps=get["product_type_bps"], category_bps=get["category_bps"],
        promotion_bps=get["promotion_bps"], points=get["points"],
        returned_quantity=returned[0], returned_points=returned[1],
    )  # fmt: skip


async def _returns(session: AsyncSession, purchase_id: uuid.UUID) -> list[ReturnView]:
    rows = (
        await session.execute(
            select(return_t, return_line_t.c.line, return_line_t.c.quantity,
                   return_line_t.c.points.label("line_points"))
            .join(return_line_t, return_line_t.c.return_id == return_t.c.id)
            .where(return_t.c.purchase_id == purchase_id)
            .order_by(return_t.c.created_at, return_t.c.id, return_line_t.c.line)
        )
    ).all()  # fmt: skip
    views: dict[uuid.UUID, ReturnView] = {}
    for row in rows:
        view = views.get(row.id)
        if view is None:
            view = views[row.id] = ReturnView(
                id=row.id, transaction_id=row.transaction_id, points=row.points,
                created_at=row.created_at, lines=[],
            )  # fmt: skip
        view.lines.append(ReturnLineOut(row.line, row.quantity, row.line_points))
    return list(views.values())


async def purchase_view(
    session: AsyncSession, caller: PartnerInfo, purchase_id: uuid.UUID
) -> PurchaseView:
    """The caller's purchase, its lines with what each has returned, and its returns."""
    brand_currency(caller)
    purchase = await _purchase(session, caller, purchase_id)
    lines = (
        await session.execute(
            select(line_t).where(line_t.c.purchase_id == purchase_id).order_by(line_t.c.line)
        )
    ).all()
    returns = await _returns(session, purchase_id)
    returned: dict[int, tuple[int, int]] = {}
    for view in returns:
        for line in view.lines:
            quantity, points = returned.get(line.line, (0, 0))
            returned[line.line] = (quantity + line.quantity, points + line.points)
    return PurchaseView(
        id=purchase.id, order_id=purchase.order_id, member_ref=purchase.member_ref,
        currency=purchase.currency, rule_version_id=purchase.rule_version_id,
        transaction_id=purchase.transaction_id, points=purchase.points,
        returned_points=sum(view.points for view in returns), created_at=purchase.created_at,
        lines=[_line_out(line, returned.get(line.line, (0, 0))) for line in lines],
        returns=returns,
    )  # fmt: skip


def _return_lines(view: PurchaseView, data: ReturnCreate) -> list[dict[str, Any]]:
    """The return's lines with the points each takes back; refused whole when a line is not
    the order's, is named twice, or would return more units than are left of it."""
    lines = {line.line: line for line in view.lines}
    seen: set[int] = set()
    rows = []
    for index, wanted in enumerate(data.lines):
        line = lines.get(wanted.line)
        if line is None or wanted.line in seen:
            raise InvalidInput(
                f"lines[{index}]: line {wanted.line} is not a line of the order, or is named twice",
                field=f"lines[{index}].line",
            )
        seen.add(wanted.line)
        after = line.returned_quantity + wanted.quantity
        if after > line.quantity:
            raise ReturnExceedsPurchase(
                f"line {line.line} has {line.quantity - line.returned_quantity} units left to"
                f" return, not {wanted.quantity}",
                line=line.line,
                quantity=line.quantity,
                returned=line.returned_quantity,
                requested=wanted.quantity,
            )
        back = returned_points(line.points, line.quantity, line.returned_quantity, after)
        rows.append({"line": line.line, "quantity": wanted.quantity, "points": back})
    return rows


async def post_return(
    session: AsyncSession,
    caller: PartnerInfo,
    purchase_id: uuid.UUID,
    data: ReturnCreate,
    *,
    idempotency_key: str | None = None,
) -> tuple[PurchaseView, ReturnView, PostedTransaction | None]:
    """Take back the points of the units returned (see the module note). Returns of one
    purchase queue on its row."""
    brand_currency(caller)
    await _purchase(session, caller, purchase_id, lock=True)
    before = await purchase_view(session, caller, purchase_id)
    rows = _return_lines(before, data)
    points = sum(row["points"] for row in rows)
    posted = None
    if points:
        posted = await reverse(
            session, caller, before.transaction_id, points,
            idempotency_key=idempotency_key, kinds=EARN_KINDS,
        )  # fmt: skip
    return_id = uuid7()
    await session.execute(
        insert(return_t).values(
            id=return_id,
            purchase_id=purchase_id,
            transaction_id=None if posted is None else posted.id,
            points=points,
            created_at=utcnow() if posted is None else posted.created_at,
        )
    )
    await session.execute(insert(return_line_t), [{"return_id": return_id, **r} for r in rows])
    after = await purchase_view(session, caller, purchase_id)
    returned = next(view for view in after.returns if view.id == return_id)
    return after, returned, posted
