"""Issue 15, finding 1: an answer is bound to the request it answers. A proxy that answers a
redemption with a captured, validly signed 201 of an earlier issuance (or the 401 of an unsigned
request) does not get it past the SDK, sync or async; nothing is posted. (The age limit and
the binding themselves: tests/unit/test_httpsig.py.)"""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from partners.client import ResponseSignatureInvalid
from tests.integration.live_server import LiveServer, live_server
from tests.integration.test_client import (
    FLAVOURS,
    Brand,
    Wire,
    answer,
    ledger,
    operator,
    sdk_for,
    sky,
)

__all__ = ["live_server", "operator", "sky"]  # the fixtures, imported for pytest


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_an_answer_to_another_request_is_refused(
    live_server: LiveServer, sky: Brand, sessions: async_sessionmaker[AsyncSession], flavour: str
) -> None:
    async with sdk_for(flavour, live_server, sky.ed25519) as clean:
        await clean("enrol", "a2")
        await clean("issue", "a2", 10_000)
        [(_, issued)] = clean.wire.calls("POST", "/v1/issuances")
    with httpx.Client(base_url=live_server.base_url) as raw:
        unsigned = raw.post("/v1/redemptions", json={"member_ref": "a2", "points": 5000})
    assert (issued.status_code, unsigned.status_code) == (201, 401)
    before = await ledger(sessions)
    for captured in (issued, unsigned):

        def proxy(
            request: httpx.Request, captured: httpx.Response = captured
        ) -> httpx.Response | None:
            return answer(captured) if request.url.path == "/v1/redemptions" else None

        async with sdk_for(flavour, live_server, sky.ed25519, Wire(gateway=proxy)) as sdk:
            with pytest.raises(ResponseSignatureInvalid):
                await sdk("redeem", "a2", 5000)
    assert await ledger(sessions) == before
