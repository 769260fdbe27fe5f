"""Route guards every feature's controllers share."""

from __future__ import annotations

from typing import Any

from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler

from exchange.errors import OperatorOnly
from exchange.ledger.parties import PartnerInfo


def operator_only(
    connection: ASGIConnection[Any, PartnerInfo, Any, Any], _: BaseRouteHandler
) -> None:
    """Guard: the request was signed with a key of the operator."""
    if connection.user.kind != "operator":
        raise OperatorOnly("this needs a key of the operator")
