"""The partner SDK: httpx clients that sign every request (RFC 9421) and verify every answer.

``ExchangeClient`` (sync) and ``AsyncExchangeClient`` (async) share one signer. A POST gets an
``Idempotency-Key`` (yours, or a fresh one) that every retry reuses, so a retry after a network
error, a 5xx or a 409 (the same key still in flight) can never post twice. Each attempt is signed
anew, with a fresh nonce and ``created``. Answers are checked against the exchange's public keys
from ``GET /v1/keys`` (fetched once, and again when an unknown key id appears after a rotation).

    client = ExchangeClient("https://exchange.example", key_id="...", alg="ed25519", key=private)
    client.enrol("alice")
    client.issue("alice", 1_000)
"""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import http_sf
import httpx
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from partners.httpsig import SignatureInvalid, sign_request, verify_response

RETRY_STATUSES = frozenset({409, 500, 502, 503, 504})
#: The one 409 worth retrying: the first request with the key is still running. Any other 409
#: (``hold-not-active``...) is the answer, and asking again only delays it.
IN_FLIGHT_PROBLEM = "/idempotency-in-flight"


class ResponseSignatureInvalid(Exception):
    """The answer did not carry a valid signature of the exchange: do not trust it."""


class ProblemError(Exception):
    """The exchange refused the request; ``problem`` is its RFC 9457 body."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        super().__init__(
            f"{status} {problem.get('type')}: {problem.get('detail') or problem.get('title')}"
        )
        self.status = status
        self.problem = problem

    @property
    def type(self) -> str:
        return str(self.problem.get("type", ""))


def new_idempotency_key() -> str:
    return str(uuid.uuid4())


def _secret_bytes(key: bytes | str) -> bytes:
    """An HMAC secret as the exchange prints it (base64) or as raw bytes."""
    return base64.b64decode(key, validate=True) if isinstance(key, str) else key


@dataclass
class _Signer:
    key_id: str
    alg: str
    key: bytes | Ed25519PrivateKey
    verify_responses: bool = True
    exchange_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)

    def sign(self, request: httpx.Request) -> None:
        raw = request.url.raw_path.decode("ascii")
        path, _, query = raw.partition("?")
        body = request.content
        added = sign_request(
            method=request.method,
            path=path,
            query=query,
            authority=request.url.netloc.decode("ascii"),
            headers=dict(request.headers),
            body=body,
            key_id=self.key_id,
            alg=self.alg,
            key=self.key,
            created=int(time.time()),
            nonce=secrets.token_urlsafe(16),
        )
        request.headers.update(added)

    def check(self, response: httpx.Response) -> str | None:
        """Verify the exchange's signature; ``None`` if the key id is unknown (fetch keys again)."""
        if not self.verify_responses:
            return "unverified"
        try:
            return verify_response(
                status=response.status_code,
                headers=dict(response.headers),
                body=response.content,
                public_keys=self.exchange_keys,
            )
        except SignatureInvalid as exc:
            if self.exchange_keys and not self._unknown_key(response):
                raise ResponseSignatureInvalid(str(exc)) from exc
            return None

    def _unknown_key(self, response: httpx.Response) -> bool:
        keyid = response.headers.get("signature-input", "")
        return not any(f'keyid="{known}"' in keyid for known in self.exchange_keys)

    def load_keys(self, response: httpx.Response) -> None:
        response.raise_for_status()
        keys = {}
        for entry in response.json():
            public = serialization.load_pem_public_key(entry["public_key"].encode())
            if isinstance(public, Ed25519PublicKey):
                keys[entry["key_id"]] = public
        self.exchange_keys = keys


_LIMITS = httpx.Limits(keepalive_expiry=4.0)
"""Idle connections are dropped after 4 s, before a server that closes them at 5 s (uvicorn's
default, the exchange's): with equal timeouts a request can be sent on a connection the server
is closing at that moment, and fail with a read error though the server never saw it."""


def _build(
    client: httpx.Client | httpx.AsyncClient,
    method: str,
    path: str,
    json_body: Any,
    params: Mapping[str, Any] | None,
    idempotency_key: str | None,
) -> httpx.Request:
    headers = {"accept": "application/json"}
    content = None
    if json_body is not None:
        # msgspec: the same compact JSON as json.dumps (UTF-8 rather than \u escapes), several
        # times faster on a batch's thousand operations.
        content = msgspec.json.encode(json_body)
        headers["content-type"] = "application/json"
    if idempotency_key is not None:
        # A Structured Field string, escaped: a key holding '"' or '\\' stays one valid string.
        headers["idempotency-key"] = http_sf.ser(idempotency_key)
    clean = {k: v for k, v in (params or {}).items() if v is not None}
    return client.build_request(
        method, path, content=content, params=clean or None, headers=headers
    )


def _result(response: httpx.Response) -> Any:
    if response.is_success:
        return msgspec.json.decode(response.content) if response.content else None
    try:
        problem = msgspec.json.decode(response.content)
    except ValueError:  # msgspec.DecodeError is one
        problem = {"title": response.text}
    raise ProblemError(response.status_code, problem)


def _retryable(response: httpx.Response) -> bool:
    """A 5xx of the list, or a 409 because the same key is still in flight."""
    if response.status_code != 409:
        return response.status_code in RETRY_STATUSES
    try:
        problem = response.json()
    except ValueError:
        return False
    kind = problem.get("type") if isinstance(problem, dict) else None
    return isinstance(kind, str) and kind.endswith(IN_FLIGHT_PROBLEM)


def _backoff(attempt: int, base: float) -> float:
    return base * (2**attempt) * (0.5 + random.random())


class _Operations:
    """The contract's calls, on top of a ``call(method, path, json=..., params=...)``."""

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        raise NotImplementedError

    def me(self) -> Any:
        return self._call("GET", "/v1/partners/me")

    def enrol(self, member_ref: str, **kw: Any) -> Any:
        return self._call("POST", "/v1/members", json={"member_ref": member_ref}, **kw)

    def member(self, member_ref: str) -> Any:
        return self._call("GET", f"/v1/members/{_segment(member_ref)}")

    def history(self, member_ref: str, limit: int | None = None, cursor: str | None = None) -> Any:
        return self._call(
            "GET",
            f"/v1/members/{_segment(member_ref)}/transactions",
            params={"limit": limit, "cursor": cursor},
        )

    def issue(self, member_ref: str, points: int, reference: str | None = None, **kw: Any) -> Any:
        body = {"member_ref": member_ref, "points": points, "reference": reference}
        return self._call("POST", "/v1/issuances", json=_compact(body), **kw)

    def redeem(self, member_ref: str, points: int, reference: str | None = None, **kw: Any) -> Any:
        body = {"member_ref": member_ref, "points": points, "reference": reference}
        return self._call("POST", "/v1/redemptions", json=_compact(body), **kw)

    def transfer(self, from_member_ref: str, to_member_ref: str, points: int, **kw: Any) -> Any:
        body = {
            "from_member_ref": from_member_ref,
            "to_member_ref": to_member_ref,
            "points": points,
        }
        return self._call("POST", "/v1/transfers", json=body, **kw)

    def hold(self, member_ref: str, points: int, expires_in: int | None = None, **kw: Any) -> Any:
        body = {"member_ref": member_ref, "points": points, "expires_in": expires_in}
        return self._call("POST", "/v1/holds", json=_compact(body), **kw)

    def capture(self, hold_id: str, points: int | None = None, **kw: Any) -> Any:
        return self._call(
            "POST", f"/v1/holds/{hold_id}/capture", json=_compact({"points": points}), **kw
        )

    def void(self, hold_id: str, **kw: Any) -> Any:
        return self._call("POST", f"/v1/holds/{hold_id}/void", json={}, **kw)

    def reverse(self, transaction_id: str, points: int | None = None, **kw: Any) -> Any:
        return self._call(
            "POST",
            f"/v1/transactions/{transaction_id}/reversal",
            json=_compact({"points": points}),
            **kw,
        )

    def transaction(self, transaction_id: str) -> Any:
        return self._call("GET", f"/v1/transactions/{transaction_id}")

    def rates(self) -> Any:
        return self._call("GET", "/v1/rates")

    def quote(
        self, member_ref: str, to_partner: str, to_member_ref: str, points: int, **kw: Any
    ) -> Any:
        body = {
            "member_ref": member_ref,
            "to_partner": to_partner,
            "to_member_ref": to_member_ref,
            "points": points,
        }
        return self._call("POST", "/v1/quotes", json=body, **kw)

    def convert(
        self,
        member_ref: str,
        to_partner: str,
        to_member_ref: str,
        points: int,
        quote_id: str | None = None,
        **kw: Any,
    ) -> Any:
        body = {
            "member_ref": member_ref,
            "to_partner": to_partner,
            "to_member_ref": to_member_ref,
            "points": points,
            "quote_id": quote_id,
        }
        return self._call("POST", "/v1/conversions", json=_compact(body), **kw)

    def donate(self, member_ref: str, charity: str, points: int, **kw: Any) -> Any:
        body = {"member_ref": member_ref, "charity": charity, "points": points}
        return self._call("POST", "/v1/donations", json=body, **kw)

    def settlements(self) -> Any:
        return self._call("GET", "/v1/settlements")

    def settlement(self, business_date: str) -> Any:
        return self._call("GET", f"/v1/settlements/{business_date}")


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def _segment(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="")


class ExchangeClient(_Operations):
    """A synchronous, signing, verifying, retrying client for one partner key."""

    def __init__(
        self,
        base_url: str,
        *,
        key_id: str,
        alg: str,
        key: bytes | str | Ed25519PrivateKey,
        transport: httpx.BaseTransport | None = None,
        verify_responses: bool = True,
        retries: int = 4,
        backoff: float = 0.05,
        timeout: float = 10.0,
    ) -> None:
        material = key if isinstance(key, Ed25519PrivateKey) else _secret_bytes(key)
        self._signer = _Signer(key_id, alg, material, verify_responses)
        self._http = httpx.Client(
            base_url=base_url, transport=transport, timeout=timeout, limits=_LIMITS
        )
        self.retries = retries
        self.backoff = backoff

    def __enter__(self) -> ExchangeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def refresh_keys(self) -> None:
        self._signer.load_keys(self._http.get("/v1/keys"))

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send a signed request, retrying with the same idempotency key; verify the answer."""
        if method == "POST" and idempotency_key is None:
            idempotency_key = new_idempotency_key()
        attempt = 0
        while True:
            request = _build(self._http, method, path, json, params, idempotency_key)
            self._signer.sign(request)
            try:
                response = self._http.send(request)
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
            else:
                if not _retryable(response) or attempt >= self.retries:
                    self._verify(response)
                    return response
            time.sleep(_backoff(attempt, self.backoff))
            attempt += 1

    def _verify(self, response: httpx.Response) -> None:
        if self._signer.check(response) is None:
            self.refresh_keys()
            if self._signer.check(response) is None:
                raise ResponseSignatureInvalid("the answer is not signed by a published key")

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        return _result(self.request(method, path, **kwargs))


class AsyncExchangeClient(_Operations):
    """The asynchronous twin of :class:`ExchangeClient`; its operations are awaitables."""

    def __init__(
        self,
        base_url: str,
        *,
        key_id: str,
        alg: str,
        key: bytes | str | Ed25519PrivateKey,
        transport: httpx.AsyncBaseTransport | None = None,
        verify_responses: bool = True,
        retries: int = 4,
        backoff: float = 0.05,
        timeout: float = 10.0,
    ) -> None:
        material = key if isinstance(key, Ed25519PrivateKey) else _secret_bytes(key)
        self._signer = _Signer(key_id, alg, material, verify_responses)
        self._http = httpx.AsyncClient(
            base_url=base_url, transport=transport, timeout=timeout, limits=_LIMITS
        )
        self.retries = retries
        self.backoff = backoff

    async def __aenter__(self) -> AsyncExchangeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def refresh_keys(self) -> None:
        self._signer.load_keys(await self._http.get("/v1/keys"))

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> httpx.Response:
        """Send a signed request, retrying with the same idempotency key; verify the answer."""
        if method == "POST" and idempotency_key is None:
            idempotency_key = new_idempotency_key()
        attempt = 0
        while True:
            request = _build(self._http, method, path, json, params, idempotency_key)
            self._signer.sign(request)
            try:
                response = await self._http.send(request)
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
            else:
                if not _retryable(response) or attempt >= self.retries:
                    await self._verify(response)
                    return response
            await asyncio.sleep(_backoff(attempt, self.backoff))
            attempt += 1

    async def _verify(self, response: httpx.Response) -> None:
        if self._signer.check(response) is None:
            await self.refresh_keys()
            if self._signer.check(response) is None:
                raise ResponseSignatureInvalid("the answer is not signed by a published key")

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:  # type: ignore[override]
        return _result(await self.request(method, path, **kwargs))
