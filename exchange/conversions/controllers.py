"""Conversions into another brand's points, over HTTP.

A conversion answers like the other operations (the transaction as the caller sees it, the
exchange's signature over it, the member's new balance) and adds its terms: the rate version,
fee, points out and the money the source brand now owes. The destination brand reads its side
of the same transaction with ``GET /v1/transactions/{id}``."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Controller, Response, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.schemas import (
    ConversionCreate,
    ConversionMoney,
    ConversionOut,
    ConversionTerms,
)
from exchange.conversions.service import Conversion, PreparedConversion, prepare_conversion
from exchange.ledger.engine import PostedTransaction, TransactionSpec
from exchange.ledger.grouped import GROUP_COMMIT_OPT, OperationPipeline, as_response
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import transaction_view
from exchange.ledger.receipts import operation_out
from exchange.openapi import IdempotentOperation, problem_spec
from exchange.pricing.controllers import PRICING_422, QUOTE_PROBLEMS
from exchange.pricing.service import destination_currency
from exchange.signing import ExchangeKeys

_CONVERSION_PROBLEMS = {
    **QUOTE_PROBLEMS,
    404: problem_spec("member-not-found, quote-not-found"),
    409: problem_spec("quote-used: the quote was spent already; idempotency-in-flight"),
    422: problem_spec(
        f"{PRICING_422}, insufficient-points, quote-expired, quote-mismatch; idempotency-conflict"
    ),
    503: problem_spec("operator-not-configured: a fee needs the operator to be registered"),
}


def _terms(conversion: Conversion) -> ConversionTerms:
    return ConversionTerms(
        rate_version_id=conversion.rate_version_id,
        quote_id=conversion.quote_id,
        from_currency=conversion.from_currency,
        to_currency=conversion.to_currency,
        member_ref=conversion.member_ref,
        to_member_ref=conversion.to_member_ref,
        points=conversion.points,
        fee=conversion.fee,
        out=conversion.out,
        source_value_micros=conversion.source_value_micros,
        destination_value_micros=conversion.destination_value_micros,
        money=ConversionMoney(
            currency=conversion.settlement_currency,
            destination_micros=conversion.destination_micros,
            operator_fee_micros=conversion.operator_fee_micros,
        ),
    )


@dataclass
class _GroupedConversion:
    """A conversion request in its group (``exchange.ledger.grouped.PreparedOperation``)."""

    caller: PartnerInfo
    idempotency_key: str
    data: ConversionCreate
    prepared: PreparedConversion | None = None

    @property
    def exclusive_key(self) -> str | None:
        """The quote it would spend: locked when prepared, spent once posted."""
        return None if self.data.quote_id is None else f"quote:{self.data.quote_id}"

    async def prepare(self, session: AsyncSession) -> TransactionSpec:
        data = self.data
        self.prepared = await prepare_conversion(
            session, self.caller, data.member_ref,
            await destination_currency(session, data.to_partner),
            data.to_member_ref, data.points,
            quote_id=data.quote_id, reference=data.reference,
            idempotency_key=self.idempotency_key,
        )  # fmt: skip
        return self.prepared.spec()

    async def answer(
        self, session: AsyncSession, posted: PostedTransaction, keys: ExchangeKeys
    ) -> ConversionOut:
        assert self.prepared is not None
        conversion = await self.prepared.posted(session, posted)
        view = await transaction_view(session, self.caller, conversion.transaction_id)
        answer = operation_out(keys, view, posted.balances)
        return ConversionOut(
            transaction=answer.transaction,
            receipt=answer.receipt,
            conversion=_terms(conversion),
            balances=answer.balances,
        )


class ConversionsController(Controller):
    tags = ["conversions"]

    @post(
        "/conversions",
        operation_id="createConversion",
        opt={GROUP_COMMIT_OPT: True},
        summary="Convert a member's points into another brand's points for a member there",
        description="`{member_ref, to_partner, to_member_ref, points}` prices at the rate in"
        " force now; `{quote_id}` at the quote's. The destination member must be enrolled at the"
        " destination brand. The source brand owes the destination brand `out` points' value"
        " and the operator the fee's.",
        operation_class=IdempotentOperation,
        responses=_CONVERSION_PROBLEMS,
    )
    async def convert(
        self,
        data: JSONBody[ConversionCreate],
        pipeline: NamedDependency[OperationPipeline],
    ) -> Response[ConversionOut]:
        conversion = _GroupedConversion(pipeline.caller, pipeline.idempotency_key, data)
        return as_response(await pipeline.post_prepared(conversion))
