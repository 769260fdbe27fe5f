"""Pricing: the point values and rates in force, their history, and new versions.

A new version goes through a confirmation step: the first form is checked and shown beside what
is in force (nothing written), the second writes it through the very service the CLI and the
API use (:mod:`exchange.pricing.service`), which refuses what they refuse."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any
from urllib.parse import urlencode

from litestar import Controller, Request, get, post
from litestar.di import NamedDependency
from litestar.params import QueryParameter
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.console import audit, views
from exchange.console.pages.common import page
from exchange.console.web import PREFIX, client_address, me, operator_role
from exchange.errors import DomainError
from exchange.pricing import service as pricing
from exchange.reporting.service import rate_history

RATE_FIELDS = ("from_points", "to_points", "fee_bps", "min_points")

Query = Annotated[str | None, QueryParameter()]


class Refused(ValueError):
    pass


def _number(form: Any, name: str) -> int:
    raw = str(form.get(name) or "").strip().replace(",", "").replace("_", "")
    if not raw.isdigit() or len(raw) > 15:
        raise Refused(f"{name.replace('_', ' ')} must be a whole number")
    return int(raw)


def _moment(form: Any) -> dt.datetime | None:
    """``effective_at`` from a ``datetime-local`` field, read as UTC; empty is now."""
    raw = str(form.get("effective_at") or "").strip()
    if not raw:
        return None
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise Refused("effective at must be a date and time (UTC)") from None
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def proposal(form: Any) -> dict[str, Any]:
    """The version the form asks for, checked for shape (the service checks the rest)."""
    kind = str(form.get("kind") or "")
    effective = _moment(form)
    if kind == "value":
        return {
            "kind": kind,
            "currency": str(form.get("currency") or "").upper(),
            "micros": _number(form, "micros"),
            "effective_at": effective,
        }
    if kind == "rate":
        found = {name: _number(form, name) for name in RATE_FIELDS}
        return {
            "kind": kind,
            "from": str(form.get("from") or "").upper(),
            "to": str(form.get("to") or "").upper(),
            **found,
            "effective_at": effective,
        }
    raise Refused("choose a point value or a rate")


class PricingController(Controller):
    path = "/"
    include_in_schema = False

    @get("/pricing")
    async def pricing(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        return await self._page(request, db_session)

    async def _page(
        self,
        request: Request[Any, Any, Any],
        db: AsyncSession,
        *,
        error: str | None = None,
        confirm: dict[str, Any] | None = None,
        done: Query = None,
    ) -> Template:
        history = await rate_history(db)
        response = page(
            request,
            "pricing",
            values=await pricing.values_in_force(db),
            rates=await pricing.rates_in_force(db),
            history=history,
            value_chart=views.point_value_chart(history.point_values),
            error=error,
            confirm=confirm,
            done=done or request.query_params.get("done"),
        )
        if error:
            response.status_code = 422
        return response

    @post("/pricing/confirm", guards=[operator_role], status_code=200)
    async def confirm(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        """Step one: the version asked for, beside what is in force; nothing is written."""
        try:
            asked = proposal(await request.form())
        except Refused as refused:
            return await self._page(request, db_session, error=str(refused))
        return await self._page(request, db_session, confirm=asked)

    @post("/pricing/apply", guards=[operator_role], status_code=303)
    async def apply(
        self, request: Request[Any, Any, Any], console_db: NamedDependency[AsyncSession]
    ) -> Redirect | Template:
        """Step two: write the version through the pricing service."""
        user, address = me(request).user.name, client_address(request)
        try:
            asked = proposal(await request.form())
            if asked["kind"] == "value":
                made: Any = await pricing.set_point_value(
                    console_db, asked["currency"], asked["micros"],
                    effective_at=asked["effective_at"],
                )  # fmt: skip
                what = f"{made.currency} point value {made.micros_per_point} micros"
            else:
                made = await pricing.set_rate(
                    console_db, asked["from"], asked["to"],
                    **{name: asked[name] for name in RATE_FIELDS},
                    effective_at=asked["effective_at"],
                )  # fmt: skip
                what = f"rate {made.from_currency} to {made.to_currency}"
        except (Refused, DomainError) as refused:
            message = str(refused) if isinstance(refused, Refused) else refused.detail
            await audit.record(
                console_db, user_name=user, action="set-pricing", outcome="refused",
                address=address, details={"error": message},
            )  # fmt: skip
            return await self._page(request, console_db, error=message)
        await audit.record(
            console_db, user_name=user, action="set-pricing", address=address,
            details={"version_id": str(made.id), "what": what, **asked},
        )  # fmt: skip
        return Redirect(f"{PREFIX}/pricing?" + urlencode({"done": f"{what} (version {made.id})"}))
