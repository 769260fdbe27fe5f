"""The console's routes, templates and static files, for the app factory to mount.

Two routers under ``/console``: the login form (and nothing else) is open; every other page is
behind :func:`exchange.console.web.session_check`. Neither is under the signed ``/v1`` router."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar import Router
from litestar.di import Provide
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from exchange.console import formats
from exchange.console.pages.ledger import LedgerController
from exchange.console.pages.login import LoginController, LogoutController
from exchange.console.pages.metrics import MetricsController
from exchange.console.pages.overview import OverviewController
from exchange.console.pages.partners import PartnersController
from exchange.console.pages.pricing import PricingController
from exchange.console.pages.settlement import SettlementController
from exchange.console.pages.users import AuditController
from exchange.console.web import (
    EXCEPTION_HANDLERS,
    PREFIX,
    provide_console_db,
    provide_master_key,
    provide_settings,
    security_headers,
    session_check,
)

HERE = Path(__file__).parent

DEPENDENCIES: dict[str, Any] = {
    "console_db": Provide(provide_console_db),
    "settings": Provide(provide_settings, sync_to_thread=False),
    "master_key": Provide(provide_master_key, sync_to_thread=False),
}


def console_routers(db_config: SQLAlchemyAsyncConfig) -> list[Router]:
    """The login form, the signed-in pages, and the stylesheet."""
    shared: dict[str, Any] = {
        "dependencies": DEPENDENCIES,
        "exception_handlers": EXCEPTION_HANDLERS,
        "after_request": security_headers(),
        "include_in_schema": False,
    }
    return [
        Router(path=PREFIX, route_handlers=[LoginController], **shared),
        Router(
            path=PREFIX,
            route_handlers=[
                LogoutController,
                OverviewController,
                PartnersController,
                PricingController,
                SettlementController,
                LedgerController,
                MetricsController,
                AuditController,
            ],
            guards=[session_check(db_config)],
            **shared,
        ),
        create_static_files_router(
            path=f"{PREFIX}/static",
            directories=[str(HERE / "static")],
            include_in_schema=False,
            name="console-static",
        ),
    ]


def console_templates() -> TemplateConfig[JinjaTemplateEngine]:
    """Jinja2 templates (autoescaped) with the console's number filters."""
    return TemplateConfig(
        directory=HERE / "templates",
        engine=JinjaTemplateEngine,
        engine_callback=lambda engine: formats.register(engine.engine),
    )
