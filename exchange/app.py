"""The application factory: plugins, routes of every domain, lifespan. Nothing else."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator

from advanced_alchemy.extensions.litestar import (
    AsyncSessionConfig,
    SQLAlchemyAsyncConfig,
    SQLAlchemyPlugin,
)
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.openapi.config import OpenAPIConfig
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from exchange.cli import ExchangeCLIPlugin
from exchange.console.router import console_routers, console_templates
from exchange.conversions.controllers import ConversionsController
from exchange.db import create_engine
from exchange.docs import DOCS_DESCRIPTION, swagger_assets, swagger_ui
from exchange.donations.controllers import DonationsController
from exchange.http.group_commit import GroupCommit
from exchange.http.problems import problem_details_plugin
from exchange.http.response_signing import sign_responses
from exchange.http.signed_api import v1_router
from exchange.http.system import SystemController
from exchange.jobs import run_periodic_jobs
from exchange.ledger.controllers.batches import BatchesController
from exchange.ledger.controllers.members import MembersController
from exchange.ledger.controllers.operations import OperationsController
from exchange.lots.controllers import LotsController
from exchange.lots.scheduler import run_expiry_loop
from exchange.migrate import upgrade_async
from exchange.observability import request_id_middleware, structlog_plugin
from exchange.pricing.controllers import BrandPricingController, PricingController
from exchange.purchases.batching import provide_batch_purchases
from exchange.purchases.controllers import EarnRulesController, PurchasesController
from exchange.reporting.rollup import run_rollup
from exchange.settings import Settings, SettingsError, get_settings
from exchange.signing import check_keys, load_exchange_keys, load_master_key
from exchange.transparency.controllers import TransparencyController
from exchange.transparency.scheduler import run_log
from partners.controllers import PartnersController
from settlement.controllers import (
    SettlementBatchesController,
    SettlementsController,
    WebhookController,
)
from settlement.scheduler import run_scheduler

SIGNED_CONTROLLERS = (
    PartnersController,
    MembersController,
    OperationsController,
    PricingController,
    BrandPricingController,
    LotsController,
    ConversionsController,
    DonationsController,
    EarnRulesController,
    PurchasesController,
    BatchesController,
    SettlementsController,
    WebhookController,
    SettlementBatchesController,
    TransparencyController,
)
"""Every feature's routes under the signed ``/v1`` router."""

SIGNED_DEPENDENCIES = {
    "batch_purchases": Provide(provide_batch_purchases, sync_to_thread=False),
}
"""What one feature's routes take from another: batches price their purchases by earn rules."""


class MetricsController(PrometheusController):
    path = "/metrics"
    include_in_schema = False


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the service. The lifespan migrates and loads keys; here only configured keys are
    read, so that a setting that cannot be right stops the start with one line (exit 1), not a
    traceback from the lifespan."""
    try:
        settings = settings or get_settings()
        check_keys(settings)
    except SettingsError as error:
        raise SystemExit(f"exchange: {error}") from None
    engine = create_engine(settings)
    db_config = SQLAlchemyAsyncConfig(
        engine_instance=engine,
        session_config=AsyncSessionConfig(expire_on_commit=False),
        before_send_handler="autocommit",
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        if settings.auto_migrate:
            await upgrade_async(settings)
        app.state.exchange_keys = load_exchange_keys(settings)
        app.state.master_key = load_master_key(settings)
        app.state.group_commit = GroupCommit(
            engine, app.state.exchange_keys, flushers=settings.group_commit_flushers
        )
        # What exists once the app is up (the framework, SQLAlchemy's mappings and caches, the
        # routes) lives as long as the process. Frozen, the garbage collector no longer walks
        # it at every full collection, which a batch's tens of thousands of new objects set off.
        gc.collect()
        gc.freeze()
        # A young collection every 50 000 new containers rather than 700. Nearly everything a
        # request makes is freed by reference counting as soon as it is answered, yet a batch's
        # tens of thousands of short-lived objects set off some forty young collections (and a
        # few older ones) per request: about 7 microseconds of every item's 90. Cycles are still
        # collected, later, and what waits for it is bounded by the threshold.
        gc.set_threshold(50_000, *gc.get_threshold()[1:])
        jobs = [
            asyncio.create_task(run_periodic_jobs(engine)),
            asyncio.create_task(run_scheduler(engine, settings, app.state.exchange_keys)),
            asyncio.create_task(run_log(engine, settings, app.state.exchange_keys)),
            asyncio.create_task(run_rollup(engine, settings)),
            asyncio.create_task(run_expiry_loop(engine, settings)),
        ]
        try:
            yield
        finally:
            for job in jobs:
                job.cancel()
            for job in jobs:
                with contextlib.suppress(asyncio.CancelledError):
                    await job
            await engine.dispose()

    prometheus = PrometheusConfig(app_name="exchange", group_path=True)
    app = Litestar(
        route_handlers=[
            SystemController,
            MetricsController,
            swagger_assets(),
            v1_router(engine, db_config, SIGNED_CONTROLLERS, SIGNED_DEPENDENCIES),
            *console_routers(db_config),
        ],
        plugins=[
            SQLAlchemyPlugin(config=db_config),
            problem_details_plugin(),
            structlog_plugin(settings),
            ExchangeCLIPlugin(),
        ],
        middleware=[prometheus.middleware],
        lifespan=[lifespan],
        template_config=console_templates(),
        state=State({"settings": settings}),
        openapi_config=OpenAPIConfig(
            title="Coalition points exchange",
            version="1.0.0",
            path="/docs",
            description=DOCS_DESCRIPTION,
            render_plugins=[swagger_ui()],
        ),
    )
    # Around everything, router answers (404, 405) included, which route middleware never sees.
    app.asgi_handler = request_id_middleware(sign_responses(app.asgi_handler))
    return app
