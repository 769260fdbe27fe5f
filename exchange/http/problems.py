"""RFC 9457 problem details: the one place where a refusal becomes an HTTP answer.

Every problem has ``type`` = :data:`PROBLEM_TYPE_BASE` + a stable slug, ``title`` (the same for
every occurrence of the cause), ``status``, ``detail`` (this occurrence, when there is one) and
the facts a caller needs as further members (``available``, ``requested``, ``errors``...).
Domain errors carry their slug, status and title (``exchange.errors``); Litestar's own
exceptions are mapped here; anything unexpected is a 500 that says nothing about internals.
Middleware that answers before a handler runs (signatures, idempotency) uses
:func:`send_problem`, so its answers are built the same way.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)
from litestar.types import Receive, Scope, Send

from exchange.errors import PROBLEM_TYPE_BASE, DomainError
from exchange.openapi import PROBLEM_MEDIA_TYPE

_RESERVED = frozenset({"type", "title", "status", "detail", "instance"})
_HTTP_SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "request-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
    500: "internal-error",
    503: "service-unavailable",
}

log = structlog.get_logger()


class Problem(ProblemDetailsException):
    """A problem with a slug-based ``type``; ``detail`` is left out when there is none (Litestar
    would otherwise fill it with the status phrase)."""

    def __init__(
        self,
        slug: str,
        title: str,
        status: int,
        detail: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(
            detail=detail or "",
            status_code=status,
            type_=PROBLEM_TYPE_BASE + slug,
            title=title,
            extra=extra,
        )
        self.problem_detail = detail

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {"type": self.type_, "title": self.title}
        document["status"] = self.status_code
        if self.problem_detail:
            document["detail"] = self.problem_detail
        if isinstance(self.extra, dict):
            document.update((k, v) for k, v in self.extra.items() if k not in _RESERVED)
        return document

    def to_response(self, request: Request[Any, Any, Any] | None = None) -> Response[Any]:
        return Response(
            self.document(), media_type=PROBLEM_MEDIA_TYPE, status_code=self.status_code
        )


def from_domain_error(error: DomainError) -> Problem:
    return Problem(error.slug, error.title, error.status, error.detail, dict(error.extra))


_BOUND = re.compile(r"(<=|>=) (-?\d+)$")


def _named(entry: Any) -> Any:
    """A field error with the bound it broke as a number (``maximum``, ``minimum``)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("message"), str):
        return entry
    bound = _BOUND.search(entry["message"])
    if bound is None:
        return entry
    return {**entry, "maximum" if bound[1] == "<=" else "minimum": int(bound[2])}


def from_validation_error(error: ValidationException) -> Problem:
    """A body, query or path value of the wrong shape: 422 with Litestar's field errors, each
    named in the detail (``query limit: Expected `int` <= 500``) and with its bound as a number."""
    errors = [_named(entry) for entry in error.extra] if isinstance(error.extra, list) else []
    causes = [
        f"{getattr(entry.get('source'), 'value', entry.get('source') or 'body')}"
        f" {entry.get('key', '')}: {entry['message']}".replace(" :", ":")
        for entry in errors
        if isinstance(entry, dict) and isinstance(entry.get("message"), str)
    ]
    detail = "; ".join(causes) if causes else error.detail
    return Problem("invalid-request", "The request is not valid", 422, detail, {"errors": errors})


def from_http_exception(error: HTTPException) -> Problem:
    status = error.status_code
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    detail = error.detail if status < 500 and error.detail != title else None
    return Problem(_HTTP_SLUGS.get(status, f"http-{status}"), title, status, detail)


def from_unexpected(error: Exception) -> Problem:
    # The traceback goes to the log (Litestar logs every exception); the caller learns nothing.
    return internal_error()


def internal_error() -> Problem:
    return Problem("internal-error", "Internal server error", 500)


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(
            exception_to_problem_detail_map={
                DomainError: from_domain_error,
                ValidationException: from_validation_error,
                HTTPException: from_http_exception,
                Exception: from_unexpected,
            }
        )
    )


async def send_problem(scope: Scope, receive: Receive, send: Send, problem: Problem) -> None:
    """Answer with ``problem`` from middleware, before or instead of a handler."""
    request: Request[Any, Any, Any] = Request(scope, receive, send)
    await problem.to_response().to_asgi_response(app=None, request=request)(scope, receive, send)
