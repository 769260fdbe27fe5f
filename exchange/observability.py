"""Structured logs with a request id, and Prometheus metrics."""

from __future__ import annotations

import logging
import re

import structlog
from litestar.enums import ScopeType
from litestar.logging.config import StructLoggingConfig
from litestar.plugins.structlog import StructlogConfig, StructlogPlugin
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from exchange.base import uuid7
from exchange.settings import Settings

REQUEST_ID_HEADER = "x-request-id"
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def request_id_middleware(app: ASGIApp) -> ASGIApp:
    """Bind a request id to every log line of a request and echo it in ``X-Request-ID``.

    A caller's own id is kept when it is short and plain; otherwise we make one."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        given = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == REQUEST_ID_HEADER.encode()),
            "",
        )
        request_id = given if _SAFE_REQUEST_ID.match(given) else str(uuid7())
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((REQUEST_ID_HEADER.encode(), request_id.encode()))
                message["headers"] = headers
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            await app(scope, receive, send_with_id)

    return middleware


def structlog_plugin(settings: Settings) -> StructlogPlugin:
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False),
    ]
    return StructlogPlugin(
        config=StructlogConfig(
            structlog_logging_config=StructLoggingConfig(
                processors=processors,  # type: ignore[arg-type]
                log_exceptions="always",
                # Refusals are answers, not incidents: a line each, no stack trace.
                disable_stack_trace={400, 401, 403, 404, 405, 409, 413, 422},
                logger_factory=structlog.PrintLoggerFactory(),
                wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            ),
            enable_middleware_logging=False,
        )
    )
