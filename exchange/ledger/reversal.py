"""Reversal: all or part of a transaction undone by a new one, never more than it moved.

Shares are cumulative (what has been reversed after this reversal, minus what had been before),
so a run of partial reversals that reaches the whole reverses each posting exactly, money legs
of a conversion included.

A conversion's money follows its points: once a cumulative ``c`` of its ``P`` source points is
reversed, ``floor(out * c / P)`` destination points and ``floor(fee * c / P)`` fee points are
back, and the money legs reverse exactly those points at the values in force at the conversion
(:func:`conversion_money_reversed`). So at every moment the destination is owed
``(out - out reversed) * value(destination)`` and the operator
``(fee - fee refunded) * value(source)``: a destination reconciles money against the points it
holds, to the micro."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.errors import (
    NotReversible,
    NotReversibleByYou,
    ReversalExceedsOriginal,
    TransactionNotFound,
)
from exchange.ledger.engine import Leg, PostedTransaction, TransactionSpec, post_transaction
from exchange.ledger.models import Account, LedgerTransaction, Member, Posting
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.validation import check_points

REVERSIBLE_KINDS = frozenset({"issue", "redeem", "transfer", "convert", "donate", "capture"})
"""What ``POST /v1/transactions/{id}/reversal`` reverses. An ``earn`` is not among them: its
order's returns take its points back (``exchange.purchases``), through :func:`reverse` with
``kinds=EARN_KINDS``, so that what the order shows returned is all that was."""
EARN_KINDS = frozenset({"earn"})

account_t = cast(Table, Account.__table__)
member_t = cast(Table, Member.__table__)
posting_t = cast(Table, Posting.__table__)
transaction_t = cast(Table, LedgerTransaction.__table__)


def _scaled(amount: int, total: int, cumulative: int) -> int:
    """``amount * cumulative / total`` truncated toward zero (sign kept, magnitude floored)."""
    magnitude = abs(amount) * cumulative // total
    return magnitude if amount >= 0 else -magnitude


def reversal_legs(
    originals: list[tuple[int, str, int]], total: int, before: int, after: int
) -> list[Leg]:
    """Legs that reverse the share ``after - before`` of ``total`` of the original postings
    ``(account_id, ledger, amount)``.

    Shares are cumulative (what has been reversed after this reversal, minus what had been
    before), so a run of partial reversals that reaches the whole reverses each posting exactly.
    In each ledger every posting but one is scaled and truncated toward zero; the largest posting
    (ties: lowest account id, so every partial reversal picks the same one) takes the difference,
    which keeps each ledger summing to zero."""
    by_ledger: dict[str, list[tuple[int, int]]] = {}
    for account_id, ledger, amount in originals:
        by_ledger.setdefault(ledger, []).append((account_id, amount))
    legs: list[Leg] = []
    for ledger in sorted(by_ledger):
        rows = by_ledger[ledger]
        balancer = min(range(len(rows)), key=lambda i: (-abs(rows[i][1]), rows[i][0]))
        parts = []
        for i, (account_id, amount) in enumerate(rows):
            if i != balancer:
                share = _scaled(amount, total, after) - _scaled(amount, total, before)
                parts.append((i, account_id, -share))
        rest = -sum(share for _, _, share in parts)
        parts.append((balancer, rows[balancer][0], rest))
        legs.extend(Leg(account_id, share) for _, account_id, share in sorted(parts) if share)
    return legs


@dataclass(frozen=True)
class ConversionTerms:
    """What a conversion recorded of itself: its source points, fee, points out and the point
    values in force when it was made."""

    points: int
    fee: int
    out: int
    source_value_micros: int
    destination_value_micros: int


def conversion_money_reversed(terms: ConversionTerms, before: int, after: int) -> tuple[int, int]:
    """Micros the destination and the operator give back when the cumulative source points
    reversed go from ``before`` to ``after``: the destination points and fee points that
    reversal moves back (cumulative floors), times their values. Exact integers, never negative,
    and they add up to the conversion's whole money once ``after`` reaches ``points``."""
    total = terms.points
    out_back = terms.out * after // total - terms.out * before // total
    fee_back = terms.fee * after // total - terms.fee * before // total
    return out_back * terms.destination_value_micros, fee_back * terms.source_value_micros


def conversion_terms(details: str | None) -> ConversionTerms | None:
    """The terms a conversion kept with its transaction; ``None`` when it kept none."""
    if not details:
        return None
    kept = json.loads(details)
    fields = ("points", "fee", "out", "source_value_micros", "destination_value_micros")
    if not all(isinstance(kept.get(name), int) for name in fields):
        return None
    return ConversionTerms(**{name: kept[name] for name in fields})


def conversion_reversal_legs(
    originals: Sequence[tuple[int, str, int, uuid.UUID]],
    source_partner_id: uuid.UUID,
    money_ledger: str,
    terms: ConversionTerms,
    before: int,
    after: int,
) -> list[Leg]:
    """Legs reversing a conversion from ``before`` to ``after`` cumulative source points:
    points ledgers by cumulative shares, the money ledger by the points those legs move back.

    ``originals`` are the conversion's postings ``(account_id, ledger, amount, partner_id)``.
    On the money ledger the source brand's posting is the one negative leg, the destination's
    the positive leg of the partner that owns the destination points, the operator's the other."""
    points_rows = [
        (account_id, ledger, amount)
        for account_id, ledger, amount, _ in originals
        if ledger != money_ledger
    ]
    legs = reversal_legs(points_rows, terms.points, before, after)
    destination_partners = {
        partner
        for _, ledger, _, partner in originals
        if ledger != money_ledger and partner != source_partner_id
    }
    destination_back, operator_back = conversion_money_reversed(terms, before, after)
    for account_id, ledger, amount, partner in originals:
        if ledger != money_ledger:
            continue
        if amount < 0:
            share = destination_back + operator_back
        elif partner in destination_partners:
            share = -destination_back
        else:
            share = -operator_back
        if share:
            legs.append(Leg(account_id, share))
    return legs


async def _touched(session: AsyncSession, partner: PartnerInfo, transaction_id: uuid.UUID) -> bool:
    """Whether the transaction moved any of the partner's accounts: a partner may learn that
    it cannot reverse what it can read, and nothing of the rest."""
    found = await session.scalar(
        select(posting_t.c.id)
        .join(account_t, account_t.c.id == posting_t.c.account_id)
        .where(
            posting_t.c.transaction_id == transaction_id,
            account_t.c.partner_id == partner.id,
        )
        .limit(1)
    )
    return found is not None


async def _reversible(
    session: AsyncSession,
    partner: PartnerInfo,
    transaction_id: uuid.UUID,
    kinds: frozenset[str] = REVERSIBLE_KINDS,
) -> tuple[Any, int]:
    """The partner's transaction, locked (reversals of one transaction queue on its row), and
    the points reversed so far."""
    original = (
        await session.execute(
            select(transaction_t)
            .where(transaction_t.c.id == transaction_id, transaction_t.c.partner_id == partner.id)
            .with_for_update()
        )
    ).first()
    if original is None:
        if await _touched(session, partner, transaction_id):
            raise NotReversibleByYou(
                f"transaction {transaction_id} was made by another partner; only it may reverse it",
                transaction_id=str(transaction_id),
            )
        raise TransactionNotFound(
            f"no transaction {transaction_id}", transaction_id=str(transaction_id)
        )
    if original.kind not in kinds:
        detail = f"a {original.kind} transaction cannot be reversed"
        if original.kind == "earn":
            detail = "an earn transaction is taken back by returns of its purchase"
        raise NotReversible(detail, kind=original.kind)
    already = await session.scalar(
        select(func.coalesce(func.sum(transaction_t.c.points), 0)).where(
            transaction_t.c.reverses_id == transaction_id
        )
    )
    return original, int(already or 0)


async def _member_refs(session: AsyncSession, account_ids: list[int]) -> dict[int, str]:
    rows = await session.execute(
        select(account_t.c.id, member_t.c.member_ref)
        .join(member_t, member_t.c.id == account_t.c.member_id)
        .where(account_t.c.id.in_(account_ids))
    )
    return {account_id: ref for account_id, ref in rows}


def _legs(original: Any, originals: list[Any], before: int, after: int) -> list[Leg]:
    """A conversion's legs follow its points (:func:`conversion_reversal_legs`); any other
    transaction's, and a conversion that kept no terms, reverse each posting by shares."""
    terms = conversion_terms(original.details) if original.kind == "convert" else None
    if terms is not None and terms.points == original.points:
        money_ledger = json.loads(original.details).get("settlement_currency")
        if isinstance(money_ledger, str):
            return conversion_reversal_legs(
                originals, original.partner_id, money_ledger, terms, before, after
            )
    rows = [(account_id, ledger, amount) for account_id, ledger, amount, _ in originals]
    return reversal_legs(rows, original.points, before, after)


async def reverse(
    session: AsyncSession,
    partner: PartnerInfo,
    transaction_id: uuid.UUID,
    points: int | None = None,
    *,
    idempotency_key: str | None = None,
    kinds: frozenset[str] = REVERSIBLE_KINDS,
) -> PostedTransaction:
    """Reverse all or part of a transaction the partner made, of one of ``kinds``. Reversals of
    one transaction are serialised on its row, and together never exceed its points."""
    original, already = await _reversible(session, partner, transaction_id, kinds)
    remaining = original.points - already
    amount = remaining if points is None else check_points(points)
    if amount <= 0 or amount > remaining:
        raise ReversalExceedsOriginal(
            f"{remaining} of {original.points} points remain to reverse",
            original=original.points,
            reversed=already,
            remaining=remaining,
            requested=amount,
        )
    originals = (
        await session.execute(
            select(
                posting_t.c.account_id,
                posting_t.c.ledger,
                posting_t.c.amount,
                account_t.c.partner_id,
            )
            .join(account_t, account_t.c.id == posting_t.c.account_id)
            .where(posting_t.c.transaction_id == transaction_id)
            .order_by(posting_t.c.id)
        )
    ).all()
    legs = _legs(original, [tuple(r) for r in originals], already, already + amount)
    refs = await _member_refs(session, [leg.account_id for leg in legs])
    return await post_transaction(
        session,
        TransactionSpec(
            kind="reverse",
            partner_id=partner.id,
            points=amount,
            idempotency_key=idempotency_key,
            reverses_id=transaction_id,
            rate_version_id=original.rate_version_id,
            legs=legs,
            member_refs=refs,
        ),
    )
