"""RFC 9421 HTTP Message Signatures and RFC 9530 Content-Digest, as pure functions.

The exchange verifies every partner request with :func:`verify_request` and signs every
response with :func:`sign_response`; the partner client does the reverse with
:func:`sign_request` and :func:`verify_response`. Nothing here does I/O: the caller resolves
keys, checks nonces for replay and supplies the clock.

Why not the ``http-message-signatures`` package for verification: its verifier is bound to one
algorithm (a partner's keys may mix ed25519 and hmac-sha256), reads the wall clock instead of an
injected ``now``, and refuses to choose among several signatures without a signed ``tag``,
whereas our policy is "any one signature that satisfies every rule". So the signature base is
built here by hand, with ``http_sf`` doing all Structured Field parsing and serialisation; the
RFC 9421 Appendix B vectors and the package itself (as an independent signer) are the tests.

Only the components this API needs are supported: ``@method``, ``@path``, ``@query``,
``@authority``, ``@status`` and plain header fields. A signature covering anything else (for
instance a component with parameters such as ``"content-digest";sf``) does not verify.

One module of some 800 lines, on purpose: it is one protocol, and requests and answers share
every piece of it (the parsing, the signature base, the serialiser, the checks of ``created``,
``expires`` and the digest). Split, each half would import the other's private helpers; whole,
it reads top to bottom as RFC 9421 does.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import http_sf
from cryptography.exceptions import InvalidSignature as _CryptoInvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from http_sf.innerlist import ser_innerlist
from http_sf.types import BareItemType

__all__ = [
    "DIGEST_ALGORITHMS",
    "MAX_SIGNATURES",
    "RequestBinding",
    "SignatureCandidate",
    "SignatureInvalid",
    "VerifiedSignature",
    "VerifyKey",
    "content_digest",
    "digest_matches",
    "parse_signatures",
    "sign_request",
    "sign_response",
    "signature_base",
    "verify_request",
    "verify_request_signatures",
    "verify_response",
]

#: RFC 9530 algorithms we produce and check; others in a Content-Digest field are ignored.
DIGEST_ALGORITHMS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}
#: Bound on the signatures examined per message, so a request cannot buy unbounded
#: cryptographic work by piling up labels.
MAX_SIGNATURES = 8

_DERIVED_COMPONENTS = {"@method", "@path", "@query", "@authority", "@status"}


class SignatureInvalid(Exception):
    """Any failure to parse or verify a signature. The message is for logs, never for clients."""


@dataclass(frozen=True)
class VerifyKey:
    """A key the caller resolved for a ``keyid``."""

    key_id: str
    alg: str  # "ed25519" or "hmac-sha256"
    material: bytes | Ed25519PublicKey
    """ed25519: the public key, or its raw 32 bytes; hmac-sha256: the shared secret."""


@dataclass(frozen=True)
class SignatureCandidate:
    """One signature: a label present in both ``Signature-Input`` and ``Signature``.

    ``components`` holds the covered component names in order; a component carrying
    parameters is kept in its serialised form (e.g. ``'"content-digest";sf'``) so that it
    never equals a plain name. ``params_serialized`` is the ``@signature-params`` value.
    """

    label: str
    key_id: str | None
    components: tuple[str, ...]
    params: dict[str, object]
    params_serialized: str = ""
    signature: bytes = field(default=b"", repr=False)


@dataclass(frozen=True)
class VerifiedSignature:
    """The signature that passed :func:`verify_request`. The caller must still check the
    nonce for replay (per key, within the ``created`` window)."""

    label: str
    key_id: str
    alg: str
    created: int
    expires: int | None
    nonce: str


# --------------------------------------------------------------------------- Content-Digest


def content_digest(body: bytes, alg: str = "sha-256") -> str:
    """Return a ``Content-Digest`` header value (RFC 9530) for ``body``."""
    try:
        hasher = DIGEST_ALGORITHMS[alg]
    except KeyError:
        raise ValueError(f"unsupported digest algorithm {alg!r}") from None
    return f"{alg}=:{base64.b64encode(hasher(body).digest()).decode()}:"


def digest_matches(header_value: str, body: bytes) -> bool:
    """Whether a ``Content-Digest`` value matches ``body``.

    At least one supported member (sha-256, sha-512) must be present and every supported
    member must match; members with other algorithms are ignored. Malformed input (including
    a repeated algorithm, which would otherwise silently keep only the last one) is False.
    """
    try:
        members = _parse_dictionary(header_value, "Content-Digest")
    except SignatureInvalid:
        return False
    checked = False
    for alg, member in members.items():
        hasher = DIGEST_ALGORITHMS.get(alg)
        if hasher is None:
            continue
        value = member[0] if isinstance(member, tuple) else member
        if not isinstance(value, bytes):
            return False
        if not hmac.compare_digest(value, hasher(body).digest()):
            return False
        checked = True
    return checked


# --------------------------------------------------------------------------- parsing


def _normalise_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-case the names; trim values and join repeated fields with ", " (RFC 9421 §2.1).

    ``items()`` is used so that multi-dicts yielding one pair per field line keep every line;
    names that differ only in case are likewise treated as lines of one field.
    """
    lines: dict[str, list[str]] = {}
    for name, value in headers.items():
        lines.setdefault(name.lower(), []).append(value.strip())
    return {name: ", ".join(values) for name, values in lines.items()}


def _reject_duplicate(key: str, context: str) -> None:
    # Structured Fields let the last duplicate win. For signatures that is an ambiguity an
    # attacker can exploit (the verifier and a logger may read different members), so refuse.
    raise SignatureInvalid(f"duplicate {context} key {key!r}")


def _parse_dictionary(value: str, name: str) -> dict[str, Any]:
    try:
        parsed = http_sf.parse(
            value.encode("ascii"), tltype="dictionary", on_duplicate_key=_reject_duplicate
        )
    # SignatureInvalid comes from _reject_duplicate; ValueError covers StructuredFieldError
    # and non-ASCII input.
    except (SignatureInvalid, ValueError) as exc:
        raise SignatureInvalid(f"malformed {name}: {exc}") from None
    if not isinstance(parsed, dict):  # pragma: no cover - tltype guarantees a dict
        raise SignatureInvalid(f"malformed {name}")
    return parsed


def _component_name(item: Any, label: str) -> str:
    value, params = item
    if not isinstance(value, str):
        raise SignatureInvalid(f"{label}: component identifiers must be strings")
    return value if not params else http_sf.ser((value, params))


# The one shape every conforming signer sends, in canonical form (one label, plain component
# names, parameters that are strings with nothing to escape, canonical integers or true),
# parsed with two regular expressions: the general parser (``http_sf``) cost a tenth of a
# signed request's time. Anything else, and any doubt, goes to ``http_sf``; a property test
# holds the two to the same result.
_SF_KEY = r"[a-z*][a-z0-9_.*-]*"
_SF_STRING = r'"[ !#-\[\]-~]*"'
_SF_PARAM = rf"(?:;{_SF_KEY}(?:=(?:{_SF_STRING}|0|-?[1-9][0-9]{{0,14}}))?)"
_CANONICAL_INPUT = re.compile(
    rf"({_SF_KEY})=(\((?:{_SF_STRING}(?: {_SF_STRING})*)?\)({_SF_PARAM}*))\Z"
)
_CANONICAL_SIGNATURE = re.compile(rf"({_SF_KEY})=:([A-Za-z0-9+/]*={{0,2}}):\Z")
_PARAM = re.compile(rf";({_SF_KEY})(?:=({_SF_STRING}|-?[0-9]+))?")
_NAMES = re.compile(_SF_STRING)


def _canonical_candidate(raw_input: str, raw_signature: str) -> SignatureCandidate | None:
    """The candidate of a canonical one-label pair of fields, or ``None`` (then ``http_sf``
    decides)."""
    found = _CANONICAL_INPUT.match(raw_input)
    signed = _CANONICAL_SIGNATURE.match(raw_signature)
    if found is None or signed is None or found.group(1) != signed.group(1):
        return None
    label, inner, raw_params = found.groups()
    params: dict[str, object] = {}
    for key, value in _PARAM.findall(raw_params):
        if key in params:
            return None  # a repeated parameter: the general parser's rules apply
        params[key] = True if not value else value[1:-1] if value[0] == '"' else int(value)
    try:
        signature = base64.b64decode(signed.group(2), validate=True)
    except ValueError:
        return None
    components = tuple(name[1:-1] for name in _NAMES.findall(inner[: len(inner) - len(raw_params)]))
    key_id = params.get("keyid")
    return SignatureCandidate(
        label=label,
        key_id=key_id if isinstance(key_id, str) else None,
        components=components,
        params=params,
        params_serialized=inner,
        signature=signature,
    )


def parse_signatures(headers: Mapping[str, str]) -> list[SignatureCandidate]:
    """Parse ``Signature-Input`` and ``Signature`` into one candidate per label.

    Header names are matched case-insensitively. A label present in only one of the two
    headers is skipped; malformed dictionaries, duplicate labels, or members of the wrong
    type raise :class:`SignatureInvalid`. Missing headers give an empty list.
    """
    fields = _normalise_headers(headers)
    raw_inputs, raw_signatures = fields.get("signature-input"), fields.get("signature")
    if raw_inputs is None or raw_signatures is None:
        return []
    canonical = _canonical_candidate(raw_inputs, raw_signatures)
    if canonical is not None:
        return [canonical]
    return _parsed_candidates(raw_inputs, raw_signatures)


def _parsed_candidates(raw_inputs: str, raw_signatures: str) -> list[SignatureCandidate]:
    """:func:`parse_signatures` by the general Structured Fields parser."""
    inputs = _parse_dictionary(raw_inputs, "Signature-Input")
    signatures = _parse_dictionary(raw_signatures, "Signature")
    candidates = []
    for label, member in inputs.items():
        if label not in signatures:
            continue
        items, params = member
        if not isinstance(items, list):
            raise SignatureInvalid(f"Signature-Input {label!r} is not an inner list")
        signature = signatures[label][0]
        if not isinstance(signature, bytes):
            raise SignatureInvalid(f"Signature {label!r} is not a byte sequence")
        key_id = params.get("keyid")
        candidates.append(
            SignatureCandidate(
                label=label,
                key_id=key_id if isinstance(key_id, str) else None,
                components=tuple(_component_name(item, label) for item in items),
                params=dict(params),
                # Re-serialising the parsed member reproduces what a conforming signer put in
                # its signature base (RFC 9421 §2.3), whatever whitespace the sender used.
                params_serialized=ser_innerlist((items, params)),
                signature=signature,
            )
        )
    return candidates


# --------------------------------------------------------------------------- signature base


def signature_base(
    components: Sequence[str],
    params_serialized: str,
    *,
    method: str | None = None,
    path: str | None = None,
    query: str | None = None,
    authority: str | None = None,
    status: int | None = None,
    headers: Mapping[str, str],
    request: RequestBinding | None = None,
) -> bytes:
    """Build the RFC 9421 §2.5 signature base.

    ``path`` is the request's absolute path as sent (still percent-encoded); ``query`` the
    raw query string without ``?``. ``request`` resolves the ``;req`` components of a
    response's signature (RFC 9421 §2.4). A component that cannot be resolved (not supported,
    absent from the message, repeated, or carrying characters that would forge extra lines)
    raises :class:`SignatureInvalid`.
    """
    fields = _normalise_headers(headers)
    derived = _derived(method, path, query, authority, status)
    lines = []
    seen = set()
    for name in components:
        if name in seen:
            raise SignatureInvalid(f"component {name!r} covered twice")
        seen.add(name)
        if name.endswith(_REQ):
            value, identifier = _request_component(name, request), name
        else:
            value, identifier = _component_value(name, derived, fields), http_sf.ser(name)
        if value is None:
            raise SignatureInvalid(f"component {name!r} not present in the message")
        if "\n" in value or "\r" in value:
            raise SignatureInvalid(f"component {name!r} contains a line break")
        lines.append(f"{identifier}: {value}")
    lines.append(f'"@signature-params": {params_serialized}')
    try:
        return "\n".join(lines).encode("ascii")
    except UnicodeEncodeError:
        raise SignatureInvalid("signature base is not ASCII") from None


@dataclass(frozen=True)
class RequestBinding:
    """The request an answer is for, as its sender sent it: what a response's ``;req``
    components (RFC 9421 §2.4) cover. ``signature`` is the request's ``Signature`` field,
    ``None`` for an unsigned request; ``query`` is the raw query without ``?``."""

    method: str
    path: str
    query: str
    signature: str | None

    @classmethod
    def sent(cls, method: str, target: str, signature: str | None) -> RequestBinding:
        """From the request target as sent (``/v1/x?y=1``, still percent-encoded)."""
        path, _, query = target.partition("?")
        return cls(method.upper(), path or "/", query, signature)

    def components(self) -> list[str]:
        """The ``;req`` components an answer to this request covers, in order."""
        names = ['"@method";req', '"@path";req']
        if self.query:
            names.append('"@query";req')
        if self.signature is not None:
            names.append('"signature";req')
        return names


_REQ = ";req"


def _derived(
    method: str | None,
    path: str | None,
    query: str | None,
    authority: str | None,
    status: int | None,
) -> dict[str, str | None]:
    return {
        "@method": method.upper() if method is not None else None,
        "@path": (path or "/") if path is not None else None,
        "@query": "?" + query if query is not None else None,
        "@authority": authority.lower() if authority is not None else None,
        "@status": str(status) if status is not None else None,
    }


def _component_value(
    name: str, derived: Mapping[str, str | None], fields: Mapping[str, str]
) -> str | None:
    if name in _DERIVED_COMPONENTS:
        return derived[name]
    if name.startswith("@") or name != name.lower() or not name or '"' in name:
        raise SignatureInvalid(f"unsupported component {name!r}")
    return fields.get(name)


def _request_component(name: str, request: RequestBinding | None) -> str | None:
    """The value of ``"@method";req`` and the like, from the request an answer is for. Only
    the serialised forms our own signer writes are accepted (parsing keeps a component with
    parameters in its serialised form)."""
    if request is None:
        raise SignatureInvalid(f"{name} needs the request the answer is for")
    if name == '"signature";req':
        return request.signature.strip() if request.signature is not None else None
    base = name.removesuffix(_REQ)
    if base not in ('"@method"', '"@path"', '"@query"'):
        raise SignatureInvalid(f"unsupported component {name!r}")
    derived = _derived(request.method, request.path, request.query, None, None)
    return derived[base.strip('"')]


# --------------------------------------------------------------------------- crypto


def _sign(alg: str, key: bytes | Ed25519PrivateKey, data: bytes) -> bytes:
    if alg == "ed25519":
        if not isinstance(key, Ed25519PrivateKey):
            raise TypeError("ed25519 signing needs an Ed25519PrivateKey")
        return key.sign(data)
    if alg == "hmac-sha256":
        if not isinstance(key, bytes):
            raise TypeError("hmac-sha256 signing needs the secret as bytes")
        return hmac.new(key, data, hashlib.sha256).digest()
    raise ValueError(f"unsupported signature algorithm {alg!r}")


#: What an unknown, revoked or mismatched key is verified against, so that such a request costs
#: the same Ed25519 verification as a known key with a bad signature (no key-id oracle by timing).
#: Raw bytes, as a registered key's material is, so that it is loaded the same way too.
_DUMMY_KEY = (
    Ed25519PrivateKey.from_private_bytes(b"\x01" * 32)
    .public_key()
    .public_bytes(Encoding.Raw, PublicFormat.Raw)
)


def _verify(alg: str, material: bytes | Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    if alg == "hmac-sha256" and isinstance(material, bytes):
        expected = hmac.new(material, data, hashlib.sha256).digest()
        return hmac.compare_digest(expected, signature)
    if alg == "ed25519":
        try:
            public = (
                material
                if isinstance(material, Ed25519PublicKey)
                else Ed25519PublicKey.from_public_bytes(material)
            )
            public.verify(signature, data)
        except (_CryptoInvalidSignature, ValueError):
            return False
        return True
    return False


# Serialising what we sign is written out here rather than left to ``http_sf``: every request
# and every answer does it, and the general serialiser was a tenth of a request's time. It takes
# only what signers here produce (component names and parameters that are strings or integers,
# a key that is a token, a byte-sequence signature), and is held byte-equal to ``http_sf`` by
# tests/unit/test_httpsig.py. Parsing, where the input is the caller's, stays with ``http_sf``.
_KEY = re.compile(r"^[a-z*][a-z0-9_.*-]*$")


def _ser_string(value: str) -> str:
    if not all(" " <= char <= "~" for char in value):
        raise ValueError(f"not a Structured Field string: {value!r}")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _ser_key(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"not a Structured Field key: {key!r}")
    return key


def _ser_param(key: str, value: BareItemType) -> str:
    if value is True:
        return ";" + _ser_key(key)
    if isinstance(value, int) and not isinstance(value, bool):
        if not -999_999_999_999_999 <= value <= 999_999_999_999_999:
            raise ValueError(f"integer out of range: {value}")
        return f";{_ser_key(key)}={value}"
    if isinstance(value, str):
        return f";{_ser_key(key)}={_ser_string(value)}"
    raise ValueError(f"unsupported parameter value {value!r}")


_SERIALISED_REQ = re.compile(r'"[!#-\[\]-~]*";req\Z')
"""A component given in its serialised form with the ``req`` parameter (``"@method";req``)."""


def _ser_component(name: str) -> str:
    # Kept as given only when it is a whole serialised ``"...";req``: any other name, even one
    # that merely ends in ``;req``, is a string like every component name.
    return name if _SERIALISED_REQ.match(name) else _ser_string(name)


def _signature_params(components: Sequence[str], params: dict[str, BareItemType]) -> str:
    """The inner list ``("@method" "@path" ...);created=...;keyid="..."``, as RFC 9421 §2.3
    puts it in the signature base and in ``Signature-Input``."""
    inner = " ".join(_ser_component(name) for name in components)
    return f"({inner})" + "".join(_ser_param(key, value) for key, value in params.items())


def _serialise_signature_headers(
    label: str, components: Sequence[str], params: dict[str, BareItemType], signature: bytes
) -> tuple[str, str]:
    try:
        signature_input = f"{_ser_key(label)}={_signature_params(components, params)}"
    except (ValueError, TypeError) as exc:
        raise ValueError(f"cannot serialise signature input: {exc}") from None
    return signature_input, f"{label}=:{base64.b64encode(signature).decode()}:"


# --------------------------------------------------------------------------- requests


def _check_request_candidate(
    candidate: SignatureCandidate,
    *,
    method: str,
    path: str,
    query: str,
    authority: str | None,
    fields: Mapping[str, str],
    body: bytes,
    keys: Mapping[str, VerifyKey],
    now: int,
    max_age: int,
    max_future: int,
) -> VerifiedSignature:
    """Apply every rule of the signed API to one signature; raise on the first broken one."""
    params = candidate.params
    key_id, created, nonce = candidate.key_id, params.get("created"), params.get("nonce")
    expires = params.get("expires")
    if not key_id:
        raise SignatureInvalid("missing keyid")
    # type() rather than isinstance(): a bare ";created" flag parses as True, a bool.
    if type(created) is not int:
        raise SignatureInvalid("missing or non-integer created")
    if not isinstance(nonce, str) or not nonce:
        raise SignatureInvalid("missing nonce")
    if created > now + max_future:
        raise SignatureInvalid("created is in the future")
    if created < now - max_age:
        raise SignatureInvalid("created is too old")
    if expires is not None and (type(expires) is not int or expires <= now):
        raise SignatureInvalid("expired")

    _check_coverage(candidate, method=method, query=query, fields=fields, body=body)
    base = signature_base(
        candidate.components,
        candidate.params_serialized,
        method=method,
        path=path,
        query=query,
        authority=authority,
        headers=fields,
    )
    key = keys.get(key_id)
    if key is None:
        refusal = f"unknown keyid {key_id!r}"
    elif "alg" in params and params["alg"] != key.alg:
        refusal = f"alg {params['alg']!r} is not the key's {key.alg!r}"
    else:
        refusal = None
    if key is None or refusal is not None:
        # The same Ed25519 verification as a known key's, so that timing tells nothing.
        _verify("ed25519", _DUMMY_KEY, base, candidate.signature)
        raise SignatureInvalid(refusal)
    if not _verify(key.alg, key.material, base, candidate.signature):
        raise SignatureInvalid("signature does not verify")
    return VerifiedSignature(
        label=candidate.label,
        key_id=key_id,
        alg=key.alg,
        created=created,
        expires=expires,
        nonce=nonce,
    )


def _check_coverage(
    candidate: SignatureCandidate,
    *,
    method: str,
    query: str,
    fields: Mapping[str, str],
    body: bytes,
) -> None:
    """The components SPEC §4 requires are covered, and the covered digest matches the body."""
    required = ["@method", "@path"]
    if query:
        required.append("@query")
    if body:
        required.append("content-digest")
    if method.upper() == "POST" and "idempotency-key" in fields:
        required.append("idempotency-key")
    missing = [name for name in required if name not in candidate.components]
    if missing:
        raise SignatureInvalid(f"components not covered: {missing}")
    if "content-digest" in candidate.components:
        digest = fields.get("content-digest")
        if digest is None or not digest_matches(digest, body):
            raise SignatureInvalid("content-digest does not match the body")


def verify_request(
    *,
    method: str,
    path: str,
    query: str,
    authority: str | None,
    headers: Mapping[str, str],
    body: bytes,
    keys: Mapping[str, VerifyKey],
    now: int,
    max_age: int = 300,
    max_future: int = 30,
) -> VerifiedSignature:
    """Verify a partner request; pass if any one signature satisfies every rule (the first
    of :func:`verify_request_signatures`)."""
    return verify_request_signatures(
        method=method,
        path=path,
        query=query,
        authority=authority,
        headers=headers,
        body=body,
        keys=keys,
        now=now,
        max_age=max_age,
        max_future=max_future,
    )[0]


def verify_request_signatures(
    *,
    method: str,
    path: str,
    query: str,
    authority: str | None,
    headers: Mapping[str, str],
    body: bytes,
    keys: Mapping[str, VerifyKey],
    now: int,
    max_age: int = 300,
    max_future: int = 30,
) -> list[VerifiedSignature]:
    """Every signature of a partner request that satisfies every rule, in label order; at
    least one, or :class:`SignatureInvalid` with each signature's reason in the message.

    The rules (SPEC §4): it covers ``@method``, ``@path``, ``@query`` when ``query`` is
    non-empty, ``content-digest`` when ``body`` is non-empty (the digest matching the body)
    and ``idempotency-key`` on a POST that has one; it has ``created``, ``keyid`` and a
    non-empty string ``nonce``; ``created`` lies in ``[now - max_age, now + max_future]``;
    ``expires``, if present, is after ``now``; the ``keyid`` is in ``keys``; ``alg``, if
    present, is the key's; and the signature verifies. Every candidate is examined, so the
    caller can claim the nonce of each one that verifies (a request signed twice cannot be
    replayed with one label dropped). Replay (the nonces) is the caller's to check.
    """
    candidates = parse_signatures(headers)
    if not candidates:
        raise SignatureInvalid("no signature")
    if len(candidates) > MAX_SIGNATURES:
        raise SignatureInvalid(f"more than {MAX_SIGNATURES} signatures")
    fields = _normalise_headers(headers)
    verified, reasons = [], []
    for candidate in candidates:
        try:
            verified.append(
                _check_request_candidate(
                    candidate,
                    method=method,
                    path=path,
                    query=query,
                    authority=authority,
                    fields=fields,
                    body=body,
                    keys=keys,
                    now=now,
                    max_age=max_age,
                    max_future=max_future,
                )
            )
        except SignatureInvalid as exc:
            reasons.append(f"{candidate.label}: {exc}")
    if not verified:
        raise SignatureInvalid("; ".join(reasons))
    return verified


def sign_request(
    *,
    method: str,
    path: str,
    query: str,
    authority: str | None,
    headers: Mapping[str, str],
    body: bytes,
    key_id: str,
    alg: str,
    key: bytes | Ed25519PrivateKey,
    created: int,
    nonce: str,
    expires: int | None = None,
    label: str = "sig1",
    include_alg: bool = True,
) -> dict[str, str]:
    """Sign a request; return the headers to add.

    Covers ``@method``, ``@path``, ``@query`` (when ``query`` is non-empty) and
    ``content-digest`` (when ``body`` is non-empty, in which case a sha-256
    ``Content-Digest`` is among the returned headers and replaces any in ``headers``) and,
    on a POST, ``idempotency-key`` when ``headers`` has one.
    ``authority`` is accepted for symmetry with :func:`verify_request` but not covered.
    The returned ``Signature-Input``/``Signature`` replace any the message already had.
    Bad arguments (unknown ``alg``, wrong key type, invalid label) raise ``ValueError`` or
    ``TypeError``: they are programming errors, not signature failures.
    """
    del authority  # not in the component set SPEC §4 requires, so not signed
    components = ["@method", "@path"]
    if query:
        components.append("@query")
    added: dict[str, str] = {}
    fields = _normalise_headers(headers)
    if method.upper() == "POST" and "idempotency-key" in fields:
        components.append("idempotency-key")
    if body:
        components.append("content-digest")
        added["Content-Digest"] = fields["content-digest"] = content_digest(body)
    params: dict[str, BareItemType] = {"created": created, "keyid": key_id}
    if include_alg:
        params["alg"] = alg
    if expires is not None:
        params["expires"] = expires
    params["nonce"] = nonce
    base = signature_base(
        components,
        _signature_params(components, params),
        method=method,
        path=path,
        query=query,
        headers=fields,
    )
    signature = _sign(alg, key, base)
    added["Signature-Input"], added["Signature"] = _serialise_signature_headers(
        label, components, params, signature
    )
    return added


# --------------------------------------------------------------------------- responses


def sign_response(
    *,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    key_id: str,
    key: Ed25519PrivateKey,
    created: int,
    request: RequestBinding | None = None,
    label: str = "exchange",
) -> dict[str, str]:
    """Sign a response with the exchange's Ed25519 key; return the headers to add.

    Always adds a sha-256 ``Content-Digest`` (even for an empty body, so that a partner's
    proof pins the body either way) and covers ``@status``, ``content-digest`` and, with
    ``request``, the request it answers (:meth:`RequestBinding.components`), so that the
    answer cannot be passed off as the answer to another request.
    """
    components = ["@status", "content-digest"]
    if request is not None:
        components += request.components()
    fields = _normalise_headers(headers)
    digest = fields["content-digest"] = content_digest(body)
    params: dict[str, BareItemType] = {"created": created, "keyid": key_id, "alg": "ed25519"}
    base = signature_base(
        components,
        _signature_params(components, params),
        status=status,
        headers=fields,
        request=request,
    )
    signature_input, signature = _serialise_signature_headers(
        label, components, params, _sign("ed25519", key, base)
    )
    return {"Content-Digest": digest, "Signature-Input": signature_input, "Signature": signature}


def _response_refusal(
    candidate: SignatureCandidate,
    *,
    public_keys: Mapping[str, Ed25519PublicKey | bytes],
    request: RequestBinding | None,
    current: int,
    max_age: int | None,
    max_future: int,
) -> str | None:
    """Why ``candidate`` cannot be the exchange's signature on this answer (before the
    cryptography), or ``None``."""
    params = candidate.params
    created, expires = params.get("created"), params.get("expires")
    required = ["@status", "content-digest", *(request.components() if request else [])]
    missing = [name for name in required if name not in candidate.components]
    if missing:
        return f"components not covered: {missing}"
    if candidate.key_id is None or candidate.key_id not in public_keys:
        return f"unknown keyid {candidate.key_id!r}"
    if params.get("alg", "ed25519") != "ed25519":
        return "alg is not ed25519"
    if expires is not None and (type(expires) is not int or expires <= current):
        return "expired"
    if max_age is not None and (
        type(created) is not int or not current - max_age <= created <= current + max_future
    ):
        return "created missing or outside the window"
    return None


def verify_response(
    *,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    public_keys: Mapping[str, Ed25519PublicKey | bytes],
    now: int | None = None,
    max_age: int | None = None,
    max_future: int = 30,
    request: RequestBinding | None = None,
) -> str:
    """Verify the exchange's signature on a response; return the ``keyid`` that verified.

    A signature counts if it covers ``@status`` and ``content-digest`` and, with ``request``
    (the request as it was sent), ``"@method";req``, ``"@path";req``, ``"@query";req`` when
    there is a query and ``"signature";req`` when it was signed, each equal to what was
    sent; the digest matches ``body``; its ``keyid`` is in ``public_keys`` (Ed25519 public
    keys, or their raw bytes); ``alg`` if present is ``ed25519``; ``expires`` if present is
    after ``now``; and it verifies. With ``max_age``, ``created`` is also required within
    ``[now - max_age, now + max_future]``. ``now`` defaults to the current time.
    """
    candidates = parse_signatures(headers)
    if not candidates:
        raise SignatureInvalid("no signature")
    if len(candidates) > MAX_SIGNATURES:
        raise SignatureInvalid(f"more than {MAX_SIGNATURES} signatures")
    current = int(time.time()) if now is None else now
    fields = _normalise_headers(headers)
    digest = fields.get("content-digest")
    if digest is None or not digest_matches(digest, body):
        raise SignatureInvalid("content-digest missing or does not match the body")
    reasons = []
    for candidate in candidates:
        refusal = _response_refusal(
            candidate,
            public_keys=public_keys,
            request=request,
            current=current,
            max_age=max_age,
            max_future=max_future,
        )
        if refusal is not None:
            reasons.append(f"{candidate.label}: {refusal}")
            continue
        try:
            base = signature_base(
                candidate.components,
                candidate.params_serialized,
                status=status,
                headers=fields,
                request=request,
            )
        except SignatureInvalid as exc:
            reasons.append(f"{candidate.label}: {exc}")
            continue
        assert candidate.key_id is not None  # _response_refusal checked it
        if _verify("ed25519", public_keys[candidate.key_id], base, candidate.signature):
            return candidate.key_id
        reasons.append(f"{candidate.label}: signature does not verify")
    raise SignatureInvalid("; ".join(reasons))
