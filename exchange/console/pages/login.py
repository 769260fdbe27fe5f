"""Signing in and out.

The login form is one step (name, password, TOTP code), and a refusal never says which of the
three was wrong. Before there is a session the form is protected against cross-site posting by
a double-submit token: a random value in an ``HttpOnly``, ``SameSite=Strict`` cookie that the
form must send back."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import Cookie, State
from litestar.di import NamedDependency
from litestar.exceptions import PermissionDeniedException
from litestar.params import QueryParameter
from litestar.response import Redirect, Template
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.base import rfc3339, utcnow
from exchange.console import audit, throttle
from exchange.console.sessions import COOKIE, LOGIN_COOKIE, end_session, open_session
from exchange.console.users import check_credentials
from exchange.console.web import PREFIX, client_address, me, operator_role
from exchange.settings import Settings

__all__ = ["LoginController", "LogoutController", "operator_role"]


def _cookie(settings: Settings, key: str, value: str, max_age: int) -> Cookie:
    return Cookie(
        key=key,
        value=value,
        path=PREFIX,
        max_age=max_age,
        httponly=True,
        secure=settings.console_secure_cookies,
        samesite="strict",
    )


def _next_page(target: str | None) -> str:
    """Only a console page: never another site (``//evil.example``) or another path."""
    if target and target.startswith(PREFIX) and not target.startswith("//"):
        return target
    return PREFIX


class LoginController(Controller):
    path = "/"
    include_in_schema = False

    @get("/login", sync_to_thread=False)
    def form(
        self,
        settings: NamedDependency[Settings],
        next: Annotated[str | None, QueryParameter()] = None,
    ) -> Template:
        token = secrets.token_urlsafe(32)
        return Template(
            template_name="console/login.html",
            context={"login_csrf": token, "next": _next_page(next), "error": None},
            cookies=[_cookie(settings, LOGIN_COOKIE, token, 1800)],
        )

    @post("/login", status_code=303)
    async def login(
        self,
        request: Request[Any, Any, State],
        console_db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
        master_key: NamedDependency[bytes],
    ) -> Redirect | Template:
        form = await request.form()
        sent = form.get("csrf_token")
        cookie = request.cookies.get(LOGIN_COOKIE)
        if not (isinstance(sent, str) and cookie and secrets.compare_digest(sent, cookie)):
            raise PermissionDeniedException("the login form's CSRF token is missing or wrong")
        name = str(form.get("name") or "").strip().lower()[:64]
        address = client_address(request)
        now = utcnow()
        keys = throttle.subjects(name, address)
        until = await throttle.locked_until(console_db, keys, now)
        if until is not None:
            await audit.record(
                console_db, user_name=name, action="login", outcome="locked", address=address
            )
            return self._again(request, settings, form, 429, until)
        user = await check_credentials(
            console_db,
            name=name,
            password=str(form.get("password") or ""),
            code=str(form.get("code") or ""),
            master_key=master_key,
            now=now,
        )
        if user is None:
            lockout = dt.timedelta(minutes=settings.console_lockout_minutes)
            locked = await throttle.record_failure(
                console_db, keys, now, max_failures=settings.console_max_failures, lockout=lockout
            )
            await audit.record(
                console_db, user_name=name, action="login", outcome="failed", address=address
            )
            return self._again(
                request, settings, form, 429 if locked else 401, now + lockout if locked else None
            )
        await throttle.clear(console_db, keys[0])
        lifetime = dt.timedelta(minutes=settings.console_session_minutes)
        token = await open_session(console_db, user, address=address, lifetime=lifetime)
        await audit.record(console_db, user_name=user.name, action="login", address=address)
        return Redirect(
            _next_page(str(form.get("next") or "")),
            cookies=[
                _cookie(settings, COOKIE, token, int(lifetime.total_seconds())),
                _cookie(settings, LOGIN_COOKIE, "", 0),
            ],
        )

    @staticmethod
    def _again(
        request: Request[Any, Any, State],
        settings: Settings,
        form: Any,
        status: int,
        locked_until: dt.datetime | None,
    ) -> Template:
        error = (
            f"Too many failed logins: try again after {rfc3339(locked_until)}."
            if locked_until is not None
            else "The name, password or code is not right."
        )
        token = secrets.token_urlsafe(32)
        return Template(
            template_name="console/login.html",
            context={
                "login_csrf": token,
                "next": _next_page(str(form.get("next") or "")),
                "error": error,
                "name": str(form.get("name") or "")[:64],
            },
            status_code=status,
            cookies=[_cookie(settings, LOGIN_COOKIE, token, 1800)],
        )


class LogoutController(Controller):
    """Behind the session check (the router's hook): a logout form carries its CSRF token."""

    path = "/"
    include_in_schema = False

    @post("/logout", status_code=303)
    async def logout(
        self,
        request: Request[Any, Any, State],
        console_db: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> Redirect:
        token = request.cookies.get(COOKIE, "")
        await end_session(console_db, token)
        await audit.record(
            console_db, user_name=me(request).user.name, action="logout",
            address=client_address(request),
        )  # fmt: skip
        return Redirect(f"{PREFIX}/login", cookies=[_cookie(settings, COOKIE, "", 0)])
