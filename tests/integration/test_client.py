"""The partner SDK (``partners.client``) against a real exchange over TCP (``live_server``).

Both clients (``ExchangeClient`` and ``AsyncExchangeClient``) run the worked example with an
ed25519 key and with an hmac-sha256 key, on SQLite and PostgreSQL. The brand and its keys are
onboarded through the operator API, by the SDK itself. Under each client sits :class:`Wire`, the
real httpx transport with a hook that can play a broken or hostile network: it records every
exchange, loses an answer after the server has committed it, or alters answers on their way
back. The server is never mocked; only what travels between it and the client is touched.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.contract.batches import BatchPurchase
from exchange.contract.purchases import EarnRate, EarnRulesCreate, OrderLine, ReturnLine
from exchange.contract.schemas import (
    HoldOperationOut,
    MemberOut,
    OperationOut,
    PartnerOut,
    TransactionReceiptOut,
)
from exchange.ledger.models import LedgerTransaction, Posting
from exchange.ledger.verify import verify_ledger
from exchange.outbox import OutboxEvent, enqueue_event
from exchange.settings import Settings
from exchange.signing import verify_document
from partners.client import (
    AsyncExchangeClient,
    ExchangeClient,
    ProblemError,
    ResponseSignatureInvalid,
)
from partners.httpsig import parse_signatures, sign_response, verify_response
from tests.conftest import make_partner
from tests.integration.conftest import answered, register_key
from tests.integration.live_server import LiveServer, live_server

__all__ = ["live_server"]  # the fixture, imported for pytest

PROBLEMS = "https://exchange.example/problems/"
FLAVOURS = ["sync", "async"]
ODD_KEY = 'order "7" \\ retry'
"""An Idempotency-Key that must be escaped as a Structured Field string."""

Hook = Callable[[int, httpx.Request, httpx.Response], httpx.Response]


# --------------------------------------------------------------------------- the wire


class Wire(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """The real network under a client (httpx's own HTTP transports), recording every exchange.

    ``hook(n, request, response)`` sees the n-th answer (0-based) after it was read whole, and
    returns the answer the client gets: the same one, an altered one, or it raises a network
    error. Answers to ``GET /v1/keys`` are never passed to the hook. ``gateway(request)`` runs
    before the request leaves: an answer it returns is the client's, and the request never
    reaches the exchange (a proxy in front of it that is down).
    """

    def __init__(
        self,
        hook: Hook | None = None,
        gateway: Callable[[httpx.Request], httpx.Response | None] | None = None,
    ) -> None:
        self.hook = hook
        self.gateway = gateway
        self.exchanges: list[tuple[httpx.Request, httpx.Response]] = []
        self._sync = httpx.HTTPTransport()
        self._async = httpx.AsyncHTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.gateway(request) if self.gateway else None
        if response is None:
            response = self._sync.handle_request(request)
            response.read()
        return self._after(request, response)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = self.gateway(request) if self.gateway else None
        if response is None:
            response = await self._async.handle_async_request(request)
            await response.aread()
        return self._after(request, response)

    def _after(self, request: httpx.Request, response: httpx.Response) -> httpx.Response:
        response.request = request
        if request.url.path == "/v1/keys":
            return response
        self.exchanges.append((request, response))
        if self.hook is None:
            return response
        return self.hook(len(self.exchanges) - 1, request, response)

    def close(self) -> None:
        self._sync.close()

    async def aclose(self) -> None:
        await self._async.aclose()

    def calls(self, method: str, path: str) -> list[tuple[httpx.Request, httpx.Response]]:
        return [(q, r) for q, r in self.exchanges if (q.method, q.url.path) == (method, path)]


def answer(
    response: httpx.Response,
    *,
    status: int | None = None,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A copy of ``response`` with another status, body or headers (Content-Length kept true)."""
    content = response.content if body is None else body
    fields = {k: v for k, v in response.headers.items() if k != "content-length"}
    fields.update(headers or {})
    return httpx.Response(
        response.status_code if status is None else status,
        headers=fields,
        content=content,
        request=response.request,
    )


# --------------------------------------------------------------------------- the clients


@dataclass(frozen=True)
class Key:
    key_id: str
    alg: str
    material: Ed25519PrivateKey | str
    """The ed25519 private key, or the HMAC secret as the exchange printed it (base64)."""


@dataclass(frozen=True)
class Brand:
    partner_id: str
    ed25519: Key
    hmac: Key

    def key(self, alg: str) -> Key:
        return self.ed25519 if alg == "ed25519" else self.hmac


class Sdk:
    """One of the two SDK clients behind one awaitable interface: ``await sdk("issue", ...)``.
    The sync client runs in a worker thread, as an application would call it."""

    def __init__(self, flavour: str, server: LiveServer, key: Key, wire: Wire, **kw: Any) -> None:
        cls = ExchangeClient if flavour == "sync" else AsyncExchangeClient
        self.client: ExchangeClient | AsyncExchangeClient = cls(
            server.base_url,
            key_id=key.key_id,
            alg=key.alg,
            key=key.material,
            transport=wire,
            backoff=0.01,
            **kw,
        )
        self.wire = wire

    async def __call__(self, operation: str, *args: Any, **kwargs: Any) -> Any:
        method = getattr(self.client, operation)
        if isinstance(self.client, AsyncExchangeClient):
            return await method(*args, **kwargs)
        return await asyncio.to_thread(method, *args, **kwargs)

    async def close(self) -> None:
        if isinstance(self.client, AsyncExchangeClient):
            await self.client.aclose()
        else:
            self.client.close()


@pytest.fixture
async def operator(
    live_server: LiveServer, settings: Settings, sessions: async_sessionmaker[AsyncSession]
) -> Key:
    """The operator and its first key, as ``litestar partners create/add-key`` would make them."""
    partner = await make_partner(sessions, settings, "operator", "Coalition operator")
    credentials = await register_key(sessions, live_server.master_key, partner)
    assert isinstance(credentials.key, Ed25519PrivateKey)
    return Key(credentials.key_id, "ed25519", credentials.key)


@pytest.fixture
async def sky(live_server: LiveServer, operator: Key) -> Brand:
    """Sky Air (brand, SKY), onboarded by the operator through the API with the SDK: an ed25519
    key whose private half never leaves the brand, and an hmac-sha256 key the exchange makes."""
    private = Ed25519PrivateKey.generate()
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    wire = Wire()
    async with AsyncExchangeClient(
        live_server.base_url,
        key_id=operator.key_id,
        alg="ed25519",
        key=operator.material,
        transport=wire,
    ) as client:
        created = await client.request(
            "POST", "/v1/partners", json={"kind": "brand", "name": "Sky Air", "currency": "SKY"}
        )
        assert created.status_code == 201, created.text
        partner_id = created.json()["id"]
        ed = await client.request(
            "POST",
            f"/v1/partners/{partner_id}/keys",
            json={"alg": "ed25519", "public_key": pem.decode()},
        )
        hm = await client.request(
            "POST", f"/v1/partners/{partner_id}/keys", json={"alg": "hmac-sha256"}
        )
    assert (ed.status_code, hm.status_code) == (201, 201), (ed.text, hm.text)
    assert ed.json()["secret"] is None
    secret = hm.json()["secret"]
    assert len(base64.b64decode(secret)) == 32
    return Brand(
        partner_id,
        Key(ed.json()["key_id"], "ed25519", private),
        Key(hm.json()["key_id"], "hmac-sha256", secret),
    )


@asynccontextmanager
async def sdk_for(
    flavour: str, server: LiveServer, key: Key, wire: Wire | None = None, **kw: Any
) -> AsyncIterator[Sdk]:
    sdk = Sdk(flavour, server, key, wire or Wire(), **kw)
    try:
        yield sdk
    finally:
        await sdk.close()


# --------------------------------------------------------------------------- checks


async def ledger(
    sessions: async_sessionmaker[AsyncSession], key: str | None = None
) -> tuple[int, int]:
    """(transactions, postings) in the ledger, or those of the transactions made with ``key``."""
    async with sessions() as session:
        transactions = select(LedgerTransaction.id)
        if key is not None:
            transactions = transactions.where(LedgerTransaction.idempotency_key == key)
        count = await session.scalar(select(func.count()).select_from(transactions.subquery()))
        postings = await session.scalar(
            select(func.count())
            .select_from(Posting)
            .where(Posting.transaction_id.in_(transactions))
        )
    return int(count or 0), int(postings or 0)


def balances(body: OperationOut | HoldOperationOut) -> dict[str, tuple[int, int, int]]:
    return {b.member_ref: (b.balance, b.held, b.available) for b in body.balances}


def assert_all_signed(server: LiveServer, wire: Wire, key: Key) -> None:
    """Every request the client sent was signed with ``key`` (and every POST had one
    Idempotency-Key), and every answer carries a valid signature of the exchange."""
    assert wire.exchanges
    for request, response in wire.exchanges:
        [signature] = parse_signatures(request.headers)
        assert signature.key_id == key.key_id
        assert signature.params["alg"] == key.alg
        assert {"@method", "@path"} <= set(signature.components)
        assert ("content-digest" in signature.components) == bool(request.content)
        assert ("idempotency-key" in request.headers) == (request.method == "POST")
        assert (
            verify_response(
                status=response.status_code,
                headers=response.headers,
                body=response.content,
                public_keys=server.exchange_keys,
                max_age=60,
                request=answered(response.request),
            )
            in server.exchange_keys
        )


def receipt_verifies(
    server: LiveServer, body: OperationOut | HoldOperationOut | TransactionReceiptOut
) -> bool:
    """The receipt verifies over the transaction as the SDK decoded it, encoded again: the
    Struct keeps every signed field, and its encoding is the exchange's."""
    public = server.exchange_keys[body.receipt.key_id]
    receipt = msgspec.to_builtins(body.receipt)
    return verify_document(msgspec.to_builtins(body.transaction), receipt, public)


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("alg", ["ed25519", "hmac-sha256"])
@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_worked_example(
    live_server: LiveServer,
    sky: Brand,
    sessions: async_sessionmaker[AsyncSession],
    flavour: str,
    alg: str,
) -> None:
    """Enrol, issue 1 000, redeem 300, transfer 200, hold 100 and capture 60, hold 50 and void
    it, reverse 100 of the issue: Alice 340, Bob 200, eight transactions, ten postings."""
    key = sky.key(alg)
    async with sdk_for(flavour, live_server, key) as sdk:
        me = await sdk("me")
        assert me == PartnerOut(uuid.UUID(sky.partner_id), "brand", "Sky Air", "SKY", None)
        assert await sdk("enrol", "alice") == MemberOut("alice", "SKY")
        assert await sdk("enrol", "alice") == MemberOut("alice", "SKY")
        assert await sdk("enrol", "bob") == MemberOut("bob", "SKY")
        statuses = [r.status_code for _, r in sdk.wire.calls("POST", "/v1/members")]
        assert statuses == [201, 200, 201]

        issued = await sdk("issue", "alice", 1000, reference="flight LH1")
        assert balances(issued) == {"alice": (1000, 0, 1000)}
        assert issued.transaction.kind == "issue"
        assert issued.transaction.partner == uuid.UUID(sky.partner_id)
        assert issued.transaction.reference == "flight LH1"
        assert receipt_verifies(live_server, issued)

        redeemed = await sdk("redeem", "alice", 300)
        assert balances(redeemed) == {"alice": (700, 0, 700)}
        moved = await sdk("transfer", "alice", "bob", 200)
        assert balances(moved) == {"alice": (500, 0, 500), "bob": (200, 0, 200)}

        held = await sdk("hold", "alice", 100)
        assert held.hold.status == "active"
        assert balances(held) == {"alice": (500, 100, 400)}
        captured = await sdk("capture", held.hold.id, 60)
        assert (captured.hold.status, captured.hold.captured) == ("captured", 60)
        assert balances(captured) == {"alice": (440, 0, 440)}

        second = await sdk("hold", "alice", 50, expires_in=600)
        assert balances(second) == {"alice": (440, 50, 390)}
        voided = await sdk("void", second.hold.id)
        assert voided.hold.status == "voided"
        assert balances(voided) == {"alice": (440, 0, 440)}

        issue_id = issued.transaction.id
        reversal = await sdk("reverse", issue_id, 100)
        assert reversal.transaction.reverses == issue_id
        assert balances(reversal) == {"alice": (340, 0, 340)}

        alice = await sdk("member", "alice")
        assert (alice.balance, alice.held, alice.available) == (340, 0, 340)
        assert (alice.head.balance, alice.head.seq) == (340, 5)
        bob = await sdk("member", "bob")
        assert (bob.balance, bob.held, bob.available) == (200, 0, 200)

        page = await sdk("history", "alice", limit=3)
        assert [i.amount for i in page.items] == [-100, -60, -200]
        rest = await sdk("history", "alice", limit=3, cursor=page.next_cursor)
        assert [i.amount for i in rest.items] == [-300, 1000]
        assert rest.next_cursor is None

        shown = await sdk("transaction", issue_id)
        assert shown.transaction == issued.transaction
        assert receipt_verifies(live_server, shown)

    # issue, redeem, transfer, hold, capture, hold, void, reverse; holds and voids post nothing
    assert await ledger(sessions) == (8, 10)
    async with sessions() as session:
        report = await verify_ledger(session)
    assert report.ok, report.as_dict()
    assert_all_signed(live_server, sdk.wire, key)
    keys = [q.headers["idempotency-key"] for q, _ in sdk.wire.exchanges if q.method == "POST"]
    assert len(keys) == len(set(keys)) == 11  # a fresh key per POST, no retries


def flip_body_byte(response: httpx.Response) -> httpx.Response:
    body = bytearray(response.content)
    position = body.index(b"0") if b"0" in body else len(body) // 2
    body[position] ^= 0x01  # "0" becomes "1": still JSON, another number
    return answer(response, body=bytes(body))


def make_201_a_200(response: httpx.Response) -> httpx.Response:
    return answer(response, status=200 if response.status_code == 201 else 201)


MALLORY = Ed25519PrivateKey.generate()


def sign_as_mallory(response: httpx.Response) -> httpx.Response:
    """Altered, then signed afresh by a key the exchange never published (with an id that looks
    like one of the exchange's)."""
    body = response.content.replace(b'"balance":1000', b'"balance":9000')
    signature = sign_response(
        status=response.status_code,
        headers={},
        body=body,
        key_id="exchange-0000000000000000",
        key=MALLORY,
        created=int(time.time()),
    )
    forged = answer(response, body=body, headers={k.lower(): v for k, v in signature.items()})
    # a well-formed signature, only not by the exchange
    mallory = {"exchange-0000000000000000": MALLORY.public_key()}
    verify_response(
        status=forged.status_code, headers=forged.headers, body=body, public_keys=mallory
    )
    return forged


def strip_signature(response: httpx.Response) -> httpx.Response:
    fields = {k: v for k, v in response.headers.items() if not k.startswith("signature")}
    return httpx.Response(
        response.status_code, headers=fields, content=response.content, request=response.request
    )


TAMPERS = {
    "flip-body-byte": flip_body_byte,
    "201-becomes-200": make_201_a_200,
    "resigned-by-another-key": sign_as_mallory,
    "signature-stripped": strip_signature,
}


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_altered_answers_are_refused(
    live_server: LiveServer, sky: Brand, sessions: async_sessionmaker[AsyncSession], flavour: str
) -> None:
    """Whatever a network in between does to an answer (a byte of the body, the status, a
    signature of its own, no signature), the client raises ResponseSignatureInvalid instead of
    returning it; refusals (problems) included. The server did commit the issuance: a clean
    retry with the same Idempotency-Key gets the true answer, and nothing twice."""
    async with sdk_for(flavour, live_server, sky.ed25519) as clean:
        await clean("enrol", "alice")
    for name, tamper in TAMPERS.items():
        wire = Wire(lambda n, q, r, tamper=tamper: tamper(r))
        async with sdk_for(flavour, live_server, sky.ed25519, wire) as sdk:
            key = f"issue-{name}"
            with pytest.raises(ResponseSignatureInvalid):
                await sdk("issue", "alice", 1000, idempotency_key=key)
            with pytest.raises(ResponseSignatureInvalid):
                await sdk("member", "alice")
            with pytest.raises(ResponseSignatureInvalid):  # a 422 problem, altered
                await sdk("redeem", "alice", 10**12)
            with pytest.raises(ResponseSignatureInvalid):  # a 404 problem, altered
                await sdk("member", "nobody")
        # the client did not retry an answer it could not trust: one attempt each
        assert [r.status_code for _, r in wire.exchanges] == [201, 200, 422, 404], name
        async with sdk_for(flavour, live_server, sky.ed25519) as clean:
            replayed = await clean("issue", "alice", 1000, idempotency_key=key)
        [(_, first)] = wire.calls("POST", "/v1/issuances")
        assert msgspec.json.decode(first.content, type=OperationOut) == replayed, name
        assert await ledger(sessions, key) == (1, 2), name
    alice = (await _member(flavour, live_server, sky, "alice")).balance
    assert alice == 1000 * len(TAMPERS)


async def _member(flavour: str, server: LiveServer, brand: Brand, ref: str) -> Any:
    async with sdk_for(flavour, server, brand.hmac) as sdk:
        return await sdk("member", ref)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_lost_answer_is_retried_with_the_same_key(
    live_server: LiveServer, sky: Brand, sessions: async_sessionmaker[AsyncSession], flavour: str
) -> None:
    """The server commits the issuance, then the connection drops before the client reads the
    answer (ReadError). The client asks again with the same Idempotency-Key, freshly signed:
    the exchange replays the first answer byte for byte and posts nothing more."""

    def lose_first_issuance(
        n: int, request: httpx.Request, response: httpx.Response
    ) -> httpx.Response:
        if request.url.path == "/v1/issuances" and len(wire.calls("POST", "/v1/issuances")) == 1:
            raise httpx.ReadError("connection reset by peer", request=request)
        return response

    wire = Wire(lose_first_issuance)
    async with sdk_for(flavour, live_server, sky.hmac, wire) as sdk:
        await sdk("enrol", "alice")
        body = await sdk("issue", "alice", 1000)
        again = await sdk("member", "alice")

    [(first_q, first_r), (retry_q, retry_r)] = wire.calls("POST", "/v1/issuances")
    assert (first_r.status_code, retry_r.status_code) == (201, 201)
    assert "idempotent-replayed" not in first_r.headers
    assert retry_r.headers["idempotent-replayed"] == "true"
    assert retry_q.headers["idempotency-key"] == first_q.headers["idempotency-key"]
    assert retry_q.content == first_q.content
    assert retry_q.headers["signature"] != first_q.headers["signature"]  # a fresh nonce
    assert (
        parse_signatures(retry_q.headers)[0].params["nonce"]
        != (parse_signatures(first_q.headers)[0].params["nonce"])
    )
    assert retry_r.content == first_r.content
    assert body == msgspec.json.decode(first_r.content, type=OperationOut)
    assert balances(body) == {"alice": (1000, 0, 1000)}
    assert again.balance == 1000
    key = json.loads(first_q.headers["idempotency-key"])
    assert await ledger(sessions, key) == (1, 2)
    assert await ledger(sessions) == (1, 2)
    assert_all_signed(live_server, wire, sky.hmac)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_gateway_error_is_retried_and_then_reported(
    live_server: LiveServer, sky: Brand, sessions: async_sessionmaker[AsyncSession], flavour: str
) -> None:
    """A 503 from a gateway in front of the exchange (the request never reached it) is retried
    with the same key; when every attempt fails that way the client gives up without
    trusting the unsigned answer."""

    def down(times: int) -> Callable[[httpx.Request], httpx.Response | None]:
        failures = iter(range(times))

        def gateway(request: httpx.Request) -> httpx.Response | None:
            if request.method == "POST" and next(failures, None) is not None:
                return httpx.Response(503, content=b"upstream busy", request=request)
            return None

        return gateway

    wire = Wire(gateway=down(2))
    async with sdk_for(flavour, live_server, sky.ed25519, wire) as sdk:
        await sdk("enrol", "alice")
    attempts = wire.calls("POST", "/v1/members")
    assert [r.status_code for _, r in attempts] == [503, 503, 201]
    assert len({q.headers["idempotency-key"] for q, _ in attempts}) == 1

    wire = Wire(gateway=down(100))
    async with sdk_for(flavour, live_server, sky.ed25519, wire, retries=2) as sdk:
        with pytest.raises(ResponseSignatureInvalid):
            await sdk("issue", "alice", 5)
    assert len(wire.exchanges) == 3
    assert await ledger(sessions) == (0, 0)


@contextmanager
def advisory_lock(database_url: str, scope: str) -> Iterator[Callable[[], None]]:
    """Hold ``pg_advisory_lock(hashtextextended(scope, 0))`` on a connection of its own (in a
    thread, so that a sync hook can release it); yields ``release()``, which returns once the
    lock is gone."""
    held, release, done = threading.Event(), threading.Event(), threading.Event()
    failure: list[BaseException] = []

    async def hold() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("SELECT pg_advisory_lock(hashtextextended($1, 0))", scope)
            held.set()
            await asyncio.to_thread(release.wait, 30)
            await conn.execute("SELECT pg_advisory_unlock(hashtextextended($1, 0))", scope)
        finally:
            await conn.close()

    def run() -> None:
        try:
            asyncio.run(hold())
        except BaseException as exc:
            failure.append(exc)
        finally:
            held.set()
            done.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    held.wait(10)
    assert not failure, failure

    def release_now() -> None:
        release.set()
        done.wait(10)

    try:
        yield release_now
    finally:
        release_now()
        thread.join(10)
        assert not failure, failure


@pytest.mark.postgres_only
@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_a_409_in_flight_is_retried(
    live_server: LiveServer,
    sky: Brand,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    flavour: str,
) -> None:
    """While another request holds the key (here: its advisory lock, held by the test), the
    exchange answers 409 idempotency-in-flight; the client waits and asks again with the same
    key, and the issuance is posted once. (PostgreSQL only: on SQLite, requests with one key
    queue behind ``BEGIN IMMEDIATE`` instead of getting a 409.)"""
    assert settings.database_url is not None
    key = f"in-flight-{uuid.uuid4()}"
    seen: list[int] = []
    with advisory_lock(settings.database_url, f"idempotency:{sky.partner_id}:{key}") as release:

        def hook(n: int, request: httpx.Request, response: httpx.Response) -> httpx.Response:
            if request.url.path == "/v1/issuances":
                seen.append(response.status_code)
                if response.status_code == 409:
                    release()
            return response

        wire = Wire(hook)
        async with sdk_for(flavour, live_server, sky.ed25519, wire) as sdk:
            await sdk("enrol", "alice")
            body = await sdk("issue", "alice", 700, idempotency_key=key)
    assert seen == [409, 201]
    [(_, refused), _] = wire.calls("POST", "/v1/issuances")
    assert refused.json()["type"] == PROBLEMS + "idempotency-in-flight"
    assert balances(body) == {"alice": (700, 0, 700)}
    assert await ledger(sessions, key) == (1, 2)
    assert_all_signed(live_server, wire, sky.ed25519)


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_refusals_are_problem_errors(
    live_server: LiveServer,
    sky: Brand,
    operator: Key,
    sessions: async_sessionmaker[AsyncSession],
    flavour: str,
) -> None:
    """A refusal raises ProblemError with the status and the RFC 9457 body, type included; it is
    asked once (only a 409 in flight is worth asking again) and posts nothing."""
    wire = Wire()
    async with sdk_for(flavour, live_server, sky.hmac, wire) as sdk:
        await sdk("enrol", "alice")
        await sdk("issue", "alice", 10)
        hold = await sdk("hold", "alice", 4)
        await sdk("void", hold.hold.id)
        before = await ledger(sessions)

        async def refused(operation: str, *args: Any, **kw: Any) -> ProblemError:
            with pytest.raises(ProblemError) as caught:
                await sdk(operation, *args, **kw)
            return caught.value

        short = await refused("redeem", "alice", 11)
        assert (short.status, short.type) == (422, PROBLEMS + "insufficient-points")
        assert (short.problem["available"], short.problem["requested"]) == (10, 11)
        missing = await refused("member", "nobody")
        assert (missing.status, missing.type) == (404, PROBLEMS + "member-not-found")
        again = await refused("void", hold.hold.id)
        assert (again.status, again.type) == (409, PROBLEMS + "hold-not-active")
        zero = await refused("issue", "alice", 0)
        assert (zero.status, zero.type) == (422, PROBLEMS + "invalid-amount")
        await sdk("redeem", "alice", 1, idempotency_key=ODD_KEY)
        conflict = await refused("redeem", "alice", 2, idempotency_key=ODD_KEY)
        assert (conflict.status, conflict.type) == (422, PROBLEMS + "idempotency-conflict")
    async with sdk_for(flavour, live_server, operator) as as_operator:
        with pytest.raises(ProblemError) as caught:
            await as_operator("enrol", "alice")
    assert (caught.value.status, caught.value.type) == (403, PROBLEMS + "not-a-brand")
    assert await ledger(sessions) == (before[0] + 1, before[1] + 2)  # the one redeem of 1
    voids = wire.calls("POST", f"/v1/holds/{hold.hold.id}/void")
    assert [r.status_code for _, r in voids] == [200, 409]  # the 409 was not retried
    assert_all_signed(live_server, wire, sky.hmac)


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_the_sdk_lists_dead_letters_and_replays_one(
    flavour: str,
    live_server: LiveServer,
    sky: Brand,
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A brand reads its webhook deliveries and replays a dead one through the SDK."""
    partner_id = uuid.UUID(sky.partner_id)
    async with sessions() as session, session.begin():
        event = await enqueue_event(session, partner_id, "conversion.credited", {"points": 1})
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id == event)
            .values(attempts=15, dead_at=utcnow(), last_error="HTTP 500")
        )
    async with sdk_for(flavour, live_server, sky.ed25519) as sdk:
        [dead] = await sdk("deliveries", "dead")
        assert (dead.event_id, dead.state, dead.last_error) == (event, "dead", "HTTP 500")
        replayed = await sdk("replay_delivery", event)
        assert (replayed.event_id, replayed.state, replayed.attempts) == (event, "pending", 0)
        assert await sdk("deliveries", "dead") == []


@pytest.mark.parametrize("flavour", FLAVOURS)
async def test_the_sdk_sets_earn_rules_buys_returns_and_batches_purchases(
    live_server: LiveServer, sky: Brand, flavour: str
) -> None:
    """1 point per euro, shoes 1.5x: a 49.99 EUR pair of shoes earns floor(74.985) = 74 and a
    10.00 EUR sock 10; returning the sock takes its 10 back. The answers are the contract's
    Structs, typed."""
    shoes = OrderLine("RUN-1", "apparel", "shoes", 4_999)
    sock = OrderLine("SOCK", "apparel", "socks", 1_000)
    async with sdk_for(flavour, live_server, sky.ed25519) as sdk:
        rules = EarnRulesCreate(
            rates=[EarnRate("EUR", 1, 100)], category_multipliers_bps={"shoes": 15_000}
        )
        version = await sdk("set_earn_rules", rules)
        assert (await sdk("earn_rules")).current == version
        await sdk("enrol", "alice")
        quote = await sdk("quote_purchase", "EUR", [shoes, sock])
        assert [line.points for line in quote.lines] == [74, 10]
        bought = await sdk("purchase", "o-1", "alice", "EUR", [shoes, sock])
        assert (bought.purchase.points, bought.transaction.kind) == (84, "earn")
        assert receipt_verifies(live_server, bought)
        back = await sdk("return_purchase", bought.purchase.id, [ReturnLine(2, 1)])
        assert (back.returned.points, back.balances[0].balance) == (10, 74)
        assert (await sdk("read_purchase", bought.purchase.id)).returned_points == 10
        batch = await sdk("batch", [BatchPurchase("item-1", "o-2", "alice", "EUR", [shoes])])
        assert (batch.posted, batch.results[0].transaction.points) == (1, 74)
        with pytest.raises(ProblemError) as refused:
            await sdk("purchase", "o-1", "alice", "EUR", [shoes])
        assert refused.value.status == 409
