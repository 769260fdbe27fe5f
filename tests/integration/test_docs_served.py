"""The README's OpenAPI path answers, and /docs works offline, saying calls must be signed
(issue 16: the README named /schema/openapi.json, a 404, and /docs loaded from a CDN)."""

from __future__ import annotations

import re
from pathlib import Path

from tests.integration.conftest import SignedApi

README = Path(__file__).resolve().parents[2] / "README.md"


async def test_the_openapi_document_is_where_the_readme_says(api: SignedApi) -> None:
    paths = set(re.findall(r"`(/[a-z/]*openapi\.json)`", README.read_text()))
    assert paths, "the README names the OpenAPI document"
    for path in paths:
        answer = await api.get(path, as_=None)
        assert answer.status_code == 200, path
        assert "must be signed" in answer.json()["info"]["description"]


async def test_the_docs_page_loads_nothing_from_elsewhere(api: SignedApi) -> None:
    page = await api.get("/docs", as_=None)
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(source.startswith("/docs/assets/") for source in sources), sources
    for source in sources:
        asset = await api.get(source, as_=None)
        assert asset.status_code == 200, source
        assert len(asset.content) > 1_000, source


async def test_an_unknown_path_carries_a_request_id(api: SignedApi) -> None:
    missing = await api.get("/nothing-here", as_=None)
    assert missing.status_code == 404
    assert missing.headers.get("x-request-id")
