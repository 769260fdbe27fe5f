"""The operator's SDK: the operator routes, signed with an operator key, on the same core as
the partner clients (:mod:`partners.client`: one planned :class:`~partners.client.Call` per
route, run by a sync or an async client that signs, retries and verifies).

    from partners.operator import OperatorClient

    with OperatorClient(URL, key_id=KEY_ID, alg="ed25519", key=pem) as operator:
        sky = operator.create_partner("brand", "Sky Air", currency="SKY")
        operator.add_key(sky.id, "ed25519", public_key=sky_public_pem)
        operator.set_point_value("SKY", 12_000)
        operator.set_rate("SKY", "HTL", from_points=1_000, to_points=750, fee_bps=100)
        operator.run_settlement("2026-11-21")
        operator.mark_paid("2026-11-21")

An operator client is also a partner client (``me``, ``rates``...): the operator is a partner.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Literal

from exchange.contract.schemas import (
    KeyCreate,
    KeyOut,
    KeyRevocationOut,
    PartnerCreate,
    PartnerOut,
    PointValueCreate,
    PointValueOut,
    RateCreate,
    RateOut,
)
from exchange.contract.settlement import SettlementBatchOut, SettlementBatchSummaryOut
from partners.client import (
    AsyncExchangeClient,
    Call,
    ExchangeClient,
    Operation,
    _answer,
    _get,
    _post,
    _segment,
)

_PARTNER = _answer(PartnerOut)
_PARTNERS = _answer(list[PartnerOut])
_KEY = _answer(KeyOut)
_REVOCATION = _answer(KeyRevocationOut)
_VALUE = _answer(PointValueOut)
_VALUES = _answer(list[PointValueOut])
_RATE = _answer(RateOut)
_BATCH = _answer(SettlementBatchOut)
_BATCHES = _answer(list[SettlementBatchOut])
_SUMMARIES = _answer(list[SettlementBatchSummaryOut])


def _day(business_date: dt.date | str) -> str:
    return business_date.isoformat() if isinstance(business_date, dt.date) else business_date


def _create_partner(
    kind: Literal["brand", "charity", "operator"],
    name: str,
    *,
    currency: str | None = None,
    min_donation_points: int | None = None,
    idempotency_key: str | None = None,
) -> Call[PartnerOut]:
    """Register a brand (with its points ``currency``), a charity (with an optional minimum
    donation) or the operator.

    ``operator.create_partner("charity", "Clean Water", min_donation_points=100)``"""
    body = PartnerCreate(kind, name, currency, min_donation_points)
    return _post("/v1/partners", body, _PARTNER, idempotency_key)


def _partners() -> Call[list[PartnerOut]]:
    """Every partner, oldest first.

    ``[p.name for p in operator.partners() if p.kind == "charity"]``"""
    return _get("/v1/partners", _PARTNERS)


def _add_key(
    partner_id: uuid.UUID | str,
    alg: Literal["ed25519", "hmac-sha256"],
    *,
    public_key: str | None = None,
    idempotency_key: str | None = None,
) -> Call[KeyOut]:
    """Register a key the partner signs with: an Ed25519 ``public_key`` (PEM), or for
    ``hmac-sha256`` a secret the exchange makes and answers once (``KeyOut.secret``).

    ``operator.add_key(sky.id, "ed25519", public_key=open("sky.pub.pem").read())``"""
    path = f"/v1/partners/{_segment(partner_id)}/keys"
    return _post(path, KeyCreate(alg, public_key), _KEY, idempotency_key)


def _revoke_key(key_id: str, *, idempotency_key: str | None = None) -> Call[KeyRevocationOut]:
    """Revoke a key: requests signed with it fail from now on.

    ``operator.revoke_key(old_key_id).revoked_at``"""
    return _post(f"/v1/keys/{_segment(key_id)}/revocation", {}, _REVOCATION, idempotency_key)


def _point_values() -> Call[list[PointValueOut]]:
    """Every brand's point value in force.

    ``{v.currency: v.micros_per_point for v in operator.point_values()}``"""
    return _get("/v1/point-values", _VALUES)


def _set_point_value(
    currency: str,
    micros_per_point: int,
    *,
    effective_at: dt.datetime | None = None,
    idempotency_key: str | None = None,
) -> Call[PointValueOut]:
    """A new version of a brand's point value, in micros (now, or at ``effective_at``).

    ``operator.set_point_value("SKY", 12_000)``"""
    body = PointValueCreate(currency, micros_per_point, effective_at)
    return _post("/v1/point-values", body, _VALUE, idempotency_key)


def _set_rate(
    from_currency: str,
    to_currency: str,
    *,
    from_points: int,
    to_points: int,
    fee_bps: int,
    min_points: int = 0,
    effective_at: dt.datetime | None = None,
    idempotency_key: str | None = None,
) -> Call[RateOut]:
    """A new version of the rate between two brands: ``to_points`` per ``from_points``, a fee
    in basis points and a minimum.

    ``operator.set_rate("SKY", "HTL", from_points=1_000, to_points=750, fee_bps=100)``"""
    body = RateCreate(
        from_currency, to_currency, from_points, to_points, fee_bps, min_points, effective_at
    )
    return _post("/v1/rates", body, _RATE, idempotency_key)


def _batches(limit: int | None = None) -> Call[list[SettlementBatchSummaryOut]]:
    """The latest settlement batches, newest first (``limit`` up to 366).

    ``[b.business_date for b in operator.settlement_batches(limit=7)]``"""
    return _get("/v1/settlement-batches", _SUMMARIES, {"limit": limit})


def _batch(business_date: dt.date | str) -> Call[SettlementBatchOut]:
    """A batch: gross matrix, positions, carries and payment instructions.

    ``operator.settlement_batch("2026-11-21").instructions``"""
    return _get(f"/v1/settlement-batches/{_segment(_day(business_date))}", _BATCH)


def _run_settlement(
    business_date: dt.date | str | None = None, *, idempotency_key: str | None = None
) -> Call[list[SettlementBatchOut]]:
    """Settle one business day (a day settled already answers its batch), or every day that
    is due, in order.

    ``operator.run_settlement("2026-11-21")[0].positions``"""
    body = {} if business_date is None else {"business_date": _day(business_date)}
    return _post("/v1/settlement-batches", body, _BATCHES, idempotency_key)


def _mark_paid(
    business_date: dt.date | str, *, idempotency_key: str | None = None
) -> Call[SettlementBatchOut]:
    """Record that a batch's payments were made; the batch is immutable from then on.

    ``operator.mark_paid("2026-11-21").status == "paid"``"""
    path = f"/v1/settlement-batches/{_segment(_day(business_date))}/payment"
    return _post(path, {}, _BATCH, idempotency_key)


class _OperatorOperations:
    """The operator routes, planned above, run by either client."""

    create_partner = Operation(_create_partner)
    partners = Operation(_partners)
    add_key = Operation(_add_key)
    revoke_key = Operation(_revoke_key)
    point_values = Operation(_point_values)
    set_point_value = Operation(_set_point_value)
    set_rate = Operation(_set_rate)
    settlement_batches = Operation(_batches)
    settlement_batch = Operation(_batch)
    run_settlement = Operation(_run_settlement)
    mark_paid = Operation(_mark_paid)


class OperatorClient(_OperatorOperations, ExchangeClient):
    """A synchronous operator client: every partner call and the operator routes."""

    def __enter__(self) -> OperatorClient:
        return self


class AsyncOperatorClient(_OperatorOperations, AsyncExchangeClient):
    """The asynchronous :class:`OperatorClient`."""

    async def __aenter__(self) -> AsyncOperatorClient:
        return self


__all__ = ["AsyncOperatorClient", "OperatorClient"]
