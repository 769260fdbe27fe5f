"""What the pages share: the template response with the signed-in user, the calendar."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.response import Template

from exchange.console.web import me
from exchange.settings import Settings
from settlement.calendar import BusinessCalendar


def page(request: Request[Any, Any, Any], name: str, **context: Any) -> Template:
    """``console/<name>.html`` with the user, the session's CSRF token and the page's name."""
    signed = me(request)
    return Template(
        template_name=f"console/{name}.html",
        context={"me": signed, "csrf": signed.csrf_token, "active": name, **context},
    )


def calendar(settings: Settings) -> BusinessCalendar:
    return BusinessCalendar.from_settings(settings)
