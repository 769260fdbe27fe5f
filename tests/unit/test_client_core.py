"""The SDK's one conversation (``partners.client._Session.converse``), driven by hand: no server,
no event loop, no sleeping. What it yields is what either client would do; what it is given is
what the network would answer."""

from __future__ import annotations

import time

import httpx
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.contract.schemas import MemberOut
from partners.client import (
    Call,
    ExchangeClient,
    ProblemError,
    ResponseSignatureInvalid,
    _Operations,
)
from partners.httpsig import RequestBinding, parse_signatures, sign_response

EXCHANGE = Ed25519PrivateKey.generate()
KEY_ID = "exchange-test"


def signed(status: int, body: object, answering: httpx.Request) -> httpx.Response:
    """The exchange's answer to ``answering``, signed and bound to it."""
    content = msgspec.json.encode(body)
    binding = RequestBinding.sent(
        answering.method, answering.url.raw_path.decode(), answering.headers.get("signature")
    )
    headers = sign_response(
        status=status, headers={}, body=content, key_id=KEY_ID, key=EXCHANGE,
        created=int(time.time()), request=binding,
    )  # fmt: skip
    return httpx.Response(status, headers=headers, content=content, request=answering)


@pytest.fixture
def client() -> ExchangeClient:
    partner = Ed25519PrivateKey.generate()
    client = ExchangeClient("http://exchange.test", key_id="k1", alg="ed25519", key=partner)
    client._session.signer.exchange_keys = {KEY_ID: EXCHANGE.public_key()}
    return client


def test_one_key_for_every_attempt_each_signed_afresh(client: ExchangeClient) -> None:
    """A network error, then a 503: the call waits and asks again with the same Idempotency-Key
    and body, a fresh signature each time, and decodes the third answer into its Struct."""
    conversation = client._session.converse(_Operations.enrol.plan("alice"))
    first = next(conversation)
    assert isinstance(first, httpx.Request)
    wait = conversation.throw(httpx.ConnectError("refused", request=first))
    assert isinstance(wait, float)
    second = conversation.send(None)
    assert isinstance(second, httpx.Request)
    wait = conversation.send(httpx.Response(503, content=b"busy"))
    assert isinstance(wait, float)
    third = conversation.send(None)
    assert isinstance(third, httpx.Request)
    with pytest.raises(StopIteration) as done:
        conversation.send(signed(201, {"member_ref": "alice", "currency": "SKY"}, third))
    assert done.value.value == MemberOut("alice", "SKY")
    attempts = [first, second, third]
    assert len({q.headers["idempotency-key"] for q in attempts}) == 1
    assert {q.content for q in attempts} == {b'{"member_ref":"alice"}'}
    nonces = {parse_signatures(q.headers)[0].params["nonce"] for q in attempts}
    assert len(nonces) == 3


def test_optional_fields_left_out_of_the_body(client: ExchangeClient) -> None:
    """A request Struct is sent without its unset optional fields, as before the Structs."""
    plan = _Operations.issue.plan("alice", 10)
    assert msgspec.json.encode(plan.body) == b'{"member_ref":"alice","points":10}'
    capture = _Operations.capture.plan("6f1c0b7e-0000-4000-8000-000000000000")
    assert msgspec.json.encode(capture.body) == b"{}"


def test_a_refusal_is_a_problem_error_once_verified(client: ExchangeClient) -> None:
    conversation = client._session.converse(_Operations.member.plan("nobody"))
    sent = next(conversation)
    assert isinstance(sent, httpx.Request)
    problem = {"type": "https://exchange.example/problems/member-not-found", "status": 404}
    with pytest.raises(ProblemError) as caught:
        conversation.send(signed(404, problem, sent))
    assert (caught.value.status, caught.value.problem) == (404, problem)


def test_an_unknown_key_fetches_the_keys_once_then_refuses(client: ExchangeClient) -> None:
    """An answer signed by a key id the client does not know: it asks for ``GET /v1/keys``
    (unsigned), and when the key is not there either, refuses the answer."""
    client._session.signer.exchange_keys = {"older": Ed25519PrivateKey.generate().public_key()}
    conversation = client._session.converse(Call("GET", "/v1/partners/me", lambda r: r))
    sent = next(conversation)
    assert isinstance(sent, httpx.Request)
    fetch = conversation.send(signed(200, {}, sent))
    assert isinstance(fetch, httpx.Request)
    assert (fetch.method, fetch.url.path) == ("GET", "/v1/keys")
    assert "signature" not in fetch.headers
    with pytest.raises(ResponseSignatureInvalid):
        conversation.send(httpx.Response(200, json=[], request=fetch))
