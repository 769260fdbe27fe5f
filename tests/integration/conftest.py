"""Fixtures for driving the signed API over HTTP: the real app, partners with keys made through
``partners.service``, and a small client that signs each request with ``partners.httpsig`` and
checks the exchange's signature on each answer against ``GET /v1/keys``."""

from __future__ import annotations

import warnings

# advanced-alchemy 1.x decorates a mixin with SQLAlchemy 2.1's deprecated declarative_mixin when
# it is first imported; the suite turns warnings into errors. (Belongs in pyproject's
# filterwarnings; see the note on the issue.)
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "The declarative_mixin decorator", DeprecationWarning)
    import advanced_alchemy.extensions.litestar  # noqa: F401

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import http_sf
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from http_sf.innerlist import ser_innerlist
from litestar import Litestar
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.app import create_app
from exchange.ledger.models import LedgerTransaction, Posting
from exchange.ledger.parties import PartnerInfo
from exchange.settings import Settings
from exchange.signing import ExchangeKeys, load_exchange_keys, load_master_key
from partners.httpsig import RequestBinding, sign_request, signature_base, verify_response
from partners.service import add_key
from tests.conftest import make_partner
from tests.integration.settlement_support import Cast, make_cast

BASE_URL = "http://exchange.test"
AUTO = object()
"""Default for ``idempotency_key``: a fresh key on every POST."""


@dataclass(frozen=True)
class Credentials:
    """A partner and one of its keys, as the partner holds them."""

    partner: PartnerInfo
    key_id: str
    alg: str
    key: Ed25519PrivateKey | bytes

    def sign_base(self, base: bytes) -> bytes:
        if isinstance(self.key, Ed25519PrivateKey):
            return self.key.sign(base)
        return hmac.new(self.key, base, hashlib.sha256).digest()


async def register_key(
    sessions: async_sessionmaker[AsyncSession],
    master_key: bytes,
    partner: PartnerInfo,
    alg: str = "ed25519",
) -> Credentials:
    """Register a key for ``partner`` through the partner service."""
    private = Ed25519PrivateKey.generate() if alg == "ed25519" else None
    pem = (
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        if private
        else None
    )
    async with sessions() as session, session.begin():
        new = await add_key(
            session, partner_id=partner.id, alg=alg, master_key=master_key, public_key_pem=pem
        )
    key: Ed25519PrivateKey | bytes = (
        private if private is not None else base64.b64decode(new.secret or "")
    )
    return Credentials(partner, new.key_id, alg, key)


def custom_signature(
    credentials: Credentials,
    *,
    method: str,
    path: str,
    query: str = "",
    headers: Mapping[str, str],
    components: list[str],
    params: dict[str, Any],
) -> dict[str, str]:
    """Signature headers with any components and parameters, for requests the SDK would never
    make (no nonce, a wrong alg, components left out)."""
    inner = ([(name, {}) for name in components], params)
    base = signature_base(
        components,
        ser_innerlist(inner),  # type: ignore[arg-type]
        method=method,
        path=path,
        query=query,
        headers=headers,
    )
    return {
        "Signature-Input": http_sf.ser({"sig1": inner}),  # type: ignore[dict-item]
        "Signature": http_sf.ser({"sig1": credentials.sign_base(base)}),
    }


@dataclass
class SignedApi:
    """Drives the app over HTTP as partners do."""

    client: httpx.AsyncClient
    exchange_keys: dict[str, Ed25519PublicKey]
    sessions: async_sessionmaker[AsyncSession]
    responses: list[httpx.Response] = field(default_factory=list)

    async def request(
        self,
        method: str,
        path: str,
        *,
        as_: Credentials | None,
        json_body: Any = AUTO,
        body: bytes | None = None,
        query: str = "",
        idempotency_key: Any = AUTO,
        created: int | None = None,
        nonce: str | None = None,
        expires: int | None = None,
        headers: dict[str, str] | None = None,
        tamper: Callable[[dict[str, str]], None] | None = None,
        send_body: bytes | None = None,
    ) -> httpx.Response:
        """Sign and send one request. ``tamper`` edits the headers after signing;
        ``send_body`` replaces the body after signing."""
        if json_body is not AUTO:
            body = json.dumps(json_body).encode()
        body = body or b""
        sent: dict[str, str] = {}
        if body:
            sent["Content-Type"] = "application/json"
        if method == "POST" and idempotency_key is not None:
            sent["Idempotency-Key"] = (
                str(uuid.uuid4()) if idempotency_key is AUTO else idempotency_key
            )
        sent.update(headers or {})
        if as_ is not None:
            sent.update(
                sign_request(
                    method=method,
                    path=path,
                    query=query,
                    authority=None,
                    headers=sent,
                    body=body,
                    key_id=as_.key_id,
                    alg=as_.alg,
                    key=as_.key,
                    created=int(time.time()) if created is None else created,
                    nonce=nonce or secrets.token_urlsafe(16),
                    expires=expires,
                )
            )
        if tamper is not None:
            tamper(sent)
        url = f"{path}?{query}" if query else path
        response = await self.client.request(
            method, url, content=send_body if send_body is not None else body, headers=sent
        )
        self.check_signed(response)
        self.responses.append(response)
        return response

    async def get(self, path: str, *, as_: Credentials | None, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, as_=as_, **kwargs)

    async def post(
        self, path: str, json_body: Any = AUTO, *, as_: Credentials | None, **kwargs: Any
    ) -> httpx.Response:
        return await self.request("POST", path, as_=as_, json_body=json_body, **kwargs)

    def check_signed(self, response: httpx.Response) -> None:
        """Every answer carries the exchange's signature over its status and body."""
        verify_response(
            status=response.status_code,
            headers=response.headers,
            body=response.content,
            public_keys=self.exchange_keys,
            max_age=60,
            request=answered(response.request),
        )

    async def ledger_size(self) -> tuple[int, int]:
        """How many transactions and postings the ledger holds: "nothing posted" is "the same"."""
        async with self.sessions() as session:
            transactions = await session.scalar(select(func.count()).select_from(LedgerTransaction))
            postings = await session.scalar(select(func.count()).select_from(Posting))
        return int(transactions or 0), int(postings or 0)


def answered(request: httpx.Request) -> RequestBinding:
    """The request an answer is for, as the exchange's answer signature binds it."""
    return RequestBinding.sent(
        request.method, request.url.raw_path.decode("ascii"), request.headers.get("signature")
    )


@dataclass(frozen=True)
class Partners:
    operator: Credentials
    sky: Credentials
    """Sky Air (brand, SKY), its ed25519 key."""
    sky_hmac: Credentials
    """Sky Air's second key, hmac-sha256."""
    htl: Credentials
    """Hotel Co (brand, HTL), ed25519."""
    master_key: bytes


@pytest.fixture
async def api(
    settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> AsyncIterator[SignedApi]:
    load_master_key(settings)  # made once in the data directory; the app loads the same
    app = create_app(settings)
    # httpx's ASGI transport runs the app in this event loop, so requests really overlap
    # (Litestar's AsyncTestClient passes each one through a blocking portal, one at a time).
    transport = httpx.ASGITransport(app=app)
    async with _lifespan(app), httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        keys_answer = await client.get("/v1/keys")
        public = {
            k["key_id"]: serialization.load_pem_public_key(k["public_key"].encode())
            for k in keys_answer.json()
        }
        signed = SignedApi(client, public, sessions)  # type: ignore[arg-type]
        signed.check_signed(keys_answer)
        yield signed


@contextlib.asynccontextmanager
async def _lifespan(app: Litestar) -> AsyncIterator[None]:
    """The app's lifespan, entered and left in one task of its own (pytest-asyncio finalises
    fixtures in another task than it set them up in, which anyio's task groups refuse)."""
    started, stopping = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        async with app.lifespan():
            started.set()
            await stopping.wait()

    task = asyncio.create_task(run())
    waiter = asyncio.create_task(started.wait())
    await asyncio.wait([task, waiter], return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        waiter.cancel()
        task.result()  # startup failed: raise its error
    try:
        yield
    finally:
        stopping.set()
        await task


@pytest.fixture
async def partners(
    api: SignedApi,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    sky: PartnerInfo,
    htl: PartnerInfo,
) -> Partners:
    master_key = load_master_key(settings)
    operator = await make_partner(sessions, settings, "operator", "Coalition operator")
    return Partners(
        operator=await register_key(sessions, master_key, operator),
        sky=await register_key(sessions, master_key, sky),
        sky_hmac=await register_key(sessions, master_key, sky, "hmac-sha256"),
        htl=await register_key(sessions, master_key, htl),
        master_key=master_key,
    )


@pytest.fixture
def keys(settings: Settings) -> ExchangeKeys:
    """The exchange's signing keys, as the service loads them."""
    return load_exchange_keys(settings)


@pytest.fixture
async def cast(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    sky: PartnerInfo,
    htl: PartnerInfo,
) -> Cast:
    """The settlement tests' five participants (``settlement_support``)."""
    return await make_cast(sessions, settings, sky, htl)
