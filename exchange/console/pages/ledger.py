"""Ledger health: chain heads, the transaction log and its latest checkpoint
(:func:`exchange.reporting.ledger_health`), and ``verify`` run as a background job."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from exchange.console import verify_job
from exchange.console.pages.common import page
from exchange.console.web import PREFIX, client_address, me, operator_role
from exchange.reporting.service import ledger_health
from exchange.settings import Settings


class LedgerController(Controller):
    path = "/"
    include_in_schema = False

    @get("/ledger")
    async def ledger(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        job = await verify_job.latest(db_session)
        return page(
            request,
            "ledger",
            health=await ledger_health(db_session),
            job=job,
            steps=verify_job.STEPS,
            refresh=job is not None and job.state == "running" and not job.stalled,
        )

    @post("/ledger/verify", guards=[operator_role], status_code=303)
    async def verify(
        self,
        request: Request[Any, Any, State],
        console_db: NamedDependency[AsyncSession],
        db_engine: NamedDependency[AsyncEngine],
        settings: NamedDependency[Settings],
    ) -> Redirect:
        """Start verify in the background (unless it is running); the page shows its progress."""
        await verify_job.launch(
            console_db, db_engine, settings,
            user=me(request).user.name, address=client_address(request),
        )  # fmt: skip
        return Redirect(f"{PREFIX}/ledger")
