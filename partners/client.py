"""The partner SDK: httpx clients that sign every request (RFC 9421) and verify every answer.

``ExchangeClient`` (sync) and ``AsyncExchangeClient`` (async) have the same operations, each
answering with the contract's Struct (``exchange.contract.schemas``): ``issue`` an
``OperationOut``, ``convert`` a ``ConversionOut``... A POST gets an ``Idempotency-Key`` (yours,
or a fresh one) that every retry reuses, so a retry after a network error, a 5xx or a 409 (the
same key still in flight) can never post twice. Each attempt is signed anew, with a fresh nonce
and ``created``. Answers are checked against the exchange's public keys from ``GET /v1/keys``
(fetched once, and again when an unknown key id appears after a rotation), and must be bound to
the request just sent and at most :data:`ANSWER_MAX_AGE_SECONDS` old, or the call raises
:class:`ResponseSignatureInvalid`.

    client = ExchangeClient("https://exchange.example", key_id="...", alg="ed25519", key=private)
    client.enrol("alice")
    client.issue("alice", 1_000).balances[0].available

How it is built, so that nothing is written twice:

- an operation is planned once, as a :class:`Call`: method, path, the request body (the
  contract's request Struct), the idempotency key and how to read the answer;
- one conversation (:meth:`_Session.converse`, a generator that does no I/O) turns a call into
  signed attempts, waits between retries, verification and, on an unknown key id, a fetch of
  the keys. It yields what must be done (an ``httpx.Request`` to send, seconds to wait) and is
  given the outcome (the response, or the network error thrown into it);
- each client only drives it: ``ExchangeClient`` with ``httpx.Client`` and ``time.sleep``,
  ``AsyncExchangeClient`` with ``httpx.AsyncClient`` and ``asyncio.sleep``;
- the operations are :class:`Operation` descriptors over the plans, on a base both clients
  share: ``client.issue`` is typed ``(...) -> OperationOut`` on the sync client and
  ``(...) -> Awaitable[OperationOut]`` on the async one.

Whole in one module (about 800 lines), because the plans, the conversation and the two
drivers are the SDK's one public surface (``partners.client``, the name partners import): most
of the length is one short plan per API call, each with its docstring, read as a list.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Generic, ParamSpec, TypeVar, overload
from urllib.parse import quote

import http_sf
import httpx
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.contract.batches import BatchCreate, BatchOperation, BatchOut
from exchange.contract.purchases import (
    EarnQuoteOut,
    EarnRulesCreate,
    EarnRulesOut,
    EarnRulesPage,
    OrderLine,
    PurchaseCreate,
    PurchaseOut,
    PurchaseQuoteCreate,
    PurchaseView,
    ReturnCreate,
    ReturnLine,
    ReturnOut,
)
from exchange.contract.schemas import (
    CharityOut,
    ConversionCreate,
    ConversionOut,
    DonationCreate,
    DonationOut,
    HistoryPage,
    HoldCapture,
    HoldCreate,
    HoldOperationOut,
    HoldOut,
    IssuanceCreate,
    MemberBalanceOut,
    MemberCreate,
    MemberOut,
    OperationOut,
    PartnerOut,
    PricingOut,
    PublicKey,
    QuoteCreate,
    QuoteOut,
    RedemptionCreate,
    ReversalCreate,
    TransactionReceiptOut,
    TransferCreate,
)
from exchange.contract.settlement import WebhookDeliveryOut, WebhookOut
from exchange.contract.types import MemberRef, Points, Reference
from partners.httpsig import RequestBinding, SignatureInvalid, sign_request, verify_response
from partners.sdk_keys import KeyMaterial, signing_key
from partners.sdk_keys import KeyMaterialError as KeyMaterialError

T = TypeVar("T")
P = ParamSpec("P")

RETRY_STATUSES = frozenset({409, 500, 502, 503, 504})
#: The one 409 worth retrying: the first request with the key is still running. Any other 409
#: (``hold-not-active``...) is the answer, and asking again only delays it.
IN_FLIGHT_PROBLEM = "/idempotency-in-flight"
#: The oldest answer the client accepts: its signature's ``created`` at most this many seconds
#: before the client's clock (and at most ``ANSWER_MAX_FUTURE_SECONDS`` after it). An answer
#: must also be bound to the request just sent (see :meth:`_Signer.check`).
ANSWER_MAX_AGE_SECONDS = 60
ANSWER_MAX_FUTURE_SECONDS = 30

JsonObject = dict[str, object]
"""An answer the contract has no Struct for here (settlement statements), as decoded JSON."""
QueryParams = Mapping[str, str | int | None]
"""Query parameters; those that are ``None`` are left out."""

Conversation = Generator[httpx.Request | float, httpx.Response | None, T]
"""A call in progress: it yields a request to send (and is given its response, or has the
network error thrown into it) or seconds to wait (and is given ``None``); it returns the answer."""


class ResponseSignatureInvalid(Exception):
    """The answer did not carry a valid signature of the exchange: do not trust it."""


class ProblemError(Exception):
    """The exchange refused the request; ``problem`` is its RFC 9457 body."""

    def __init__(self, status: int, problem: JsonObject) -> None:
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


# --------------------------------------------------------------------------- reading answers

_problem_decoder = msgspec.json.Decoder(JsonObject)


def _problem(response: httpx.Response) -> ProblemError:
    try:
        problem = _problem_decoder.decode(response.content)
    except msgspec.DecodeError:  # not JSON, or JSON but not an object
        problem = {"title": response.text}
    return ProblemError(response.status_code, problem)


def _answer(kind: type[T]) -> Callable[[httpx.Response], T]:
    """Read a verified answer: a 2xx decoded into ``kind``, anything else a ProblemError."""
    decoder = msgspec.json.Decoder(kind)

    def read(response: httpx.Response) -> T:
        if not response.is_success:
            raise _problem(response)
        return decoder.decode(response.content)

    return read


def _raw(response: httpx.Response) -> httpx.Response:
    return response


_PARTNER = _answer(PartnerOut)
_MEMBER = _answer(MemberOut)
_BALANCE = _answer(MemberBalanceOut)
_HISTORY = _answer(HistoryPage)
_OPERATION = _answer(OperationOut)
_HOLD_OPERATION = _answer(HoldOperationOut)
_TRANSACTION = _answer(TransactionReceiptOut)
_PRICING = _answer(PricingOut)
_CHARITIES = _answer(list[CharityOut])
_QUOTE = _answer(QuoteOut)
_CONVERSION = _answer(ConversionOut)
_DONATION = _answer(DonationOut)
_BATCH = _answer(BatchOut)
_EARN_RULES = _answer(EarnRulesOut)
_EARN_RULES_PAGE = _answer(EarnRulesPage)
_PURCHASE = _answer(PurchaseOut)
_EARN_QUOTE = _answer(EarnQuoteOut)
_RETURN = _answer(ReturnOut)
_PURCHASE_VIEW = _answer(PurchaseView)
_STATEMENTS = _answer(list[JsonObject])
_STATEMENT = _answer(JsonObject)
_KEYS = msgspec.json.Decoder(list[PublicKey])
_HOLD = _answer(HoldOut)
_WEBHOOK = _answer(WebhookOut)
_DELIVERIES = _answer(list[WebhookDeliveryOut])
_DELIVERY = _answer(WebhookDeliveryOut)


def _text(response: httpx.Response) -> str:
    if not response.is_success:
        raise _problem(response)
    return response.text


_TEXT = _text


# --------------------------------------------------------------------------- planning calls


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One call of the contract, planned: what to send and how to read the verified answer."""

    method: str
    path: str
    read: Callable[[httpx.Response], T]
    body: object = None
    """Encoded with msgspec: a request Struct of the contract, or plain JSON values."""
    params: QueryParams | None = None
    idempotency_key: str | None = None
    """A POST without one gets a fresh key, the same for all its attempts."""


def _segment(value: object) -> str:
    return quote(str(value), safe="")


def _get(
    path: str, read: Callable[[httpx.Response], T], params: QueryParams | None = None
) -> Call[T]:
    return Call("GET", path, read, params=params)


def _post(path: str, body: object, read: Callable[[httpx.Response], T], key: str | None) -> Call[T]:
    return Call("POST", path, read, body=body, idempotency_key=key)


def _request(
    method: str,
    path: str,
    *,
    json: object = None,
    params: QueryParams | None = None,
    idempotency_key: str | None = None,
) -> Call[httpx.Response]:
    """Send a signed request, retrying with the same idempotency key; verify the answer and
    return it as it is (a refusal included), for the calls without an operation here."""
    return Call(method, path, _raw, body=json, params=params, idempotency_key=idempotency_key)


def _me() -> Call[PartnerOut]:
    """The calling partner."""
    return _get("/v1/partners/me", _PARTNER)


def _enrol(member_ref: MemberRef, *, idempotency_key: str | None = None) -> Call[MemberOut]:
    """Enrol a member of the calling brand (again: the same member)."""
    return _post("/v1/members", MemberCreate(member_ref), _MEMBER, idempotency_key)


def _member(member_ref: MemberRef) -> Call[MemberBalanceOut]:
    """The member's balance, held and available points, and the signed head of its account."""
    return _get(f"/v1/members/{_segment(member_ref)}", _BALANCE)


def _history(
    member_ref: MemberRef, limit: int | None = None, cursor: str | None = None
) -> Call[HistoryPage]:
    """The member's transactions, newest first; pass ``next_cursor`` on for older ones."""
    path = f"/v1/members/{_segment(member_ref)}/transactions"
    return _get(path, _HISTORY, {"limit": limit, "cursor": cursor})


def _issue(
    member_ref: MemberRef,
    points: Points,
    reference: Reference | None = None,
    *,
    idempotency_key: str | None = None,
) -> Call[OperationOut]:
    """Earn: credit the member ``points``."""
    body = IssuanceCreate(member_ref, points, reference)
    return _post("/v1/issuances", body, _OPERATION, idempotency_key)


def _redeem(
    member_ref: MemberRef,
    points: Points,
    reference: Reference | None = None,
    *,
    idempotency_key: str | None = None,
) -> Call[OperationOut]:
    """Burn: debit the member ``points``."""
    body = RedemptionCreate(member_ref, points, reference)
    return _post("/v1/redemptions", body, _OPERATION, idempotency_key)


def _transfer(
    from_member_ref: MemberRef,
    to_member_ref: MemberRef,
    points: Points,
    reference: Reference | None = None,
    *,
    idempotency_key: str | None = None,
) -> Call[OperationOut]:
    """Move points between two members of the calling brand."""
    body = TransferCreate(from_member_ref, to_member_ref, points, reference)
    return _post("/v1/transfers", body, _OPERATION, idempotency_key)


def _hold(
    member_ref: MemberRef,
    points: Points,
    expires_in: int | None = None,
    reference: Reference | None = None,
    *,
    idempotency_key: str | None = None,
) -> Call[HoldOperationOut]:
    """Hold points for a later capture or void (two-phase redemption)."""
    body = HoldCreate(member_ref, points, expires_in, reference)
    return _post("/v1/holds", body, _HOLD_OPERATION, idempotency_key)


def _capture(
    hold_id: uuid.UUID | str, points: Points | None = None, *, idempotency_key: str | None = None
) -> Call[HoldOperationOut]:
    """Redeem ``points`` of a hold (all of them if ``None``) and release the rest."""
    path = f"/v1/holds/{_segment(hold_id)}/capture"
    return _post(path, HoldCapture(points), _HOLD_OPERATION, idempotency_key)


def _void(
    hold_id: uuid.UUID | str, *, idempotency_key: str | None = None
) -> Call[HoldOperationOut]:
    """Release a hold's points."""
    return _post(f"/v1/holds/{_segment(hold_id)}/void", {}, _HOLD_OPERATION, idempotency_key)


def _reverse(
    transaction_id: uuid.UUID | str,
    points: Points | None = None,
    *,
    idempotency_key: str | None = None,
) -> Call[OperationOut]:
    """Reverse ``points`` of a transaction (all that remain if ``None``)."""
    path = f"/v1/transactions/{_segment(transaction_id)}/reversal"
    return _post(path, ReversalCreate(points), _OPERATION, idempotency_key)


def _transaction(transaction_id: uuid.UUID | str) -> Call[TransactionReceiptOut]:
    """A transaction, its postings on the caller's accounts, and its signed receipt."""
    return _get(f"/v1/transactions/{_segment(transaction_id)}", _TRANSACTION)


def _rates() -> Call[PricingOut]:
    """The point values and conversion rates in force."""
    return _get("/v1/rates", _PRICING)


def _charities() -> Call[list[CharityOut]]:
    """The charities a member may donate to."""
    return _get("/v1/charities", _CHARITIES)


def _quote(
    member_ref: MemberRef,
    to_partner: str,
    to_member_ref: MemberRef,
    points: Points,
    *,
    idempotency_key: str | None = None,
) -> Call[QuoteOut]:
    """Lock a rate for a conversion, for a short time."""
    body = QuoteCreate(member_ref, to_partner, to_member_ref, points)
    return _post("/v1/quotes", body, _QUOTE, idempotency_key)


def _convert(
    member_ref: MemberRef | None,
    to_partner: str | None,
    to_member_ref: MemberRef | None,
    points: Points | None,
    quote_id: uuid.UUID | str | None = None,
    reference: Reference | None = None,
    *,
    idempotency_key: str | None = None,
) -> Call[ConversionOut]:
    """Convert a member's points into another brand's (``to_partner``: its currency code or
    partner id), at the rate in force or at a quote's."""
    quote = uuid.UUID(quote_id) if isinstance(quote_id, str) else quote_id
    body = ConversionCreate(member_ref, to_partner, to_member_ref, points, quote, reference)
    return _post("/v1/conversions", body, _CONVERSION, idempotency_key)


def _donate(
    member_ref: MemberRef,
    charity: uuid.UUID | str,
    points: Points,
    reference: Reference | None = None,
    *,
    idempotency_key: str | None = None,
) -> Call[DonationOut]:
    """Donate a member's points to a charity, named by its code (``"AID"``) or partner id; the
    answer carries the transaction, its ``receipt`` and the member's ``donation_receipt``.

    ``sky.donate("alice", "AID", 500).donation_receipt.amount_micros``"""
    body = DonationCreate(member_ref, str(charity), points, reference)
    return _post("/v1/donations", body, _DONATION, idempotency_key)


def _batch(
    operations: list[BatchOperation],
    *,
    idempotency_key: str | None = None,
) -> Call[BatchOut]:
    """Up to 1000 issuances, redemptions, transfers and purchases in one request, each with its
    key (``BatchIssue``, ``BatchRedemption``, ``BatchTransfer``, ``BatchPurchase``)."""
    return _post("/v1/batches", BatchCreate(operations), _BATCH, idempotency_key)


def _set_earn_rules(
    rules: EarnRulesCreate, *, idempotency_key: str | None = None
) -> Call[EarnRulesOut]:
    """A new version of the caller's earn rules (from ``rules.effective_at``, default now).

    ``sky.set_earn_rules(EarnRulesCreate(rates=[EarnRate("EUR", 1, 100)])).id``"""
    return _post("/v1/earn-rules", rules, _EARN_RULES, idempotency_key)


def _earn_rules(at: dt.datetime | None = None) -> Call[EarnRulesPage]:
    """The caller's earn rules in force (at ``at``, default now) and every version.

    ``sky.earn_rules().current.order_cap``"""
    params = None if at is None else {"at": at.isoformat()}
    return _get("/v1/earn-rules", _EARN_RULES_PAGE, params=params)


def _purchase(
    order_id: str,
    member_ref: MemberRef,
    currency: str,
    lines: list[OrderLine],
    *,
    idempotency_key: str | None = None,
) -> Call[PurchaseOut]:
    """An order of a member, in ``currency`` (ISO 4217, amounts in minor units): the points it
    earns under the rules in force, issued as one ``earn`` transaction.

    ``sky.purchase("o-1", "alice", "EUR", [OrderLine("s1", "shoe", "shoes", 4_999)]).purchase``"""
    body = PurchaseCreate(order_id, member_ref, currency, lines)
    return _post("/v1/purchases", body, _PURCHASE, idempotency_key)


def _quote_purchase(
    currency: str, lines: list[OrderLine], *, idempotency_key: str | None = None
) -> Call[EarnQuoteOut]:
    """What an order would earn now, per line; nothing is posted.

    ``sky.quote_purchase("EUR", [OrderLine("s1", "shoe", "shoes", 4_999)]).points``"""
    return _post(
        "/v1/purchases/quote", PurchaseQuoteCreate(currency, lines), _EARN_QUOTE, idempotency_key
    )


def _return_purchase(
    purchase_id: uuid.UUID | str, lines: list[ReturnLine], *, idempotency_key: str | None = None
) -> Call[ReturnOut]:
    """Units of a purchase's lines given back (``ReturnLine(line, quantity)``, lines from 1):
    their points are taken back from the member.

    ``sky.return_purchase(bought.purchase.id, [ReturnLine(1, 1)]).returned.points``"""
    path = f"/v1/purchases/{_segment(purchase_id)}/returns"
    return _post(path, ReturnCreate(lines), _RETURN, idempotency_key)


def _read_purchase(purchase_id: uuid.UUID | str) -> Call[PurchaseView]:
    """A purchase of the caller's: the order, each line's points and returns.

    ``sky.read_purchase(bought.purchase.id).returned_points``"""
    return _get(f"/v1/purchases/{_segment(purchase_id)}", _PURCHASE_VIEW)


def _read_hold(hold_id: uuid.UUID | str) -> Call[HoldOut]:
    """A hold of the caller's: its points, what was captured, its status and expiry.

    ``client.read_hold(hold.hold.id).status == "active"``"""
    return _get(f"/v1/holds/{_segment(hold_id)}", _HOLD)


def _set_webhook(url: str | None) -> Call[WebhookOut]:
    """Where the exchange POSTs the caller's events (``settlement.ready``,
    ``conversion.credited``), signed by the exchange; ``None`` removes it.

    ``client.set_webhook("https://sky.example/exchange-events")``"""
    return Call("PUT", "/v1/partners/me/webhook", _WEBHOOK, body={"url": url})


def _deliveries(
    state: str | None = None, limit: int | None = None
) -> Call[list[WebhookDeliveryOut]]:
    """The caller's webhook events and how each delivery stands (``pending``, ``delivered`` or
    ``dead``, with the last error), newest first; ``state`` keeps one kind.

    ``[d.event_id for d in client.deliveries("dead")]``"""
    return _get(
        "/v1/partners/me/webhook/deliveries", _DELIVERIES, params={"state": state, "limit": limit}
    )


def _replay_delivery(
    event_id: uuid.UUID | str, *, idempotency_key: str | None = None
) -> Call[WebhookDeliveryOut]:
    """Send a dead-lettered event again (once the receiver is fixed): it is ``pending`` anew.

    ``client.replay_delivery(dead.event_id).state == "pending"``"""
    path = f"/v1/partners/me/webhook/deliveries/{_segment(event_id)}/replay"
    return _post(path, None, _DELIVERY, idempotency_key)


def _settlement_csv(business_date: dt.date | str) -> Call[str]:
    """The caller's statement for a business day as CSV, for finance teams: its last line is
    ``#signature,<key_id>,ed25519,<base64>``, the exchange's signature over every byte before
    that line. :func:`partners.verify.verify_csv_statement` checks it.

    ``client.settlement_csv("2026-11-21").splitlines()[-1].startswith("#signature,")``"""
    day = business_date.isoformat() if isinstance(business_date, dt.date) else business_date
    return _get(f"/v1/settlements/{_segment(day)}.csv", _TEXT)


def _settlements() -> Call[list[JsonObject]]:
    """The caller's settlement statements, newest first (as JSON)."""
    return _get("/v1/settlements", _STATEMENTS)


def _settlement(business_date: dt.date | str) -> Call[JsonObject]:
    """The caller's signed statement for a business day (as JSON)."""
    day = business_date.isoformat() if isinstance(business_date, dt.date) else business_date
    return _get(f"/v1/settlements/{_segment(day)}", _STATEMENT)


# --------------------------------------------------------------------------- the conversation


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
        added = sign_request(
            method=request.method,
            path=path,
            query=query,
            authority=request.url.netloc.decode("ascii"),
            headers=dict(request.headers),
            body=request.content,
            key_id=self.key_id,
            alg=self.alg,
            key=self.key,
            created=int(time.time()),
            nonce=secrets.token_urlsafe(16),
        )
        request.headers.update(added)

    def check(self, response: httpx.Response) -> str | None:
        """Verify the exchange's signature; ``None`` if the key id is unknown (fetch keys again).

        The signature must be recent (:data:`ANSWER_MAX_AGE_SECONDS`) and cover the request
        this client sent (its method, path, query and ``Signature``), so that an answer to
        another request, or an old one, replayed by anything on the way, is refused."""
        if not self.verify_responses:
            return "unverified"
        sent = response.request
        try:
            return verify_response(
                status=response.status_code,
                headers=dict(response.headers),
                body=response.content,
                public_keys=self.exchange_keys,
                max_age=ANSWER_MAX_AGE_SECONDS,
                max_future=ANSWER_MAX_FUTURE_SECONDS,
                request=RequestBinding.sent(
                    sent.method,
                    sent.url.raw_path.decode("ascii"),
                    sent.headers.get("signature"),
                ),
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
        for entry in _KEYS.decode(response.content):
            public = serialization.load_pem_public_key(entry.public_key.encode())
            if isinstance(public, Ed25519PublicKey):
                keys[entry.key_id] = public
        self.exchange_keys = keys


def _retryable(response: httpx.Response) -> bool:
    """A 5xx of the list, or a 409 because the same key is still in flight."""
    if response.status_code != 409:
        return response.status_code in RETRY_STATUSES
    kind = _problem(response).problem.get("type")
    return isinstance(kind, str) and kind.endswith(IN_FLIGHT_PROBLEM)


def _backoff(attempt: int, base: float) -> float:
    return base * 2.0**attempt * (0.5 + random.random())


def _sent(request: httpx.Request) -> Conversation[httpx.Response]:
    response = yield request
    if response is None:
        raise TypeError("a request must be answered with its response")
    return response


class _Session:
    """What a client knows (its key, the exchange's keys, its retry policy) and the one
    conversation that carries a call out; the client's I/O only answers what it yields."""

    def __init__(
        self,
        http: httpx.Client | httpx.AsyncClient,
        signer: _Signer,
        retries: int,
        backoff: float,
    ) -> None:
        self.http = http
        self.signer = signer
        self.retries = retries
        self.backoff = backoff

    def converse(self, call: Call[T]) -> Conversation[T]:
        """Send ``call`` signed, retrying with the same idempotency key; verify the answer."""
        key = call.idempotency_key
        if key is None and call.method == "POST":
            key = new_idempotency_key()
        attempt = 0
        while True:
            request = self._build(call, key)
            self.signer.sign(request)
            try:
                response = yield from _sent(request)
            except httpx.TransportError:
                if attempt >= self.retries:
                    raise
            else:
                if not _retryable(response) or attempt >= self.retries:
                    yield from self._verify(response)
                    return call.read(response)
            yield _backoff(attempt, self.backoff)
            attempt += 1

    def refresh_keys(self) -> Conversation[None]:
        response = yield from _sent(self.http.build_request("GET", "/v1/keys"))
        self.signer.load_keys(response)

    def _verify(self, response: httpx.Response) -> Conversation[None]:
        if self.signer.check(response) is None:
            yield from self.refresh_keys()
            if self.signer.check(response) is None:
                raise ResponseSignatureInvalid("the answer is not signed by a published key")

    def _build(self, call: Call[T], key: str | None) -> httpx.Request:
        headers = {"accept": "application/json"}
        content = None
        if call.body is not None:
            # msgspec: the same compact JSON as json.dumps (UTF-8 rather than \u escapes),
            # several times faster on a batch's thousand operations.
            content = msgspec.json.encode(call.body)
            headers["content-type"] = "application/json"
        if key is not None:
            # A Structured Field string, escaped: a key holding '"' or '\\' stays one string.
            headers["idempotency-key"] = http_sf.ser(key)
        params = {k: v for k, v in (call.params or {}).items() if v is not None}
        return self.http.build_request(
            call.method, call.path, content=content, params=params or None, headers=headers
        )


# --------------------------------------------------------------------------- the operations


class Operation(Generic[P, T]):
    """A call of the contract, on both clients: on an ``ExchangeClient`` it is a method that
    returns the answer, on an ``AsyncExchangeClient`` one that returns an awaitable of it."""

    def __init__(self, plan: Callable[P, Call[T]]) -> None:
        self.plan = plan
        self.__doc__ = plan.__doc__

    @overload
    def __get__(self, client: None, owner: type[object]) -> Operation[P, T]: ...

    @overload
    def __get__(self, client: ExchangeClient, owner: type[object]) -> Callable[P, T]: ...

    @overload
    def __get__(
        self, client: AsyncExchangeClient, owner: type[object]
    ) -> Callable[P, Awaitable[T]]: ...

    def __get__(
        self, client: ExchangeClient | AsyncExchangeClient | None, owner: type[object]
    ) -> Operation[P, T] | Callable[P, T] | Callable[P, Awaitable[T]]:
        if client is None:
            return self
        plan = self.plan
        if isinstance(client, AsyncExchangeClient):
            run_async = client._run

            def started(*args: P.args, **kwargs: P.kwargs) -> Awaitable[T]:
                return run_async(plan(*args, **kwargs))

            return started
        run = client._run

        def answered(*args: P.args, **kwargs: P.kwargs) -> T:
            return run(plan(*args, **kwargs))

        return answered


class _Operations:
    """The contract's calls, each planned once above and run by either client."""

    request = Operation(_request)
    me = Operation(_me)
    enrol = Operation(_enrol)
    member = Operation(_member)
    history = Operation(_history)
    issue = Operation(_issue)
    redeem = Operation(_redeem)
    transfer = Operation(_transfer)
    hold = Operation(_hold)
    capture = Operation(_capture)
    void = Operation(_void)
    reverse = Operation(_reverse)
    transaction = Operation(_transaction)
    rates = Operation(_rates)
    charities = Operation(_charities)
    quote = Operation(_quote)
    convert = Operation(_convert)
    donate = Operation(_donate)
    batch = Operation(_batch)
    set_earn_rules = Operation(_set_earn_rules)
    earn_rules = Operation(_earn_rules)
    purchase = Operation(_purchase)
    quote_purchase = Operation(_quote_purchase)
    return_purchase = Operation(_return_purchase)
    read_purchase = Operation(_read_purchase)
    settlements = Operation(_settlements)
    settlement = Operation(_settlement)
    settlement_csv = Operation(_settlement_csv)
    read_hold = Operation(_read_hold)
    set_webhook = Operation(_set_webhook)
    deliveries = Operation(_deliveries)
    replay_delivery = Operation(_replay_delivery)


_LIMITS = httpx.Limits(keepalive_expiry=4.0)
"""Idle connections are dropped after 4 s, before a server that closes them at 5 s (uvicorn's
default, the exchange's): with equal timeouts a request can be sent on a connection the server
is closing at that moment, and fail with a read error though the server never saw it."""


def _signer(key_id: str, alg: str, key: KeyMaterial, verify: bool) -> _Signer:
    """The signer for ``alg``; a key that does not fit it is a :class:`KeyMaterialError`
    (``partners.sdk_keys``: an Ed25519 key as an object or its PEM, str or bytes)."""
    return _Signer(key_id, alg, signing_key(alg, key), verify)


class ExchangeClient(_Operations):
    """A synchronous, signing, verifying, retrying client for one partner key."""

    def __init__(
        self,
        base_url: str,
        *,
        key_id: str,
        alg: str,
        key: KeyMaterial,
        transport: httpx.BaseTransport | None = None,
        verify_responses: bool = True,
        retries: int = 4,
        backoff: float = 0.05,
        timeout: float = 10.0,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, transport=transport, timeout=timeout, limits=_LIMITS
        )
        signer = _signer(key_id, alg, key, verify_responses)
        self._session = _Session(self._http, signer, retries, backoff)

    def __enter__(self) -> ExchangeClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def refresh_keys(self) -> None:
        """Fetch the exchange's public keys now (else: with the first answer)."""
        self._drive(self._session.refresh_keys())

    def _run(self, call: Call[T]) -> T:
        return self._drive(self._session.converse(call))

    def _drive(self, conversation: Conversation[T]) -> T:
        response: httpx.Response | None = None
        failure: httpx.TransportError | None = None
        while True:
            try:
                step = conversation.throw(failure) if failure else conversation.send(response)
            except StopIteration as done:
                answer: T = done.value
                return answer
            response, failure = None, None
            if isinstance(step, httpx.Request):
                try:
                    response = self._http.send(step)
                except httpx.TransportError as exc:
                    failure = exc
            else:
                time.sleep(step)


class AsyncExchangeClient(_Operations):
    """The asynchronous :class:`ExchangeClient`: the same operations, awaited."""

    def __init__(
        self,
        base_url: str,
        *,
        key_id: str,
        alg: str,
        key: KeyMaterial,
        transport: httpx.AsyncBaseTransport | None = None,
        verify_responses: bool = True,
        retries: int = 4,
        backoff: float = 0.05,
        timeout: float = 10.0,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, transport=transport, timeout=timeout, limits=_LIMITS
        )
        signer = _signer(key_id, alg, key, verify_responses)
        self._session = _Session(self._http, signer, retries, backoff)

    async def __aenter__(self) -> AsyncExchangeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def refresh_keys(self) -> None:
        """Fetch the exchange's public keys now (else: with the first answer)."""
        await self._drive(self._session.refresh_keys())

    async def _run(self, call: Call[T]) -> T:
        return await self._drive(self._session.converse(call))

    async def _drive(self, conversation: Conversation[T]) -> T:
        response: httpx.Response | None = None
        failure: httpx.TransportError | None = None
        while True:
            try:
                step = conversation.throw(failure) if failure else conversation.send(response)
            except StopIteration as done:
                answer: T = done.value
                return answer
            response, failure = None, None
            if isinstance(step, httpx.Request):
                try:
                    response = await self._http.send(step)
                except httpx.TransportError as exc:
                    failure = exc
            else:
                await asyncio.sleep(step)
