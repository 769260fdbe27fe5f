"""What every console page shares: who is signed in, the CSRF check, the operator role, the
database transaction of an action, and how a refusal is shown (an HTML page, not a problem
document: the console is for people).

The console is not part of the signed API: it lives outside the ``/v1`` router, so request
signatures and Idempotency-Keys never apply to it. The exchange's answer signature, around the
whole app, signs its pages too, which costs nothing a browser notices."""

from __future__ import annotations

import secrets
from collections.abc import AsyncGenerator
from typing import Any, cast
from urllib.parse import quote

from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar import Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler
from litestar.response import Redirect, Template
from litestar.types import AfterRequestHookHandler, Guard
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.console.sessions import COOKIE, SignedIn, signed_in
from exchange.errors import DomainError
from exchange.settings import Settings

PREFIX = "/console"
SECURITY_HEADERS = {
    # Nothing but the exchange's own files: no script at all, styles and images from here.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self';"
        " frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class LoginRequired(NotAuthorizedException):
    """No live session: the page answers with the way to the login form."""


def client_address(request: ASGIConnection[Any, Any, Any, Any]) -> str:
    """The peer's address as the server saw it (behind a proxy, uvicorn's ``--proxy-headers``
    with ``--forwarded-allow-ips`` makes it the client's)."""
    return request.client.host if request.client else "unknown"


def me(request: ASGIConnection[Any, Any, Any, Any]) -> SignedIn:
    signed: SignedIn = request.state.console_user
    return signed


def session_check(db_config: SQLAlchemyAsyncConfig) -> Guard:
    """The first guard of every signed-in page: find the session from its cookie (else
    :class:`LoginRequired`) and, on a POST, check the form's CSRF token against the session's
    (else 403, before any other guard or the handler has run: nothing changes)."""

    async def check(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        request = cast(Request[Any, Any, State], connection)
        db = db_config.provide_session(request.app.state, request.scope)
        found = await signed_in(db, request.cookies.get(COOKIE))
        if found is None:
            raise LoginRequired("sign in first")
        if request.method == "POST":
            form = await request.form()
            sent = form.get("csrf_token")
            if not isinstance(sent, str) or not secrets.compare_digest(sent, found.csrf_token):
                raise PermissionDeniedException("the form's CSRF token is missing or wrong")
        request.state.console_user = found

    return check


def operator_role(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    """Guard: the signed-in user has the operator role."""
    if me(connection).user.role != "operator":
        raise PermissionDeniedException("this needs the operator role")


async def provide_console_db(
    db_session: NamedDependency[AsyncSession],
) -> AsyncGenerator[AsyncSession, None]:
    """The request's session for an action, committed once the handler has answered and before
    the answer leaves (a redirect or a refused login is not a 2xx, which the plugin's own
    handler would roll back). A handler that raises commits nothing."""
    yield db_session
    await db_session.commit()


def provide_settings(state: State) -> Settings:
    settings: Settings = state.settings
    return settings


def provide_master_key(state: State) -> bytes:
    key: bytes = state.master_key
    return key


def security_headers() -> AfterRequestHookHandler:
    async def add(response: Response[Any]) -> Response[Any]:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return add


def _login_redirect(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    target = request.url.path if request.method == "GET" else PREFIX
    return Redirect(f"{PREFIX}/login?next={quote(target)}", headers=SECURITY_HEADERS)


def _refusal(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    status = 500
    message = "Something went wrong; the error was logged."
    if isinstance(exc, HTTPException):
        status, message = exc.status_code, exc.detail
    elif isinstance(exc, DomainError):
        status, message = exc.status, exc.detail or exc.title
    signed = getattr(request.state, "console_user", None)
    return Template(
        template_name="console/refused.html",
        context={"status": status, "message": message, "me": signed, "csrf": None},
        status_code=status,
        headers=SECURITY_HEADERS,
    )


EXCEPTION_HANDLERS: dict[type[Exception], Any] = {
    LoginRequired: _login_redirect,
    HTTPException: _refusal,
    DomainError: _refusal,
}
