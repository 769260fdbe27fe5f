"""The SDK takes an Ed25519 key as an object or its PEM (str or bytes) and refuses a key that
does not fit its ``alg`` with a clear error (issue 16: a PEM with alg="ed25519" was taken as an
HMAC secret and failed with binascii.Error; PEM bytes raised TypeError)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from partners.client import ExchangeClient, KeyMaterialError
from partners.sdk_keys import signing_key

PRIVATE = Ed25519PrivateKey.generate()
PEM = PRIVATE.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
)
RAW = PRIVATE.private_bytes(
    serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
)


def _raw(key: object) -> bytes:
    assert isinstance(key, Ed25519PrivateKey)
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


@pytest.mark.parametrize("given", [PRIVATE, PEM, PEM.decode(), b"\n" + PEM])
def test_an_ed25519_key_as_object_pem_str_or_pem_bytes(given: object) -> None:
    assert _raw(signing_key("ed25519", given)) == RAW  # type: ignore[arg-type]
    with ExchangeClient("http://x", key_id="k", alg="ed25519", key=given) as client:  # type: ignore[arg-type]
        assert client._session.signer.key is not None


@pytest.mark.parametrize(
    ("alg", "given", "said"),
    [
        ("ed25519", base64.b64encode(b"s" * 32).decode(), "needs an Ed25519 private key"),
        ("ed25519", b"s" * 32, "needs an Ed25519 private key"),
        ("hmac-sha256", PEM.decode(), "use alg='ed25519'"),
        ("hmac-sha256", PEM, "use alg='ed25519'"),
        ("hmac-sha256", PRIVATE, "use alg='ed25519'"),
        ("hmac-sha256", "not base64!", "must be the base64"),
        ("rsa", PRIVATE, "alg must be"),
        ("ed25519", "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----\n", "not an"),
    ],
)
def test_a_key_that_does_not_fit_its_alg_is_refused_clearly(
    alg: str, given: object, said: str
) -> None:
    with pytest.raises(KeyMaterialError, match=said.replace("(", r"\(")):
        signing_key(alg, given)  # type: ignore[arg-type]


def test_a_pem_of_another_curve_is_named() -> None:
    p256 = generate_private_key(SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(KeyMaterialError, match="not an Ed25519 key"):
        signing_key("ed25519", p256)


def test_an_hmac_secret_as_printed_or_raw() -> None:
    assert signing_key("hmac-sha256", base64.b64encode(b"k" * 32).decode()) == b"k" * 32
    assert signing_key("hmac-sha256", b"k" * 32) == b"k" * 32
