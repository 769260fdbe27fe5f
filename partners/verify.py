"""Checking what the exchange signed, as a partner does it (no server code): the same rules in
any language.

- **Documents** (transaction receipts, donation receipts, statements, account heads): the
  exchange signs the document's *canonical JSON*: keys sorted, no spaces (``,`` and ``:``
  separators), UTF-8 without ``\\u`` escapes for non-ASCII text. The detached signature is
  ``{"key_id", "alg": "ed25519", "signature": base64}``; the key is the one with that
  ``key_id`` at ``GET /v1/keys``. A statement's ``sha256`` is the hex SHA-256 of those bytes.
- **CSV statements**: the last line is ``#signature,<key_id>,ed25519,<base64>``; the signature
  is over every byte before that line (all lines with their ``\\r\\n`` endings).
- **Answers**: every response carries an RFC 9421 signature (``@status``, ``content-digest``,
  ``created``) by the exchange; :func:`partners.httpsig.verify_response` checks it, and the
  clients do so on every answer.

    keys = public_keys(client.request("GET", "/v1/keys").json())
    assert verify_document(answer["transaction"], answer["receipt"], keys)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SIGNATURE_LINE = "#signature,"


def canonical_json(value: Any) -> bytes:
    """The bytes the exchange signs: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def public_keys(published: Iterable[Any]) -> dict[str, Ed25519PublicKey]:
    """``GET /v1/keys`` (decoded JSON, or the SDK's ``PublicKey`` Structs) as key id -> key."""
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in published:
        key_id = entry["key_id"] if isinstance(entry, Mapping) else entry.key_id
        pem = entry["public_key"] if isinstance(entry, Mapping) else entry.public_key
        public = serialization.load_pem_public_key(pem.encode())
        if isinstance(public, Ed25519PublicKey):
            keys[key_id] = public
    return keys


def _verifies(public: Ed25519PublicKey | None, signature: str, message: bytes) -> bool:
    if public is None:
        return False
    try:
        public.verify(base64.b64decode(signature, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def verify_document(document: Any, signature: Any, keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """Whether ``signature`` (a dict or the SDK's ``DocumentSignature``) is the exchange's over
    the canonical JSON of ``document`` (a dict, or a Struct, taken as the JSON it encodes to)."""
    if not isinstance(document, Mapping):
        document = msgspec.to_builtins(document)
    fields = signature if isinstance(signature, Mapping) else msgspec.to_builtins(signature)
    if fields.get("alg", "ed25519") != "ed25519":
        return False
    message = canonical_json(document)
    return _verifies(keys.get(str(fields.get("key_id"))), str(fields.get("signature")), message)


def statement_sha256(statement: Mapping[str, Any]) -> str:
    """The hex SHA-256 the exchange records for a statement document (its canonical JSON)."""
    return hashlib.sha256(canonical_json(statement)).hexdigest()


def verify_csv_statement(text: str, keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """Whether a CSV statement's last line, ``#signature,<key_id>,ed25519,<b64>``, is the
    exchange's signature over every byte before that line."""
    start = text.rfind("\r\n" + SIGNATURE_LINE)
    if start < 0:
        return False
    body, last = text[: start + 2], text[start + 2 :].removesuffix("\r\n")
    fields = last[len(SIGNATURE_LINE) :].split(",")
    if len(fields) != 3 or fields[1] != "ed25519":
        return False
    return _verifies(keys.get(fields[0]), fields[2], body.encode())
