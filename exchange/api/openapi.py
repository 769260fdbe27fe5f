"""OpenAPI for the signed API: the headers every signed operation takes, added to the documented
parameters by an operation class (they are checked by middleware, not by handler parameters, so
documenting them costs nothing per request)."""

from __future__ import annotations

from dataclasses import dataclass

from litestar.enums import ParamType
from litestar.openapi.spec import Operation, Parameter, Schema
from litestar.openapi.spec.enums import OpenAPIType

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
