"""Members of the calling brand: enrolment, balance with the signed account head, history."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Response, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, JSONBody, QueryParameter
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.schemas import (
    HistoryItem,
    HistoryPage,
    MemberBalanceOut,
    MemberCreate,
    MemberOut,
)
from exchange.ledger import members, reads
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.receipts import member_balance_out
from exchange.openapi import IdempotentOperation, SignedOperation, problem_responses
from exchange.signing import ExchangeKeys


class MembersController(Controller):
    path = "/members"
    tags = ["members"]

    @post(
        "/",
        operation_id="enrolMember",
        summary="Enrol a member of the calling brand",
        description="201 with the new member; enrolling the same member_ref again is a 200 with"
        " the same body.",
        operation_class=IdempotentOperation,
        responses={
            200: ResponseSpec(MemberOut, description="The member was enrolled already"),
            **problem_responses(403, 409),
        },
    )
    async def enrol(
        self,
        data: JSONBody[MemberCreate],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
    ) -> Response[MemberOut]:
        member, created = await members.enrol_member(db_session, caller, data.member_ref)
        assert caller.currency is not None  # enrol_member refuses partners that are not brands
        return Response(
            MemberOut(member_ref=member.member_ref, currency=caller.currency),
            status_code=201 if created else 200,
        )

    @get(
        "/{member_ref:str}",
        operation_id="getMember",
        summary="A member's balance, held and available points, and the signed account head",
        operation_class=SignedOperation,
        responses=problem_responses(403, 404),
    )
    async def balance(
        self,
        member_ref: FromPath[str],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        exchange_keys: NamedDependency[ExchangeKeys],
    ) -> MemberBalanceOut:
        balance = await reads.member_balance(db_session, caller, member_ref)
        return member_balance_out(exchange_keys, balance)

    @get(
        "/{member_ref:str}/transactions",
        operation_id="listMemberTransactions",
        summary="A member's postings, newest first",
        operation_class=SignedOperation,
        responses=problem_responses(403, 404),
    )
    async def history(
        self,
        member_ref: FromPath[str],
        caller: NamedDependency[PartnerInfo],
        db_session: NamedDependency[AsyncSession],
        limit: Annotated[int, QueryParameter(ge=1, le=500, description="Page size.")] = 50,
        cursor: Annotated[
            str | None, QueryParameter(description="next_cursor of the previous page.")
        ] = None,
    ) -> HistoryPage:
        entries, next_cursor = await reads.member_history(
            db_session, caller, member_ref, limit=limit, cursor=cursor
        )
        return HistoryPage(
            items=[
                HistoryItem(
                    transaction_id=e.transaction_id,
                    kind=e.kind,
                    seq=e.seq,
                    amount=e.amount,
                    balance_after=e.balance_after,
                    reference=e.reference,
                    created_at=e.created_at,
                    account_id=e.account_id,
                    prev_hash=e.prev_hash.hex(),
                    hash=e.hash.hex(),
                    counterparty_account_id=e.counterparty_account_id or 0,
                )
                for e in entries
            ],
            next_cursor=next_cursor,
        )
