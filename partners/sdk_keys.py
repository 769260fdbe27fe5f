"""What a partner signs with, as the SDK takes it: one clear rule per algorithm.

- ``alg="ed25519"``: an ``Ed25519PrivateKey``, or its PEM (PKCS#8, unencrypted) as ``str`` or
  ``bytes``. Anything else, an HMAC secret included, is refused.
- ``alg="hmac-sha256"``: the secret the exchange printed once (base64 ``str``) or its raw
  ``bytes``. A PEM or a key object is refused: it is surely an Ed25519 key given with the
  wrong ``alg``, and taking it as a secret would only fail later, at the exchange, with a 401.

A refusal is a :class:`KeyMaterialError` (a ``ValueError``) that says what was expected.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

KeyMaterial = bytes | str | Ed25519PrivateKey
"""What a client is given as ``key``."""


class KeyMaterialError(ValueError):
    """The key given to a client does not fit its ``alg``."""


def _looks_like_pem(key: bytes | str) -> bool:
    text = key.decode("ascii", "replace") if isinstance(key, bytes) else key
    return text.lstrip().startswith("-----BEGIN")


def _ed25519(key: KeyMaterial) -> Ed25519PrivateKey:
    if isinstance(key, Ed25519PrivateKey):
        return key
    if not _looks_like_pem(key):
        raise KeyMaterialError(
            "alg='ed25519' needs an Ed25519 private key: an Ed25519PrivateKey, or its PEM as str"
            " or bytes ('-----BEGIN PRIVATE KEY-----...'); for a shared secret use"
            " alg='hmac-sha256'"
        )
    pem = key.encode() if isinstance(key, str) else key
    try:
        loaded = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        raise KeyMaterialError(f"the PEM is not an unencrypted private key: {error}") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise KeyMaterialError(f"the PEM holds a {type(loaded).__name__}, not an Ed25519 key")
    return loaded


def _hmac_secret(key: KeyMaterial) -> bytes:
    if isinstance(key, Ed25519PrivateKey) or _looks_like_pem(key):
        raise KeyMaterialError(
            "alg='hmac-sha256' needs the shared secret the exchange printed (base64 str) or its"
            " bytes; this is an Ed25519 private key: use alg='ed25519'"
        )
    if isinstance(key, bytes):
        return key
    try:
        return base64.b64decode(key, validate=True)
    except binascii.Error:
        raise KeyMaterialError(
            "an hmac-sha256 secret given as str must be the base64 the exchange printed"
        ) from None


def signing_key(alg: str, key: KeyMaterial) -> bytes | Ed25519PrivateKey:
    """``key`` as the signer uses it for ``alg`` (see the module's rules)."""
    if alg == "ed25519":
        return _ed25519(key)
    if alg == "hmac-sha256":
        return _hmac_secret(key)
    raise KeyMaterialError(f"alg must be 'ed25519' or 'hmac-sha256', not {alg!r}")
