"""The interactive documentation at ``/docs``, served by the exchange itself.

Swagger UI's files come from the ``swagger-ui-bundle`` package and are served at
``/docs/assets``, so the page works offline and loads nothing from a CDN. The document's
description says what a browser cannot do: every ``/v1`` call but ``GET /v1/keys`` must be
signed (RFC 9421), so "Try it out" answers 401; use the SDK (``partners.client``) or sign as the
README's partner guide shows."""

from __future__ import annotations

from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.router import Router
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

ASSETS_PATH = "/docs/assets"

DOCS_DESCRIPTION = """\
The ledger of record of a coalition of loyalty programmes.

**Every call under `/v1` must be signed** with an RFC 9421 HTTP Message Signature made with one
of the partner's registered keys (`ed25519` preferred, or `hmac-sha256`), covering `@method`,
`@path`, `@query` when there is one, `content-digest` when there is a body, and
`idempotency-key` on a POST, with the parameters `created`, `keyid` and `nonce`. A browser
cannot make those signatures, so "Try it out" here answers `401 signature-invalid`: call the
API with the Python SDK (`partners.client.ExchangeClient`) or sign as the README's partner
guide shows. Only `GET /v1/keys` (the exchange's public keys) is unsigned.

Every answer is signed by the exchange (`Signature`, `Signature-Input`, `Content-Digest`);
verify it with a key from `GET /v1/keys`. Timestamps are RFC 3339 in UTC; points are integers,
money is integer micros or minor units with the unit in the field name.
"""


def swagger_ui() -> SwaggerRenderPlugin:
    """Swagger UI at ``/docs``, its scripts and styles from this server."""
    return SwaggerRenderPlugin(
        js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
        css_url=f"{ASSETS_PATH}/swagger-ui.css",
        standalone_preset_js_url=f"{ASSETS_PATH}/swagger-ui-standalone-preset.js",
        path="/",
    )


def swagger_assets() -> Router:
    """Swagger UI's files, from the installed package."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[str(swagger_ui_path)],
        include_in_schema=False,
        name="swagger-assets",
    )
