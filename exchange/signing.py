"""The exchange's own Ed25519 keys: they sign account heads, receipts, statements and responses.

The active key comes from ``EXCHANGE_SIGNING_KEY`` or, in development, is created once in the
data directory. Retired keys listed in ``EXCHANGE_VERIFY_KEYS`` are still published so that what
they signed keeps verifying after a rotation.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.settings import Settings, SettingsError


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """A stable id derived from the public key, so a key always has the same id wherever it runs."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "exchange-" + hashlib.sha256(raw).hexdigest()[:16]


def canonical_json(value: Any) -> bytes:
    """The bytes we sign: sorted keys, no spaces, UTF-8. Every signed document goes through this."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class ExchangeKeys:
    """The active signing key and every key a partner may still see a signature from."""

    signing_key: Ed25519PrivateKey
    key_id: str
    published: dict[str, Ed25519PublicKey]

    def sign(self, message: bytes) -> bytes:
        return self.signing_key.sign(message)

    def sign_document(self, document: dict[str, Any]) -> dict[str, str]:
        """A detached signature over the canonical JSON of ``document``."""
        signature = self.sign(canonical_json(document))
        return {
            "key_id": self.key_id,
            "alg": "ed25519",
            "signature": base64.b64encode(signature).decode(),
        }

    def public_jwks(self) -> list[dict[str, str]]:
        out = []
        for key_id, public in sorted(self.published.items()):
            pem = public.public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ).decode()
            out.append({"key_id": key_id, "alg": "ed25519", "public_key": pem})
        return out


def verify_document(
    document: dict[str, Any], signature: dict[str, str], public: Ed25519PublicKey
) -> bool:
    """Check a detached signature made by :meth:`ExchangeKeys.sign_document`."""
    from cryptography.exceptions import InvalidSignature

    try:
        public.verify(base64.b64decode(signature["signature"]), canonical_json(document))
    except (InvalidSignature, KeyError, ValueError):
        return False
    return True


def _private_from_pem(pem: bytes, where: str) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM; anything else is a one-line :class:`SettingsError`."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise SettingsError("SIGNING_KEY", f"{where} is not a PEM private key ({reason})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SettingsError("SIGNING_KEY", f"{where} is not an Ed25519 private key")
    return key


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        pem = path.read_bytes()
    except OSError as error:
        raise SettingsError("SIGNING_KEY", f"cannot read {path}: {error.strerror}") from None
    return _private_from_pem(pem, str(path))


def check_keys(settings: Settings) -> None:
    """Refuse, in one line, a configured signing or master key that cannot be used. Keys the
    service would make for development are not made here."""
    if settings.signing_key is not None or settings.signing_key_pem is not None:
        load_exchange_keys(settings)
    if settings.master_key:
        load_master_key(settings)


def _load_public(path: Path) -> Ed25519PublicKey:
    data = path.read_bytes()
    if b"PRIVATE KEY" in data:
        return _load_private(path).public_key()
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")
    return key


def _write_secret_file(path: Path, data: bytes) -> None:
    path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def load_exchange_keys(settings: Settings) -> ExchangeKeys:
    """Load the configured keys, creating the development key on first run."""
    path = settings.signing_key
    if settings.signing_key_pem is not None:
        private = _private_from_pem(settings.signing_key_pem, "the PEM in EXCHANGE_SIGNING_KEY")
        return _keys(private, settings)
    if path is None:
        path = settings.keys_dir / "signing-key.pem"
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            # Another process may have made it first; then theirs is the key.
            with contextlib.suppress(FileExistsError):
                _write_secret_file(path, pem)
    return _keys(_load_private(path), settings)


def _keys(private: Ed25519PrivateKey, settings: Settings) -> ExchangeKeys:
    published = {key_id_for(private.public_key()): private.public_key()}
    for extra in settings.verify_keys:
        public = _load_public(extra)
        published[key_id_for(public)] = public
    return ExchangeKeys(
        signing_key=private, key_id=key_id_for(private.public_key()), published=published
    )


def load_master_key(settings: Settings) -> bytes:
    """The 32-byte AES-GCM key that encrypts partner secrets at rest."""
    if settings.master_key:
        try:
            key = base64.b64decode(settings.master_key, validate=True)
        except ValueError:
            raise SettingsError("MASTER_KEY", "is not base64") from None
    else:
        path = settings.keys_dir / "master-key"
        if not path.exists():
            with contextlib.suppress(FileExistsError):
                _write_secret_file(path, base64.b64encode(os.urandom(32)))
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    if len(key) != 32:
        raise SettingsError("MASTER_KEY", "must be base64 of exactly 32 bytes")
    return key
