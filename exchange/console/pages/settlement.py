"""Settlement: batches by business date, each participant's position, the payment
instructions, statements to download, marking a batch paid (through
:func:`settlement.payments.mark_paid`, as the CLI and the API do), and the net positions over
time (:func:`exchange.reporting.settlement_positions_over_time`)."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, QueryParameter
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.console import audit, views
from exchange.console.pages.common import page
from exchange.console.web import PREFIX, client_address, me, operator_role
from exchange.errors import DomainError
from exchange.reporting.service import settlement_positions_over_time
from exchange.settings import Settings
from partners.service import list_partners
from settlement import views as batches
from settlement.payments import mark_paid
from settlement.statements import get_statement, statement_csv

HISTORY_DAYS = 60

Query = Annotated[str | None, QueryParameter()]


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise NotFoundException(f"{value!r} is not a business date") from None


class SettlementController(Controller):
    path = "/"
    include_in_schema = False

    @get("/settlement")
    async def settlement(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        date: Query = None,
        done: Query = None,
    ) -> Template:
        listed = await batches.list_batches(db_session, limit=HISTORY_DAYS)
        chosen = _date(date) if date else (listed[0].business_date if listed else None)
        batch = await batches.get_batch(db_session, chosen) if chosen else None
        names = {p.id: p.name for p in await list_partners(db_session)}
        first = listed[-1].business_date if listed else None
        positions = await settlement_positions_over_time(db_session, first=first)
        return page(
            request,
            "settlement",
            batches=listed,
            batch=batch,
            names=names,
            done=done,
            currency=settings.settlement_currency,
            exponent=batch.minor_exponent if batch else settings.settlement_minor_exponent,
            positions_chart=views.positions_chart(positions, settings.settlement_currency),
        )

    @get("/settlement/{business_date:str}/statements/{partner_id:uuid}/{kind:str}")
    async def statement(
        self,
        request: Request[Any, Any, State],
        db_session: NamedDependency[AsyncSession],
        business_date: FromPath[str],
        partner_id: FromPath[uuid.UUID],
        kind: FromPath[str],
    ) -> Response[str]:
        """A participant's signed statement, ``json`` or ``csv``, as a download."""
        day = _date(business_date)
        if kind not in ("json", "csv"):
            raise NotFoundException("a statement is json or csv")
        document, signature = await get_statement(db_session, partner_id, day)
        if kind == "csv":
            body = statement_csv(document, request.app.state.exchange_keys)
            media = "text/csv"
        else:
            body = json.dumps({"statement": document, "signature": signature}, indent=2)
            media = "application/json"
        await audit.record(
            db_session,
            user_name=me(request).user.name,
            action="download-statement",
            address=client_address(request),
            details={"business_date": day, "partner_id": partner_id, "format": kind},
        )  # the request's transaction commits it with the 200
        name = f"statement-{day.isoformat()}-{partner_id}.{kind}"
        return Response(
            body,
            media_type=media,
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @post("/settlement/{business_date:str}/paid", guards=[operator_role], status_code=303)
    async def paid(
        self,
        request: Request[Any, Any, Any],
        console_db: NamedDependency[AsyncSession],
        business_date: FromPath[str],
    ) -> Redirect:
        """Mark the day's batch paid: its payouts are booked and it never changes again."""
        day = _date(business_date)
        user, address = me(request).user.name, client_address(request)
        try:
            batch = await mark_paid(console_db, day)
        except DomainError as refused:
            await audit.record(
                console_db, user_name=user, action="mark-paid", outcome="refused",
                address=address, details={"business_date": day, "error": refused.detail},
            )  # fmt: skip
            query = {"date": day.isoformat(), "done": f"refused: {refused.detail}"}
            return Redirect(f"{PREFIX}/settlement?{urlencode(query)}")
        await audit.record(
            console_db, user_name=user, action="mark-paid", address=address,
            details={"business_date": day, "settle_transaction_id": batch.settle_transaction_id},
        )  # fmt: skip
        query = {"date": day.isoformat(), "done": f"{day.isoformat()} marked paid"}
        return Redirect(f"{PREFIX}/settlement?{urlencode(query)}")
