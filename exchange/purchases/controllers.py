"""Earn rules and purchases over HTTP: a brand sets its rules, posts its orders (each earning its
points as one ``earn`` transaction), returns lines of them and asks what an order would earn.

A purchase and a return answer like the other operations (the transaction, the exchange's
signature over it, the member's new balance) and add the purchase as it now stands."""

from __future__ import annotations

import uuid

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.purchases import (
    EarnQuoteOut,
    EarnRulesCreate,
    EarnRulesOut,
    EarnRulesPage,
    PurchaseCreate,
    PurchaseOut,
    PurchaseQuoteCreate,
    PurchaseView,
    ReturnCreate,
    ReturnOut,
)
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import transaction_view
from exchange.ledger.receipts import operation_out, posted_operation_out
from exchange.openapi import IdempotentOperation, SignedOperation, problem_responses, problem_spec
from exchange.pricing.controllers import AtQuery, moment
from exchange.purchases import rules as earn_rules
from exchange.purchases import service as purchases
from exchange.signing import ExchangeKeys

_PRICING_422 = (
    "invalid-request (with the field errors: an unknown field, a negative amount, no lines or"
    " more than 100), earn-rules-not-found, currency-not-earning (the rules have no rate for"
    " the order's currency), nothing-earned, limit-exceeded"
)
_PURCHASE_PROBLEMS = {
    **problem_responses(403, 404, 409),
    403: problem_spec("not-a-brand: only a brand takes purchases"),
    404: problem_spec("member-not-found: the caller has no such member"),
    409: problem_spec("order-exists: the order has its purchase already; idempotency-in-flight"),
    422: problem_spec(f"{_PRICING_422}, idempotency-conflict"),
}
_RETURN_PROBLEMS = {
    **problem_responses(403, 404, 409),
    404: problem_spec("purchase-not-found: the caller has no such purchase"),
    422: problem_spec(
        "invalid-request, invalid-input (a line that is not the order's, or named twice),"
        " return-exceeds-purchase, insufficient-points (the member has spent the points the"
        " return takes back: nothing is returned), idempotency-conflict"
    ),
}


class EarnRulesController(Controller):
    tags = ["purchases"]

    @post(
        "/earn-rules",
        operation_id="setEarnRules",
        summary="A new version of the calling brand's earn rules, from now or later",
        description="Versions are never changed: a new one supersedes the one before from its"
        " `effective_at` on. Points per line: `floor(amount_minor * points * product_type_bps *"
        " category_bps * promotion_bps / (per_minor_units * 10000^3))`; see the README.",
        operation_class=IdempotentOperation,
        responses={
            **problem_responses(403, 409),
            409: problem_spec("version-conflict: a version takes effect at that very time"),
            422: problem_spec(
                "invalid-request (with the field errors), invalid-input (a currency twice, a"
                " promotion that ends before it starts), effective-in-past, idempotency-conflict"
            ),
        },
    )
    async def set_rules(
        self,
        data: JSONBody[EarnRulesCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
    ) -> EarnRulesOut:
        return await earn_rules.set_earn_rules(db_session, caller, data)

    @get(
        "/earn-rules",
        operation_id="getEarnRules",
        summary="The calling brand's earn rules in force, and every version",
        operation_class=SignedOperation,
        responses={
            **problem_responses(403),
            422: problem_spec("invalid-input: a bad `at`"),
        },
    )
    async def get_rules(
        self,
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        at: AtQuery = None,
    ) -> EarnRulesPage:
        return await earn_rules.rules_page(db_session, caller, moment(at))


class PurchasesController(Controller):
    path = "/purchases"
    tags = ["purchases"]

    @post(
        "/",
        operation_id="createPurchase",
        summary="An order of a member: issue the points it earns as one `earn` transaction",
        description="Priced by the brand's earn rules in force now; the transaction records the"
        " rule version and each line's points. An order id earns once.",
        operation_class=IdempotentOperation,
        responses=_PURCHASE_PROBLEMS,
    )
    async def purchase(
        self,
        data: JSONBody[PurchaseCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
        idempotency_key: NamedDependency[str],
    ) -> PurchaseOut:
        view, posted = await purchases.post_purchase(
            db_session, caller, data, idempotency_key=idempotency_key
        )
        answer = posted_operation_out(exchange_keys, posted)
        return PurchaseOut(
            purchase=view,
            transaction=answer.transaction,
            receipt=answer.receipt,
            balances=answer.balances,
        )

    @post(
        "/quote",
        operation_id="quotePurchase",
        summary="What an order would earn now, posting nothing (for a checkout page)",
        operation_class=IdempotentOperation,
        status_code=200,
        responses={**problem_responses(403), 422: problem_spec(_PRICING_422)},
    )
    async def quote(
        self,
        data: JSONBody[PurchaseQuoteCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
    ) -> EarnQuoteOut:
        priced = await purchases.price_order(db_session, caller, data.currency, data.lines)
        return purchases.quote_out(priced)

    @get(
        "/{purchase_id:uuid}",
        operation_id="getPurchase",
        summary="A purchase: the order, the points of each line, its returns",
        operation_class=SignedOperation,
        responses={
            **problem_responses(403, 404),
            404: problem_spec("purchase-not-found"),
        },
    )
    async def get_purchase(
        self,
        purchase_id: FromPath[uuid.UUID],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
    ) -> PurchaseView:
        return await purchases.purchase_view(db_session, caller, purchase_id)

    @post(
        "/{purchase_id:uuid}/returns",
        operation_id="createPurchaseReturn",
        summary="Units of a purchase's lines given back: their points are taken back",
        description="Per line, cumulative floors of its points by units returned, so returning"
        " a whole line takes back exactly its points and never more; one `reverse` of the"
        " `earn` transaction. A member who has spent the points is refused (nothing changes).",
        operation_class=IdempotentOperation,
        responses=_RETURN_PROBLEMS,
    )
    async def return_lines(
        self,
        purchase_id: FromPath[uuid.UUID],
        data: JSONBody[ReturnCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
        idempotency_key: NamedDependency[str],
    ) -> ReturnOut:
        view, returned, posted = await purchases.post_return(
            db_session, caller, purchase_id, data, idempotency_key=idempotency_key
        )
        if posted is None:
            return ReturnOut(
                purchase=view, returned=returned, transaction=None, receipt=None, balances=[]
            )
        view_of = await transaction_view(db_session, caller, posted.id)
        answer = operation_out(exchange_keys, view_of, posted.balances)
        return ReturnOut(
            purchase=view,
            returned=returned,
            transaction=answer.transaction,
            receipt=answer.receipt,
            balances=answer.balances,
        )
