"""The audit log of every console action, and the console's users."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.console.audit import recent
from exchange.console.pages.common import page
from exchange.console.users import list_users


class AuditController(Controller):
    path = "/"
    include_in_schema = False

    @get("/audit")
    async def audit(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        return page(
            request, "audit", entries=await recent(db_session), users=await list_users(db_session)
        )
