"""Earn rules and purchases over HTTP.

The worked example: Sky Air earns 3 points per 2.00 EUR spent (3 per 200 cents), shoes earn
1.5x (15 000 bps), and a promotion doubles books (20 000 bps) from yesterday to tomorrow. Alice
buys running shoes for 89.99 EUR, two books for 25.00 EUR and three pairs of socks for
12.99 EUR:

    shoes  floor(8 999 * 3 * 1.5 / 200) = floor(202.4775) = 202
    books  floor(2 500 * 3 * 2 / 200)   = 75
    socks  floor(1 299 * 3 / 200)       = floor(19.485)   = 19      order: 296 points

She returns one book and two pairs of socks: floor(75 * 1/2) = 37 and floor(19 * 2/3) = 12,
49 points back; then the other book: floor(75 * 2/2) - 37 = 38, so the book line gives back
exactly its 75.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.base import utcnow, uuid7
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.verify import verify_ledger
from exchange.purchases.models import Purchase, PurchaseReturn
from tests.integration.conftest import Credentials, Partners, SignedApi
from tests.integration.pricing_support import (
    balance,
    enrol,
    lines,
    problem_type,
    signed_by_exchange,
)

Sessions = async_sessionmaker[AsyncSession]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


RULES: dict[str, Any] = {
    "rates": [{"currency": "EUR", "points": 3, "per_minor_units": 200}],
    "category_multipliers_bps": {"shoes": 15_000},
    "promotions": [
        {
            "category": "books",
            "multiplier_bps": 20_000,
            "starts_at": (_now() - dt.timedelta(days=1)).isoformat(),
            "ends_at": (_now() + dt.timedelta(days=1)).isoformat(),
        }
    ],
}
LINES = [
    {"sku": "RUN-42", "product_type": "apparel", "category": "shoes", "amount_minor": 8_999},
    {
        "sku": "BOOK-7",
        "product_type": "media",
        "category": "books",
        "amount_minor": 2_500,
        "quantity": 2,
    },
    {
        "sku": "SOCKS",
        "product_type": "apparel",
        "category": "accessories",
        "amount_minor": 1_299,
        "quantity": 3,
    },
]


def order(order_id: str = "order-1", member_ref: str = "alice", **more: Any) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "member_ref": member_ref,
        "currency": "EUR",
        "lines": LINES,
        **more,
    }


async def set_rules(api: SignedApi, brand: Credentials, rules: dict[str, Any]) -> dict[str, Any]:
    answer = await api.post("/v1/earn-rules", rules, as_=brand)
    assert answer.status_code == 201, answer.text
    made: dict[str, Any] = answer.json()
    return made


async def _counts(sessions: Sessions) -> tuple[int, int]:
    async with sessions() as session:
        purchases = await session.scalar(select(func.count()).select_from(Purchase))
        returns = await session.scalar(select(func.count()).select_from(PurchaseReturn))
    return int(purchases or 0), int(returns or 0)


async def test_three_lines_under_a_rate_a_category_multiplier_and_a_promotion_then_returns(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    sky = partners.sky
    rules = await set_rules(api, sky, RULES)
    await enrol(api, sky, "alice")

    quoted = await api.post("/v1/purchases/quote", {"currency": "EUR", "lines": LINES}, as_=sky)
    assert quoted.status_code == 200, quoted.text
    assert [line["points"] for line in quoted.json()["lines"]] == [202, 75, 19]
    assert quoted.json()["points"] == 296
    assert await api.ledger_size() == (0, 0)  # a quote posts nothing

    bought = await api.post("/v1/purchases", order(), as_=sky)
    assert bought.status_code == 201, bought.text
    body = bought.json()
    purchase = body["purchase"]
    assert (purchase["points"], purchase["rule_version_id"]) == (296, rules["id"])
    assert [
        (x["points"], x["product_type_bps"], x["category_bps"], x["promotion_bps"])
        for x in purchase["lines"]
    ] == [(202, 10_000, 15_000, 10_000), (75, 10_000, 10_000, 20_000), (19, 10_000, 10_000, 10_000)]
    transaction = body["transaction"]
    assert (transaction["kind"], transaction["points"]) == ("earn", 296)
    assert transaction["reference"] == "order-1"
    assert lines(transaction) == {"SKY:alice": 296, "SKY:issuance": -296}
    assert signed_by_exchange(api, transaction, body["receipt"])
    assert body["balances"] == [
        {"member_ref": "alice", "balance": 296, "held": 0, "available": 296}
    ]

    path = f"/v1/purchases/{purchase['id']}/returns"
    first = await api.post(
        path, {"lines": [{"line": 2, "quantity": 1}, {"line": 3, "quantity": 2}]}, as_=sky
    )
    assert first.status_code == 201, first.text
    returned = first.json()
    assert returned["returned"]["points"] == 49
    assert [(x["line"], x["points"]) for x in returned["returned"]["lines"]] == [(2, 37), (3, 12)]
    assert returned["transaction"]["kind"] == "reverse"
    assert returned["transaction"]["reverses"] == transaction["id"]
    assert lines(returned["transaction"]) == {"SKY:alice": -49, "SKY:issuance": 49}
    assert returned["purchase"]["returned_points"] == 49
    assert await balance(api, sky, "alice") == 247

    second = await api.post(path, {"lines": [{"line": 2, "quantity": 1}]}, as_=sky)
    assert second.status_code == 201, second.text
    assert second.json()["returned"]["points"] == 38
    shown = (await api.get(f"/v1/purchases/{purchase['id']}", as_=sky)).json()
    assert shown["returned_points"] == 87
    assert [(x["returned_quantity"], x["returned_points"]) for x in shown["lines"]] == [
        (0, 0),
        (2, 75),
        (2, 12),
    ]
    assert await balance(api, sky, "alice") == 296 - 87

    # Returns are capped: no unit twice, and the earn is not reversible by other means.
    again = await api.post(path, {"lines": [{"line": 2, "quantity": 1}]}, as_=sky)
    assert (again.status_code, problem_type(again)) == (422, "return-exceeds-purchase")
    direct = await api.post(f"/v1/transactions/{transaction['id']}/reversal", as_=sky)
    assert (direct.status_code, problem_type(direct)) == (422, "not-reversible")

    # Another brand does not see it.
    other = await api.get(f"/v1/purchases/{purchase['id']}", as_=partners.htl)
    assert (other.status_code, problem_type(other)) == (404, "purchase-not-found")
    async with sessions() as session:
        report = await verify_ledger(session)
    assert report.ok, report.as_dict()


async def test_a_purchase_is_idempotent_and_an_order_earns_once(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    sky = partners.sky
    await set_rules(api, sky, RULES)
    await enrol(api, sky, "alice")
    first = await api.post("/v1/purchases", order(), as_=sky, idempotency_key="k-1")
    replay = await api.post("/v1/purchases", order(), as_=sky, idempotency_key="k-1")
    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.json() == first.json()
    again = await api.post("/v1/purchases", order(), as_=sky)
    assert (again.status_code, problem_type(again)) == (409, "order-exists")
    # The same order id at another brand is that brand's own order.
    await set_rules(api, partners.htl, RULES)
    await enrol(api, partners.htl, "alice-h")
    theirs = await api.post("/v1/purchases", order(member_ref="alice-h"), as_=partners.htl)
    assert theirs.status_code == 201, theirs.text
    assert await _counts(sessions) == (2, 0)
    assert await balance(api, sky, "alice") == 296


async def test_a_return_of_points_already_spent_is_refused_and_changes_nothing(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    sky = partners.sky
    await set_rules(api, sky, RULES)
    await enrol(api, sky, "alice")
    purchase = (await api.post("/v1/purchases", order(), as_=sky)).json()["purchase"]
    spent = await api.post("/v1/redemptions", {"member_ref": "alice", "points": 290}, as_=sky)
    assert spent.status_code == 201, spent.text
    before = await api.ledger_size()
    path = f"/v1/purchases/{purchase['id']}/returns"
    refused = await api.post(path, {"lines": [{"line": 1, "quantity": 1}]}, as_=sky)
    assert (refused.status_code, problem_type(refused)) == (422, "insufficient-points")
    assert (refused.json()["available"], refused.json()["requested"]) == (6, 202)
    assert await api.ledger_size() == before
    assert await _counts(sessions) == (1, 0)


async def test_bad_purchases_are_problems_that_change_nothing(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    sky = partners.sky
    await enrol(api, sky, "alice")
    none_yet = await api.post("/v1/purchases", order(), as_=sky)
    assert (none_yet.status_code, problem_type(none_yet)) == (422, "earn-rules-not-found")
    await set_rules(api, sky, RULES)
    line = LINES[0]
    # A negative amount, no lines, 101 lines, no units, a fraction, a lower-case currency, an
    # unknown field: the body's types refuse them (the field named in the problem).
    cases: list[tuple[dict[str, Any], int, str]] = [
        (order(currency="USD"), 422, "currency-not-earning"),
        (order(lines=[{**line, "amount_minor": -1}]), 422, "invalid-request"),
        (order(lines=[]), 422, "invalid-request"),
        (order(lines=[line] * 101), 422, "invalid-request"),
        (order(lines=[{**line, "quantity": 0}]), 422, "invalid-request"),
        (order(lines=[{**line, "amount_minor": 1.5}]), 422, "invalid-request"),
        (order(lines=[{**line, "amount_minor": 10}]), 422, "nothing-earned"),
        (order(member_ref="stranger"), 404, "member-not-found"),
        (order(currency="eur"), 422, "invalid-request"),
        ({**order(), "colour": "red"}, 422, "invalid-request"),
    ]
    for body, status, slug in cases:
        answer = await api.post("/v1/purchases", body, as_=sky)
        assert (answer.status_code, problem_type(answer)) == (status, slug), (body, answer.text)
    quote = await api.post("/v1/purchases/quote", {"currency": "JPY", "lines": LINES}, as_=sky)
    assert (quote.status_code, problem_type(quote)) == (422, "currency-not-earning")
    unknown = await api.get(f"/v1/purchases/{uuid.uuid4()}", as_=sky)
    assert (unknown.status_code, problem_type(unknown)) == (404, "purchase-not-found")
    gone = await api.post(
        f"/v1/purchases/{uuid.uuid4()}/returns", {"lines": [{"line": 1, "quantity": 1}]}, as_=sky
    )
    assert (gone.status_code, problem_type(gone)) == (404, "purchase-not-found")
    assert await api.ledger_size() == (0, 0)
    assert await _counts(sessions) == (0, 0)

    purchase = (await api.post("/v1/purchases", order(), as_=sky)).json()["purchase"]
    path = f"/v1/purchases/{purchase['id']}/returns"
    before = await api.ledger_size()
    for body, slug in [
        ({"lines": [{"line": 1, "quantity": 2}]}, "return-exceeds-purchase"),
        ({"lines": [{"line": 4, "quantity": 1}]}, "invalid-input"),
        ({"lines": [{"line": 2, "quantity": 1}, {"line": 2, "quantity": 1}]}, "invalid-input"),
    ]:
        answer = await api.post(path, body, as_=sky)
        assert (answer.status_code, problem_type(answer)) == (422, slug), answer.text
    assert await api.ledger_size() == before
    assert await _counts(sessions) == (1, 0)


async def test_earn_rules_are_versions_never_changed(api: SignedApi, partners: Partners) -> None:
    sky = partners.sky
    first = await set_rules(api, sky, RULES)
    later = (_now() + dt.timedelta(days=30)).isoformat()
    second = await set_rules(api, sky, {**RULES, "order_cap": 100, "effective_at": later})
    page = (await api.get("/v1/earn-rules", as_=sky)).json()
    assert page["current"]["id"] == first["id"]
    assert [v["id"] for v in page["versions"]] == [second["id"], first["id"]]
    past = (_now() - dt.timedelta(days=1)).isoformat()
    backdated = await api.post("/v1/earn-rules", {**RULES, "effective_at": past}, as_=sky)
    assert (backdated.status_code, problem_type(backdated)) == (422, "effective-in-past")
    twice = {**RULES, "rates": RULES["rates"] * 2}
    refused = await api.post("/v1/earn-rules", twice, as_=sky)
    assert (refused.status_code, problem_type(refused)) == (422, "invalid-input")
    operator = await api.post("/v1/earn-rules", RULES, as_=partners.operator)
    assert (operator.status_code, problem_type(operator)) == (403, "not-a-brand")


async def test_a_batch_takes_purchases_each_with_its_own_outcome(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    sky = partners.sky
    await set_rules(api, sky, RULES)
    await enrol(api, sky, "alice")
    await enrol(api, sky, "bob")
    single = await api.post("/v1/purchases", order("order-1"), as_=sky)
    assert single.status_code == 201, single.text

    def purchase(key: str, order_id: str, member_ref: str, **more: Any) -> dict[str, Any]:
        return {"type": "purchase", "idempotency_key": key, **order(order_id, member_ref, **more)}

    operations = [
        purchase("p-1", "order-2", "alice"),
        purchase("p-2", "order-1", "bob"),  # the order earned already: 409
        purchase("p-3", "order-3", "bob", currency="USD"),  # no rate: 422
        {"type": "issue", "idempotency_key": "i-1", "member_ref": "bob", "points": 10},
        purchase("p-4", "order-4", "bob"),
    ]
    answer = await api.post("/v1/batches", {"operations": operations}, as_=sky)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == [201, 409, 422, 201, 201]
    assert [r.get("problem", {}).get("type", "").rsplit("/", 1)[-1] for r in results[1:3]] == [
        "order-exists",
        "currency-not-earning",
    ]
    assert (results[0]["transaction"]["kind"], results[0]["transaction"]["points"]) == ("earn", 296)
    assert await balance(api, sky, "alice") == 296 * 2
    assert await balance(api, sky, "bob") == 296 + 10
    assert await _counts(sessions) == (3, 0)

    # The purchases are ordinary purchases: returns work on them.
    async with sessions() as session:
        bought = await session.scalar(select(Purchase.id).where(Purchase.order_id == "order-4"))
    back = await api.post(
        f"/v1/purchases/{bought}/returns", {"lines": [{"line": 1, "quantity": 1}]}, as_=sky
    )
    assert (back.status_code, back.json()["returned"]["points"]) == (201, 202), back.text

    # The same batch again (another request key): every posted item replays, nothing posts.
    before = await api.ledger_size()
    again = await api.post("/v1/batches", {"operations": operations}, as_=sky)
    assert [r["status"] for r in again.json()["results"]] == [201, 409, 422, 201, 201]
    assert [r.get("replayed", False) for r in again.json()["results"]] == [
        True, False, False, True, True,
    ]  # fmt: skip
    assert await api.ledger_size() == before
    assert await _counts(sessions) == (3, 1)

    # Two purchases of one order in a batch refuse the batch as a whole.
    twice = [purchase("p-5", "order-5", "bob"), purchase("p-6", "order-5", "alice")]
    refused = await api.post("/v1/batches", {"operations": twice}, as_=sky)
    assert (refused.status_code, problem_type(refused)) == (422, "invalid-input")
    assert await api.ledger_size() == before
    async with sessions() as session:
        report = await verify_ledger(session)
    assert report.ok, report.as_dict()


async def test_the_database_keeps_purchases_and_rule_versions_as_written(
    api: SignedApi, partners: Partners, sessions: Sessions, engine: AsyncEngine
) -> None:
    """Past the services: rule versions, purchases, their lines and returns are never changed or
    removed, and the transaction kinds are still checked (``earn`` added, nothing else)."""
    sky = partners.sky
    await set_rules(api, sky, RULES)
    await enrol(api, sky, "alice")
    purchase = (await api.post("/v1/purchases", order(), as_=sky)).json()["purchase"]
    back = await api.post(
        f"/v1/purchases/{purchase['id']}/returns", {"lines": [{"line": 1, "quantity": 1}]}, as_=sky
    )
    assert back.status_code == 201, back.text
    for statement in [
        "UPDATE earn_rule_version SET rules = '{}'",
        "DELETE FROM earn_rule_version",
        "UPDATE purchase SET points = points + 1",
        "DELETE FROM purchase_line",
        "UPDATE purchase_return SET points = 0",
        "DELETE FROM purchase_return_line",
    ]:
        with pytest.raises(IntegrityError, match="immutable"):
            async with engine.begin() as connection:
                await connection.execute(text(statement))
    async with sessions() as session:
        partner_id = await session.scalar(select(Purchase.partner_id))
    with pytest.raises(IntegrityError, match=r"ck_ledger_transaction_kind|CHECK constraint"):
        async with engine.begin() as connection:
            await connection.execute(
                insert(LedgerTransaction.__table__).values(
                    id=uuid7(), kind="bogus", partner_id=partner_id, points=0, created_at=utcnow()
                )
            )
    shown = (await api.get(f"/v1/purchases/{purchase['id']}", as_=sky)).json()
    assert (shown["points"], shown["returned_points"]) == (296, 202)


async def test_a_return_sent_twice_with_its_key_takes_back_once(
    api: SignedApi, partners: Partners, sessions: Sessions
) -> None:
    sky = partners.sky
    await set_rules(api, sky, RULES)
    await enrol(api, sky, "alice")
    purchase = (await api.post("/v1/purchases", order(), as_=sky)).json()["purchase"]
    path = f"/v1/purchases/{purchase['id']}/returns"
    body = {"lines": [{"line": 3, "quantity": 1}]}
    first = await api.post(path, body, as_=sky, idempotency_key="return-1")
    again = await api.post(path, body, as_=sky, idempotency_key="return-1")
    assert (first.status_code, again.status_code) == (201, 201)
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.json() == first.json()
    assert first.json()["returned"]["points"] == 6  # floor(19 * 1 / 3)
    assert await _counts(sessions) == (1, 1)
    assert await balance(api, sky, "alice") == 290
