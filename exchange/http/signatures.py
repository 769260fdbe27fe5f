"""Who is calling: RFC 9421 verification of every request to the signed API (SPEC §4).

For each request the middleware reads the whole body (Litestar caches it on the connection, so
the handler reads the same bytes again), parses the signatures, loads the candidate keys that
are not revoked (with their partner, in one query), verifies with :func:`verify_request` and
records the nonce. Key lookup and nonce run in one short transaction of their own, committed
before the handler starts: a replay is refused even when the first request later fails, and on
SQLite the request's own transaction (``BEGIN IMMEDIATE``) cannot wait on it. Every signature
of a request is checked, and the nonce of each one that verifies is claimed: a request carrying
two signatures (old and new key, during a rotation) is not accepted again with one of them
dropped. A request with several Host fields is a 400: ``@authority`` would be ambiguous.

Every refusal is the same 401 problem, byte for byte, whatever the cause; the cause goes to the
log at info level. On success the caller's :class:`PartnerInfo` is ``scope["user"]`` (what
``request.user`` reads) and the key id ``scope["auth"]``.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self, cast
from urllib.parse import quote

import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from litestar import Request
from litestar.datastructures import Headers
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, HTTPScope, Receive, Scope, Send
from sqlalchemy import bindparam, delete, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from exchange.errors import BadRequest, DomainError
from exchange.grouping import Grouper
from exchange.http.problems import from_domain_error, send_problem
from exchange.ledger.parties import PartnerInfo
from partners.httpsig import (
    MAX_SIGNATURES,
    SignatureInvalid,
    VerifyKey,
    parse_signatures,
    verify_request_signatures,
)
from partners.models import Partner, PartnerKey, SignatureNonce
from partners.service import decrypt_secret

MAX_AGE_SECONDS = 300
"""How old a signature's ``created`` may be."""
MAX_FUTURE_SECONDS = 30
"""How far ahead of our clock a signature's ``created`` may be."""
NONCE_MARGIN_SECONDS = 30
"""Nonces are kept this long past the window, against clock steps between replicas."""
MAX_NONCE_LENGTH = 200

_Claim = tuple[str, str, int]
"""A signature's (key id, nonce, created)."""

log = structlog.get_logger()


class SignatureRejected(DomainError):
    """Any failure to authenticate a request. Deliberately without detail: a caller learns
    nothing about which keys exist or which rule failed."""

    slug = "signature-invalid"
    status = 401
    title = "Request signature verification failed"

    def __init__(self) -> None:
        super().__init__("")


class RequestSignatureMiddleware(ASGIMiddleware):
    """Authenticate every request of the routes it is applied to (the ``/v1`` router)."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.key_lookups: Grouper[tuple[frozenset[str], bytes], _FoundKeys] = Grouper(
            self._look_up_keys
        )
        self.nonce_claims: Grouper[tuple[_Claim, ...], bool] = Grouper(self._claim_nonces)

    async def _look_up_keys(
        self, wanted: Sequence[tuple[frozenset[str], bytes]]
    ) -> list[_FoundKeys]:
        """The active keys of every waiting request, in one query; each gets its own. (The
        master key that opens HMAC secrets is the app's, the same for every request.)"""
        async with self.engine.connect() as conn:
            found = await _active_keys(
                conn, set().union(*(key_ids for key_ids, _ in wanted)), wanted[0][1]
            )
        return [found.among(key_ids) for key_ids, _ in wanted]

    async def _claim_nonces(self, requests: Sequence[tuple[_Claim, ...]]) -> list[bool]:
        """Claim the nonces of every waiting request, every verifying signature's, in one
        statement and one commit (see :func:`_claim_nonces`); a request passes only if each of
        its nonces was fresh."""
        claims = [claim for request in requests for claim in request]
        async with self.engine.begin() as conn:
            fresh = iter(await _claim_nonces(conn, claims, int(time.time())))
        return [all([next(fresh) for _ in request]) for request in requests]

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        # Litestar deep-copies a router when it is registered; the database handle is shared.
        return self

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        http = cast("HTTPScope", scope)
        if sum(1 for name, _ in http["headers"] if name.lower() == b"host") > 1:
            # Which one would @authority be? Refused rather than guessed.
            problem = from_domain_error(BadRequest("the request has several Host fields"))
            await send_problem(scope, receive, send, problem)
            return
        body = await Request[Any, Any, Any](scope, receive).body()
        try:
            caller, key_id = await self.authenticate(http, body)
        except SignatureInvalid as exc:
            log.info(
                "request signature refused",
                reason=str(exc),
                method=http["method"],
                path=http["path"],
            )
            await send_problem(scope, receive, send, from_domain_error(SignatureRejected()))
            return
        scope["user"] = caller
        scope["auth"] = key_id
        await next_app(scope, receive, send)

    async def authenticate(self, scope: HTTPScope, body: bytes) -> tuple[PartnerInfo, str]:
        """The calling partner and the key id that signed, or :class:`SignatureInvalid`."""
        headers = Headers.from_scope(scope)
        candidates = parse_signatures(headers)
        if not candidates:
            raise SignatureInvalid("no signature")
        if len(candidates) > MAX_SIGNATURES:
            raise SignatureInvalid(f"more than {MAX_SIGNATURES} signatures")
        key_ids = frozenset(c.key_id for c in candidates if c.key_id)
        if not key_ids:
            raise SignatureInvalid("no keyid")
        found = await self.key_lookups.submit((key_ids, scope["app"].state.master_key))
        verified = verify_request_signatures(
            method=scope["method"],
            path=raw_path(scope),
            query=scope["query_string"].decode("latin-1"),
            authority=headers.get("host"),
            headers=headers,
            body=body,
            keys=found.keys,
            now=int(time.time()),
            max_age=MAX_AGE_SECONDS,
            max_future=MAX_FUTURE_SECONDS,
        )
        if any(len(signature.nonce) > MAX_NONCE_LENGTH for signature in verified):
            raise SignatureInvalid(f"nonce longer than {MAX_NONCE_LENGTH} characters")
        # Every signature that verifies spends its nonce: a request signed with two keys (as
        # during a rotation) cannot be sent again with one of its labels dropped, reordered or
        # joined by a captured one.
        claims = tuple((v.key_id, v.nonce, v.created) for v in verified)
        if not await self.nonce_claims.submit(claims):
            raise SignatureInvalid("a nonce was already used with its key")
        first = verified[0]
        if len({found.partners[v.key_id].id for v in verified}) > 1:
            raise SignatureInvalid("signatures by keys of different partners")
        return found.partners[first.key_id], first.key_id


def raw_path(scope: HTTPScope) -> str:
    """The path as the client sent it, still percent-encoded (what ``@path`` covers)."""
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        return quote(scope["path"])
    # Some servers (and httpx's transports) leave the query string on raw_path.
    return raw.split(b"?", 1)[0].decode("latin-1")


# Built once (they run on every request); see exchange.ledger.engine on why.
_ACTIVE_KEYS = (
    select(
        PartnerKey.id,
        PartnerKey.alg,
        PartnerKey.public_key,
        PartnerKey.secret_nonce,
        PartnerKey.secret_ciphertext,
        Partner.id.label("partner_id"),
        Partner.kind,
        Partner.name,
        Partner.currency,
        Partner.shards,
        Partner.min_donation_points,
    )
    .join(Partner, Partner.id == PartnerKey.partner_id)
    .where(PartnerKey.id.in_(bindparam("key_ids", expanding=True)), PartnerKey.revoked_at.is_(None))
)


# On PostgreSQL the group's nonces go as three arrays into one statement whose text never
# changes (prepared once per connection); a multi-row VALUES list would be compiled again for
# each group size.
_CLAIM_NONCES_PG = text(
    """
    INSERT INTO signature_nonce (key_id, nonce, expires_at)
    SELECT * FROM unnest(CAST(:key_ids AS text[]), CAST(:nonces AS text[]),
                         CAST(:expires AS timestamptz[]))
    ON CONFLICT (key_id, nonce) DO UPDATE SET expires_at = excluded.expires_at
    WHERE signature_nonce.expires_at <= :now
    RETURNING key_id, nonce
    """
)


def _nonce_claims(dialect: Any, rows: list[dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """One upsert of ``rows``, returning the nonces it took, and its parameters but ``now``."""
    if dialect.name == "postgresql":
        return _CLAIM_NONCES_PG, {
            "key_ids": [row["key_id"] for row in rows],
            "nonces": [row["nonce"] for row in rows],
            "expires": [row["expires_at"] for row in rows],
        }
    claim = sqlite.insert(SignatureNonce).values(rows)
    statement = claim.on_conflict_do_update(
        index_elements=[SignatureNonce.key_id, SignatureNonce.nonce],
        set_={"expires_at": claim.excluded.expires_at},
        where=SignatureNonce.expires_at <= bindparam("now"),
    ).returning(SignatureNonce.key_id, SignatureNonce.nonce)
    return statement, {}


@functools.lru_cache(maxsize=4096)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    """A partner's public key, loaded once per process (loading decompresses the point, a
    third of the cost of a verification): keys are immutable, a revocation only hides them."""
    return Ed25519PublicKey.from_public_bytes(raw)


@dataclass(frozen=True)
class _FoundKeys:
    keys: dict[str, VerifyKey]
    partners: dict[str, PartnerInfo]

    def among(self, key_ids: frozenset[str]) -> _FoundKeys:
        return _FoundKeys(
            {k: v for k, v in self.keys.items() if k in key_ids},
            {k: v for k, v in self.partners.items() if k in key_ids},
        )


async def _active_keys(conn: AsyncConnection, key_ids: set[str], master_key: bytes) -> _FoundKeys:
    """The keys among ``key_ids`` that are not revoked, with their partners, in one query."""
    rows = await conn.execute(_ACTIVE_KEYS, {"key_ids": sorted(key_ids)})
    keys: dict[str, VerifyKey] = {}
    partners: dict[str, PartnerInfo] = {}
    for row in rows:
        material: bytes | Ed25519PublicKey
        if row.alg == "ed25519":
            try:
                material = _public_key(bytes(row.public_key))
            except ValueError:  # registration checks the key; a row changed since is skipped
                log.warning("partner key is not an Ed25519 public key", key=row.id)
                continue
        else:
            try:
                material = decrypt_secret(
                    master_key, row.id, row.secret_nonce, row.secret_ciphertext
                )
            except InvalidTag:
                log.warning("partner key secret does not decrypt under the master key", key=row.id)
                continue
        keys[row.id] = VerifyKey(row.id, row.alg, material)
        partners[row.id] = PartnerInfo(
            row.partner_id, row.kind, row.name, row.currency, row.shards, row.min_donation_points
        )
    return _FoundKeys(keys, partners)


async def _claim_nonces(
    conn: AsyncConnection, claims: Sequence[tuple[str, str, int]], now: int
) -> list[bool]:
    """Record each (key id, nonce, created) for its signature's window, in one statement; a
    nonce already on record is a replay (``False``), and so is the second of two requests of
    one group with the same nonce. A record whose window has passed (not yet purged) is taken
    over, not counted as a replay: a signature that old fails the ``created`` check first."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for key_id, nonce, created in claims:
        expires_at = dt.datetime.fromtimestamp(
            created + MAX_AGE_SECONDS + NONCE_MARGIN_SECONDS, dt.UTC
        )
        rows.setdefault(
            (key_id, nonce), {"key_id": key_id, "nonce": nonce, "expires_at": expires_at}
        )
    claim, parameters = _nonce_claims(conn.dialect, list(rows.values()))
    parameters["now"] = dt.datetime.fromtimestamp(now, dt.UTC)
    taken = {(row.key_id, row.nonce) for row in await conn.execute(claim, parameters)}
    first: set[tuple[str, str]] = set()
    outcome = []
    for key_id, nonce, _ in claims:
        fresh = (key_id, nonce) in taken and (key_id, nonce) not in first
        first.add((key_id, nonce))
        outcome.append(fresh)
    return outcome


async def purge_expired_nonces(conn: AsyncConnection, now: dt.datetime) -> int:
    """Forget nonces whose signatures can no longer verify anyway; returns how many."""
    result = await conn.execute(delete(SignatureNonce).where(SignatureNonce.expires_at <= now))
    return result.rowcount
