"""Pricing and members set up over the signed API, as the operator and the brands do it."""

from __future__ import annotations

from typing import Any

from exchange.signing import verify_document
from tests.integration.conftest import Credentials, SignedApi

PROBLEMS = "https://exchange.example/problems/"
BAD_POINTS = [0, -1, 1.5, "10", True, 10**13]


async def set_value(
    api: SignedApi, operator: Credentials, currency: str, micros: int
) -> dict[str, Any]:
    answer = await api.post(
        "/v1/point-values", {"currency": currency, "micros_per_point": micros}, as_=operator
    )
    assert answer.status_code == 201, answer.text
    value: dict[str, Any] = answer.json()
    return value


async def set_rate(api: SignedApi, operator: Credentials, **terms: Any) -> dict[str, Any]:
    answer = await api.post("/v1/rates", terms, as_=operator)
    assert answer.status_code == 201, answer.text
    rate: dict[str, Any] = answer.json()
    return rate


async def enrol(api: SignedApi, brand: Credentials, member_ref: str, points: int = 0) -> None:
    """Enrol a member of ``brand`` and, with ``points``, issue them."""
    enrolled = await api.post("/v1/members", {"member_ref": member_ref}, as_=brand)
    assert enrolled.status_code == 201, enrolled.text
    if points:
        issued = await api.post(
            "/v1/issuances", {"member_ref": member_ref, "points": points}, as_=brand
        )
        assert issued.status_code == 201, issued.text


async def balance(api: SignedApi, brand: Credentials, member_ref: str) -> int:
    answer = await api.get(f"/v1/members/{member_ref}", as_=brand)
    assert answer.status_code == 200, answer.text
    points: int = answer.json()["balance"]
    return points


def lines(transaction: dict[str, Any]) -> dict[str, int]:
    """A transaction's postings as the caller sees them, by ``LEDGER:account[:member]``."""
    page: dict[str, int] = {}
    for p in transaction["postings"]:
        name = f"{p['ledger']}:{p['member_ref'] or p['account']}"
        page[name] = page.get(name, 0) + p["amount"]
    return page


def signed_by_exchange(api: SignedApi, document: dict[str, Any], signature: Any) -> bool:
    """``signature`` verifies over ``document`` with the key ``GET /v1/keys`` published."""
    return verify_document(document, signature, api.exchange_keys[signature["key_id"]])


def problem_type(answer: Any) -> str:
    assert answer.headers["content-type"] == "application/problem+json", answer.text
    slug: str = answer.json()["type"].removeprefix(PROBLEMS)
    return slug
