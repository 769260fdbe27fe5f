"""Partners: brands, charities and the operator; their keys; webhook deliveries not delivered."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.console.pages.common import page
from exchange.reporting.service import webhook_deliveries
from partners.key_use import keys_last_used
from partners.service import list_keys, list_partners


class PartnersController(Controller):
    path = "/"
    include_in_schema = False

    @get("/partners")
    async def partners(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        everyone = await list_partners(db_session)
        last_used = await keys_last_used(db_session)
        keys = {p.id: await list_keys(db_session, p.id) for p in everyone}
        return page(
            request,
            "partners",
            partners=everyone,
            keys=keys,
            last_used=last_used,
            pending=await webhook_deliveries(db_session, state="pending"),
            dead=await webhook_deliveries(db_session, state="dead"),
        )
