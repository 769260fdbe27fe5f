"""Conversions into another brand's points, over HTTP.

A conversion answers like the other operations (the transaction as the caller sees it, the
exchange's signature over it, the member's new balance) and adds its terms: the rate version,
fee, points out and the money the source brand now owes. The destination brand reads its side
of the same transaction with ``GET /v1/transactions/{id}``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

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
from exchange.conversions.service import (
    Conversion,
    ConversionAsk,
    PreparedConversion,
    prepare_conversions,
    record_conversions,
)
from exchange.errors import DomainError
from exchange.ledger.engine import PostedTransaction, TransactionSpec
from exchange.ledger.grouped import GROUP_COMMIT_OPT, OperationPipeline, as_response
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.receipts import posted_operation_out
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


def _answer(keys: ExchangeKeys, prepared: PreparedConversion, posted: PostedTransaction,
            conversion: Conversion) -> ConversionOut:  # fmt: skip
    answer = posted_operation_out(keys, posted, prepared.own_accounts)
    return ConversionOut(
        transaction=answer.transaction,
        receipt=answer.receipt,
        conversion=_terms(conversion),
        balances=answer.balances,
    )


@dataclass
class _GroupedConversion:
    """A conversion request in its group (``exchange.ledger.grouped.PreparedOperation``): the
    group's conversions read what they need together (:meth:`prepare_all`) and record together
    (:meth:`answer_all`); the answer is made from the engine's lines, not read back."""

    caller: PartnerInfo
    idempotency_key: str
    data: ConversionCreate
    prepared: PreparedConversion | None = None

    @property
    def exclusive_key(self) -> str | None:
        """The quote it would spend: locked when prepared, spent once posted."""
        return None if self.data.quote_id is None else f"quote:{self.data.quote_id}"

    async def _ask(self, session: AsyncSession) -> ConversionAsk:
        data = self.data
        return ConversionAsk(
            self.caller, data.member_ref, await destination_currency(session, data.to_partner),
            data.to_member_ref, data.points, data.quote_id, data.reference, self.idempotency_key,
        )  # fmt: skip

    @classmethod
    async def prepare_all(
        cls, session: AsyncSession, operations: Sequence[_GroupedConversion]
    ) -> list[TransactionSpec | DomainError]:
        asks: dict[int, ConversionAsk] = {}
        outcomes: list[TransactionSpec | DomainError | None] = [None] * len(operations)
        for index, operation in enumerate(operations):
            try:
                asks[index] = await operation._ask(session)
            except DomainError as error:
                outcomes[index] = error
        prepared = await prepare_conversions(session, list(asks.values()))
        for index, result in zip(asks, prepared, strict=True):
            if isinstance(result, DomainError):
                outcomes[index] = result
            else:
                operations[index].prepared = result
                outcomes[index] = result.spec()
        return [outcome for outcome in outcomes if outcome is not None]

    async def prepare(self, session: AsyncSession) -> TransactionSpec:
        (outcome,) = await self.prepare_all(session, [self])
        if isinstance(outcome, DomainError):
            raise outcome
        return outcome

    @classmethod
    async def answer_all(
        cls,
        session: AsyncSession,
        posted: Sequence[tuple[_GroupedConversion, PostedTransaction]],
        keys: ExchangeKeys,
    ) -> list[ConversionOut]:
        pairs = [(cast(PreparedConversion, op.prepared), result) for op, result in posted]
        conversions = await record_conversions(session, pairs)
        return [
            _answer(keys, prepared, result, conversion)
            for (prepared, result), conversion in zip(pairs, conversions, strict=True)
        ]

    async def answer(
        self, session: AsyncSession, posted: PostedTransaction, keys: ExchangeKeys
    ) -> ConversionOut:
        (answer,) = await self.answer_all(session, [(self, posted)], keys)
        return answer


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
