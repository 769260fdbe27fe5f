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


# Control characters (C0, DEL, C1), line and paragraph separators and bidirectional overrides:
# anything that could move a terminal's cursor, forge a log line or hide text.
_OTHER_UNSAFE = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE_CHARACTER = re.compile("[\x00-\x1f" + _OTHER_UNSAFE + "]")
_UNSAFE_IN_TRACEBACK = re.compile("[\x00-\x09\x0b-\x1f" + _OTHER_UNSAFE + "]")


def _escaped(character: re.Match[str]) -> str:
    code = ord(character.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_log_values(
    logger: object, method: str, event: structlog.typing.EventDict
) -> structlog.typing.EventDict:
    """Show control characters and line separators in every string value as escapes
    (``\\x1b``, ``\\u2028``), so that what a caller sends (a path, a header) cannot forge or
    rewrite log lines, in console and JSON output alike. A traceback keeps its line breaks."""
    for key, value in event.items():
        if isinstance(value, str):
            unsafe = _UNSAFE_IN_TRACEBACK if key == "exception" else _UNSAFE_CHARACTER
            event[key] = unsafe.sub(_escaped, value)
    return event


def structlog_plugin(settings: Settings) -> StructlogPlugin:
    processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        escape_log_values,
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
