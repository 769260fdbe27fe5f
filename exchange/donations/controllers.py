"""Donations to charities, over HTTP, and the charities a member can donate to.

A donation's answer carries the member's donation receipt, signed by the exchange."""

from __future__ import annotations

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.schemas import CharityOut, DonationCreate, DonationOut
from exchange.donations import service as donations
from exchange.donations.receipts import signed_receipt
from exchange.ledger import reads as ledger
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.reads import transaction_view
from exchange.ledger.receipts import balance_out, sign, transaction_out
from exchange.openapi import IdempotentOperation, SignedOperation, problem_responses, problem_spec
from exchange.signing import ExchangeKeys

_DONATION_PROBLEMS = {
    **problem_responses(403, 404, 409),
    403: problem_spec("not-a-brand: only a brand donates its members' points"),
    404: problem_spec("member-not-found: the caller has no such member"),
    422: problem_spec(
        "invalid-amount, invalid-request (with the field errors), not-a-charity,"
        " below-charity-minimum, point-value-not-found, insufficient-points, idempotency-conflict"
    ),
}


class DonationsController(Controller):
    # Documented under "conversions" since before donations had a package of their own.
    tags = ["conversions"]

    @get(
        "/charities",
        operation_id="listCharities",
        summary="The charities members can donate to, with their minimum donations",
        operation_class=SignedOperation,
        responses=problem_responses(),
    )
    async def charities(self, db_session: NamedDependency[AsyncSession]) -> list[CharityOut]:
        return await donations.charities(db_session)

    @post(
        "/donations",
        operation_id="createDonation",
        summary="Donate a member's points to a charity; answers with the signed donation receipt",
        description="The brand owes the charity the points' value in force now. `receipt` is"
        " the member's receipt; its `signature` is the exchange's over the receipt's other"
        " members.",
        operation_class=IdempotentOperation,
        responses=_DONATION_PROBLEMS,
    )
    async def donate(
        self,
        data: JSONBody[DonationCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
        idempotency_key: NamedDependency[str],
    ) -> DonationOut:
        donation = await donations.post_donation(
            db_session, caller, data.member_ref, data.charity, data.points,
            reference=data.reference, idempotency_key=idempotency_key,
        )  # fmt: skip
        transaction = transaction_out(await transaction_view(db_session, caller, donation.id))
        balance = await ledger.member_balance(db_session, caller, data.member_ref)
        return DonationOut(
            transaction=transaction,
            receipt=sign(exchange_keys, transaction),
            donation_receipt=signed_receipt(exchange_keys, donation),
            balances=[balance_out(balance)],
        )
