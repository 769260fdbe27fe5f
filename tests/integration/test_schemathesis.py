"""Schemathesis over the whole OpenAPI document of a real exchange, every request signed.

The schema is the one the running server publishes (``/docs/openapi.json``); every operation in
it is exercised with positive and negative cases. Each request is signed at the last moment
(a ``requests`` auth hook over the prepared request, so the signature covers the exact bytes
sent) with ``partners.httpsig.sign_request``, in turn by the brand's ed25519 key, its HMAC key
and the operator's key (so operator-only routes are reached both ways), and each POST gets a
fresh Idempotency-Key. Some
cases have member refs and ids replaced by ones that exist (a member with points, a hold, a
transaction, a partner), so that answers other than 404 are checked too.

Checks: no 5xx (``not_a_server_error``), and the answer conforms to the schema: its status is
documented (``status_code_conformance``), its content type is the documented one
(``content_type_conformance``) and its body matches the documented schema
(``response_schema_conformance``). Every failure of every operation is collected, then reported
together (no shrinking: a failing case is reported as generated, with a curl command).

Runs on both databases: positive and negative cases on SQLite, positive ones on PostgreSQL
(negative cases are refused while the request is decoded and validated, before the database
matters; what differs between the databases is on the paths that post). The work is bounded
(``MAX_EXAMPLES`` per operation and mode, no deadline, derandomised so a run is repeatable) to
about 10-15 s per database on an idle machine.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.parties import PartnerInfo
from exchange.settings import Settings
from partners.client import AsyncExchangeClient
from partners.httpsig import sign_request
from tests.conftest import make_partner
from tests.integration.conftest import Credentials, register_key
from tests.integration.live_server import LiveServer, live_server

__all__ = ["live_server"]  # the fixture, imported for pytest

MAX_EXAMPLES = 10
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]


class SignEachRequest(requests.auth.AuthBase):
    """Sign the prepared request (method, raw path and query, body bytes) as the SDK does."""

    def __init__(self) -> None:
        self.signer: Credentials | None = None

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        assert self.signer is not None and request.method is not None
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        path, _, query = request.path_url.partition("?")
        if request.method == "POST":
            request.headers["Idempotency-Key"] = str(uuid.uuid4())
        request.headers.update(
            sign_request(
                method=request.method,
                path=path,
                query=query,
                authority=None,
                headers=dict(request.headers),
                body=body,
                key_id=self.signer.key_id,
                alg=self.signer.alg,
                key=self.signer.key,
                created=int(time.time()),
                nonce=secrets.token_urlsafe(16),
            )
        )
        return request


@dataclass
class Known:
    """Things that exist, to put in place of generated refs and ids now and then."""

    path: dict[str, list[str]] = field(default_factory=dict)
    body: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Finding:
    operation: str
    mode: str
    titles: tuple[str, ...]
    status: int
    report: str


async def seed(server: LiveServer, brand: Credentials, operator: Credentials) -> Known:
    """A member with points, a hold and a transaction of the brand; another enrolled member."""
    async with AsyncExchangeClient(
        server.base_url,
        key_id=brand.key_id,
        alg=brand.alg,
        key=brand.key,  # type: ignore[arg-type]
    ) as client:
        for ref in ("alice", "bob"):
            await client.enrol(ref)
        issued = await client.issue("alice", 1_000_000)
        hold = await client.hold("alice", 10)
    refs = ["alice", "bob"]
    return Known(
        path={
            "member_ref": refs,
            "hold_id": [str(hold.hold.id)],
            "transaction_id": [str(issued.transaction.id)],
            "partner_id": [str(brand.partner.id), str(operator.partner.id)],
        },
        body={"member_ref": refs, "from_member_ref": refs, "to_member_ref": refs},
    )


def operations(schema: Any) -> Iterator[Any]:
    for result in schema.get_all_operations():
        yield result.ok()


def exercise(
    operation: Any,
    mode: schemathesis.GenerationMode,
    *,
    base_url: str,
    session: requests.Session,
    auth: SignEachRequest,
    signers: list[Credentials],
    known: Known,
    findings: dict[tuple[str, tuple[str, ...]], Finding],
) -> tuple[int, int]:
    """Run one operation in one generation mode; returns how many cases were sent and how
    many of them were answered 2xx."""
    sent = succeeded = 0

    @hypothesis.given(case=operation.as_strategy(generation_mode=mode), data=st.data())
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any, data: st.DataObject) -> None:
        nonlocal sent, succeeded
        auth.signer = signers[sent % len(signers)]  # in turn: each signs a third of the cases
        for name, values in known.path.items():
            if name in (case.path_parameters or {}) and data.draw(st.booleans(), label=name):
                case.path_parameters[name] = data.draw(st.sampled_from(values))
        if isinstance(case.body, dict):
            for name, values in known.body.items():
                if name in case.body and data.draw(st.booleans(), label=name):
                    case.body[name] = data.draw(st.sampled_from(values))
        response = case.call(base_url=base_url, session=session)
        sent += 1
        succeeded += 200 <= response.status_code < 300
        try:
            case.validate_response(response, checks=CHECKS)
        except FailureGroup as group:
            titles = tuple(sorted({failure.title for failure in group.exceptions}))
            key = (operation.label, titles)
            if key not in findings:
                findings[key] = Finding(
                    operation.label, mode.value, titles, response.status_code, str(group)[:3000]
                )

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        # Nothing about the operation can be invalid (no parameters, no body): no negative case.
        if mode is not schemathesis.GenerationMode.NEGATIVE:
            raise
    return sent, succeeded


@pytest.fixture
async def signers(
    live_server: LiveServer,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    sky: PartnerInfo,
) -> list[Credentials]:
    operator = await make_partner(sessions, settings, "operator", "Coalition operator")
    return [
        await register_key(sessions, live_server.master_key, sky),
        await register_key(sessions, live_server.master_key, sky, "hmac-sha256"),
        await register_key(sessions, live_server.master_key, operator),
    ]


async def test_every_operation_conforms_to_the_published_schema(
    live_server: LiveServer, signers: list[Credentials], db_kind: str
) -> None:
    known = await seed(live_server, signers[0], signers[2])
    schema = schemathesis.openapi.from_url(f"{live_server.base_url}/docs/openapi.json")
    findings: dict[tuple[str, tuple[str, ...]], Finding] = {}
    auth = SignEachRequest()
    counts: dict[str, tuple[int, int]] = {}
    with requests.Session() as session:
        session.auth = auth
        for operation in operations(schema):
            for mode in MODES if db_kind == "sqlite" else MODES[:1]:
                counts[f"{operation.label} {mode.value}"] = exercise(
                    operation,
                    mode,
                    base_url=live_server.base_url,
                    session=session,
                    auth=auth,
                    signers=signers,
                    known=known,
                    findings=findings,
                )
    labels = {label.rsplit(" ", 1)[0] for label in counts}
    # the contract's calls are all in the schema, and each was exercised
    for expected in (
        "GET /v1/keys",
        "GET /v1/partners/me",
        "POST /v1/members",
        "GET /v1/members/{member_ref}",
        "GET /v1/members/{member_ref}/transactions",
        "POST /v1/issuances",
        "POST /v1/redemptions",
        "POST /v1/transfers",
        "POST /v1/holds",
        "POST /v1/holds/{hold_id}/capture",
        "POST /v1/holds/{hold_id}/void",
        "POST /v1/transactions/{transaction_id}/reversal",
        "GET /v1/transactions/{transaction_id}",
        "POST /v1/partners",
        "POST /v1/partners/{partner_id}/keys",
    ):
        assert expected in labels, sorted(labels)
    assert all(sent > 0 for label, (sent, _) in counts.items() if label.endswith("positive"))
    # the seeded refs and ids took some cases past the 404s
    for label in ("GET /v1/members/{member_ref}", "POST /v1/issuances", "POST /v1/holds"):
        assert counts[f"{label} positive"][1] > 0, (label, counts)
    assert not findings, "\n\n".join(
        f"{f.operation} [{f.mode}] {f.status}: {', '.join(f.titles)}\n{f.report}"
        for f in findings.values()
    )
