"""Partners (brands, charities, the operator) and the keys they sign requests with."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import CheckConstraint, ForeignKey, Index, LargeBinary, SmallInteger, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from exchange.base import Base, UTCDateTime, utcnow, uuid7

PARTNER_KINDS = ("brand", "charity", "operator")
KEY_ALGS = ("ed25519", "hmac-sha256")


class Partner(Base):
    __tablename__ = "partner"
    __table_args__ = (
        CheckConstraint("kind IN ('brand', 'charity', 'operator')", name="kind"),
        # A brand owns exactly one points currency; charities and the operator own none.
        CheckConstraint("(kind = 'brand') = (currency IS NOT NULL)", name="brand_currency"),
        CheckConstraint(
            "min_donation_points IS NULL OR min_donation_points >= 1", name="min_donation"
        ),
        Index("uq_partner_code", "code", unique=True),
        Index("uq_partner_kind_name", "kind", "name", unique=True),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid7)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str | None] = mapped_column(String(16), unique=True)
    code: Mapped[str | None] = mapped_column(String(16))
    """A charity's stable code (``AID``): donations name it as a conversion names a currency."""
    min_donation_points: Mapped[int | None]
    shards: Mapped[int] = mapped_column(SmallInteger, default=1)
    webhook_url: Mapped[str | None] = mapped_column(String(2000))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class PartnerKey(Base):
    """A key a partner signs requests with. Ed25519 keeps only the public key; an HMAC secret is
    kept only as AES-GCM ciphertext under the master key, with the key id as associated data."""

    __tablename__ = "partner_key"
    __table_args__ = (
        CheckConstraint("alg IN ('ed25519', 'hmac-sha256')", name="alg"),
        CheckConstraint(
            "(alg = 'ed25519' AND public_key IS NOT NULL AND secret_ciphertext IS NULL)"
            " OR (alg = 'hmac-sha256' AND public_key IS NULL AND secret_ciphertext IS NOT NULL"
            " AND secret_nonce IS NOT NULL)",
            name="material",
        ),
        Index("ix_partner_key_partner_id", "partner_id"),
    )

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"))
    alg: Mapped[str] = mapped_column(String(16))
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    secret_nonce: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    """When a request signed with the key was last made, as far as the nonces purged so far
    tell (``partners.key_use``); kept off the request's path."""


class SignatureNonce(Base):
    """A nonce seen on a verified request, kept for the signature window so a replay is refused.
    In the database, so that every replica sees every other's nonces."""

    __tablename__ = "signature_nonce"
    __table_args__ = (Index("ix_signature_nonce_expires_at", "expires_at"),)

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)


class IdempotencyRecord(Base):
    """The first answer to a partner's POST under an ``Idempotency-Key``, replayed on a retry.
    Written in the same database transaction as the postings it answers for."""

    __tablename__ = "idempotency_record"
    __table_args__ = (Index("ix_idempotency_record_expires_at", "expires_at"),)

    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    """SHA-256 of the method, path, query and body: what makes a retry "the same request"."""
    response_status: Mapped[int]
    response_body: Mapped[bytes] = mapped_column(LargeBinary)
    response_content_type: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime)
