"""The exchange's RFC 9421 signature on every answer (SPEC §4), so a partner can keep any answer
as proof. It wraps the whole application, not one route, so that the router's own answers (404,
405) and every refusal are signed as well."""

from __future__ import annotations

import time

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, Receive, Scope, Send

from exchange.http.buffering import whole_answer
from partners.httpsig import sign_response


def sign_responses(app: ASGIApp) -> ASGIApp:
    """Buffer each answer, then send it with ``Content-Digest``, ``Signature-Input`` and
    ``Signature`` covering ``@status`` and ``content-digest``, by the exchange's active key."""

    async def signed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return

        async def sign_then_send(start: HTTPResponseStartEvent, body: bytes) -> None:
            keys = scope["app"].state.exchange_keys
            signature = sign_response(
                status=start["status"],
                headers={},
                body=body,
                key_id=keys.key_id,
                key=keys.signing_key,
                created=int(time.time()),
            )
            signed = start.copy()
            signed["headers"] = [
                *start.get("headers", ()),
                *((name.lower().encode(), value.encode()) for name, value in signature.items()),
            ]
            await send(signed)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await app(scope, receive, whole_answer(send, sign_then_send))

    return signed
