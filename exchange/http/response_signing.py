"""The exchange's RFC 9421 signature on every answer (SPEC §4), so a partner can keep any answer
as proof. It wraps the whole application, not one route, so that the router's own answers (404,
405) and every refusal are signed as well.

The signature covers ``@status``, ``content-digest`` and the request answered (RFC 9421 §2.4):
``"@method";req``, ``"@path";req``, ``"@query";req`` when there is a query and
``"signature";req`` when the request was signed, so that no answer, a refusal included, can be
passed off as the answer to another request."""

from __future__ import annotations

import re
import time
from urllib.parse import quote

from litestar.enums import ScopeType
from litestar.types import ASGIApp, HTTPResponseStartEvent, HTTPScope, Receive, Scope, Send

from exchange.http.buffering import whole_answer
from exchange.http.signatures import raw_path
from partners.httpsig import RequestBinding, sign_response


def answered_request(scope: HTTPScope) -> RequestBinding:
    """The request as its sender sent it: method, raw path and query, ``Signature`` field.
    Bytes no conforming client sends (outside printable ASCII) are percent-encoded, and such a
    ``Signature`` is left out, so that every answer can still be signed."""
    lines = [value for name, value in scope["headers"] if name.lower() == b"signature"]
    signature = b", ".join(line.strip() for line in lines).decode("latin-1")
    return RequestBinding(
        scope["method"],
        _printable(raw_path(scope)),
        _printable(scope["query_string"].decode("latin-1")),
        signature if lines and _PRINTABLE.fullmatch(signature) else None,
    )


_PRINTABLE = re.compile(r"[ -~]*")


def _printable(value: str) -> str:
    return value if _PRINTABLE.fullmatch(value) else quote(value, safe=_SAFE)


_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")


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
                request=answered_request(scope),
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
