"""Partners: who the caller is, and the operator's onboarding of partners and their keys."""

from __future__ import annotations

import uuid

from litestar import Controller, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, JSONBody
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.contract.schemas import KeyCreate, KeyOut, KeyRevocationOut, PartnerCreate, PartnerOut
from exchange.guards import operator_only
from exchange.http.idempotency import REDACT_OPT
from exchange.ledger.parties import PartnerInfo
from exchange.openapi import IdempotentOperation, SignedOperation, problem_responses
from exchange.settings import Settings
from partners import service
from partners.service import list_partners


def partner_out(partner: PartnerInfo) -> PartnerOut:
    return PartnerOut(
        id=partner.id,
        kind=partner.kind,
        name=partner.name,
        currency=partner.currency,
        min_donation_points=partner.min_donation_points,
    )


class PartnersController(Controller):
    tags = ["partners"]

    @get(
        "/partners/me",
        operation_id="getCallingPartner",
        summary="The partner whose key signed this request",
        operation_class=SignedOperation,
        responses=problem_responses(),
        sync_to_thread=False,
    )
    def me(self, caller: NamedDependency[PartnerInfo]) -> PartnerOut:
        return partner_out(caller)

    @post(
        "/partners",
        operation_id="createPartner",
        summary="Operator: register a brand, a charity or the operator",
        guards=[operator_only],
        operation_class=IdempotentOperation,
        responses=problem_responses(403, 409),
    )
    async def create(
        self,
        data: JSONBody[PartnerCreate],
        db_session: NamedDependency[AsyncSession],
        settings: NamedDependency[Settings],
    ) -> PartnerOut:
        partner = await service.create_partner(
            db_session,
            kind=data.kind,
            name=data.name,
            currency=data.currency,
            settlement_currency=settings.settlement_currency,
            shards=settings.issuance_shards,
            min_donation_points=data.min_donation_points,
            code=data.code,
        )
        return partner_out(partner)

    @get(
        "/partners",
        operation_id="listPartners",
        summary="Operator: every partner",
        guards=[operator_only],
        operation_class=SignedOperation,
        responses=problem_responses(403),
    )
    async def list_all(self, db_session: NamedDependency[AsyncSession]) -> list[PartnerOut]:
        return [partner_out(p) for p in await list_partners(db_session)]

    @post(
        "/partners/{partner_id:uuid}/keys",
        operation_id="addPartnerKey",
        summary="Operator: register a key a partner signs requests with",
        description="ed25519: give the partner's public key (PEM); the private key never leaves"
        " the partner. hmac-sha256: the exchange makes the secret and returns it in this answer"
        " only; it is stored encrypted and never shown again (a retry with the same"
        " Idempotency-Key answers with the same key id and a null secret).",
        guards=[operator_only],
        operation_class=IdempotentOperation,
        responses=problem_responses(403, 404, 409),
        opt={REDACT_OPT: ("secret",)},
    )
    async def add_key(
        self,
        partner_id: FromPath[uuid.UUID],
        data: JSONBody[KeyCreate],
        db_session: NamedDependency[AsyncSession],
        master_key: NamedDependency[bytes],
    ) -> KeyOut:
        key = await service.add_key(
            db_session,
            partner_id=partner_id,
            alg=data.alg,
            master_key=master_key,
            public_key_pem=None if data.public_key is None else data.public_key.encode(),
        )
        return KeyOut(key_id=key.key_id, partner_id=key.partner_id, alg=key.alg, secret=key.secret)

    @post(
        "/keys/{key_id:str}/revocation",
        operation_id="revokePartnerKey",
        summary="Operator: revoke a partner's key; requests signed with it fail from now on",
        guards=[operator_only],
        operation_class=IdempotentOperation,
        responses=problem_responses(403, 404, 409),
        status_code=200,
    )
    async def revoke_key(
        self, key_id: FromPath[str], db_session: NamedDependency[AsyncSession]
    ) -> KeyRevocationOut:
        revoked = await service.revoke_key(db_session, key_id)
        assert revoked.revoked_at is not None
        return KeyRevocationOut(
            key_id=revoked.id, partner_id=revoked.partner_id, revoked_at=revoked.revoked_at
        )
