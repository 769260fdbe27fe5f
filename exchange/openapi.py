"""OpenAPI for the signed API, shared by every feature's controllers: the problem documents,
and the headers every signed operation takes, added to the documented parameters by an
operation class (they are checked by middleware, not by handler parameters, so
documenting them costs nothing per request)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
from litestar.enums import ParamType
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Operation, Parameter, Schema
from litestar.openapi.spec.enums import OpenAPIType

PROBLEM_MEDIA_TYPE = "application/problem+json"
_STRING = Schema(type=OpenAPIType.STRING)

SIGNATURE_PARAMETERS: tuple[Parameter, ...] = (
    Parameter(
        name="Signature-Input",
        param_in=ParamType.HEADER,
        required=True,
        schema=_STRING,
        description=(
            "RFC 9421. Must cover `@method`, `@path`, `@query` (when there is a query) and"
            " `content-digest` (when there is a body), with parameters `created` (at most 300 s"
            " old, 30 s ahead), `keyid`, a `nonce` never used before with that key, and"
            " optionally `alg` (the key's) and `expires`. Failures are all the same 401."
        ),
    ),
    Parameter(
        name="Signature",
        param_in=ParamType.HEADER,
        required=True,
        schema=_STRING,
        description="RFC 9421 signature by one of the partner's active keys.",
    ),
    Parameter(
        name="Content-Digest",
        param_in=ParamType.HEADER,
        required=False,
        schema=_STRING,
        description="RFC 9530 (sha-256 or sha-512) of the body; required when there is one.",
    ),
)

IDEMPOTENCY_PARAMETER = Parameter(
    name="Idempotency-Key",
    param_in=ParamType.HEADER,
    required=True,
    schema=Schema(type=OpenAPIType.STRING, max_length=255),
    description=(
        'draft-ietf-httpapi-idempotency-key-header: a Structured Field string (`"..."`) or a'
        " bare token such as a UUID, at most 255 characters, scoped to the partner and kept"
        " 24 hours. The same key and request replays the first 2xx answer; another request is"
        " a 422 idempotency-conflict; while the first is running, 409 idempotency-in-flight."
        " Failed requests are not recorded: retry them with the same key."
    ),
)


@dataclass
class SignedOperation(Operation):
    """An operation of the signed API: documents the signature headers."""

    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or ()), *SIGNATURE_PARAMETERS]


@dataclass
class IdempotentOperation(Operation):
    """A signed POST: documents the signature headers and ``Idempotency-Key``."""

    def __post_init__(self) -> None:
        self.parameters = [*(self.parameters or ()), *SIGNATURE_PARAMETERS, IDEMPOTENCY_PARAMETER]


class ProblemDetail(msgspec.Struct, omit_defaults=True):
    """An RFC 9457 problem, as documented in the OpenAPI schema. Further members carry the
    facts of the cause (for instance ``available`` and ``requested`` for insufficient-points,
    ``errors`` for invalid-request)."""

    type: str
    title: str
    status: int
    detail: str | None = None


def problem_spec(description: str) -> ResponseSpec:
    """An OpenAPI problem response naming the causes one operation can answer with."""
    return ResponseSpec(
        data_container=ProblemDetail,
        description=description,
        media_type=PROBLEM_MEDIA_TYPE,
        generate_examples=False,
    )


def problem_responses(*statuses: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the problems a signed operation can answer with: ``statuses`` and
    those every signed operation can give (400, 401, 422, 500)."""
    return {status: _PROBLEM_SPECS[status] for status in sorted({400, 401, 422, 500, *statuses})}


_PROBLEM_SPECS = {
    400: problem_spec(
        "bad-request (for instance a body that is not JSON); on a POST also"
        " idempotency-key-missing and idempotency-key-invalid"
    ),
    401: problem_spec(
        "signature-invalid: the request signature did not verify (always the same body,"
        " whatever the reason)"
    ),
    403: problem_spec(
        "not-a-brand, or operator-only: the caller's kind may not do this;"
        " not-reversible-by-you: only the partner that made a transaction may reverse it"
    ),
    404: problem_spec(
        "member-not-found, hold-not-found, transaction-not-found, partner-not-found, key-not-found"
    ),
    409: problem_spec("idempotency-in-flight (retry later), hold-not-active"),
    422: problem_spec(
        "invalid-request (with the field errors), invalid-amount, invalid-input; on operations"
        " also insufficient-points, reversal-exceeds-original, not-reversible, and on a POST"
        " idempotency-conflict"
    ),
    500: problem_spec("internal-error: nothing was committed; retry with the same Idempotency-Key"),
}
