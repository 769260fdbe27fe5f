"""The operator's command line, run for real (``litestar partners ...`` in a subprocess), on
SQLite: each command starts a Python process of its own, which is what costs here, and the
database work behind it is tested on both databases elsewhere. ``ledger verify`` is run on both
in ``test_verify.py``.

Every command prints JSON on stdout; a refusal prints a JSON problem on stderr and exits 1."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ec import SECP256R1, generate_private_key
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.settings import Settings
from partners.service import decrypt_secret
from tests.conftest import base_settings
from tests.integration.operator_cli import litestar

MASTER_KEY = bytes(range(32))


@pytest.fixture
def cli_settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    """A migrated SQLite database in a data directory of its own."""
    shutil.copy(sqlite_template, tmp_path / "exchange.sqlite3")
    return base_settings(tmp_path, None)


@pytest.fixture
def db(cli_settings: Settings) -> Iterator[sqlite3.Connection]:
    connection = sqlite3.connect(cli_settings.data_dir / "exchange.sqlite3")
    yield connection
    connection.close()


ENV = {
    "EXCHANGE_ISSUANCE_SHARDS": "2",
    "EXCHANGE_MASTER_KEY": base64.b64encode(MASTER_KEY).decode(),
}


def answer(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON a command printed on success."""
    assert done.returncode == 0, (done.stdout, done.stderr)
    printed: dict[str, Any] = json.loads(done.stdout)
    return printed


def refusal(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The JSON problem a refused command printed on stderr (exit 1, nothing on stdout)."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""
    problem: dict[str, Any] = json.loads(done.stderr.strip().splitlines()[-1])
    return problem


def run(settings: Settings, *args: str) -> dict[str, Any]:
    return answer(litestar(settings, *args, env=ENV))


def at_once(
    settings: Settings, *commands: tuple[str, ...]
) -> list[subprocess.CompletedProcess[str]]:
    """Independent commands in parallel: each one spends most of its time starting Python."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: litestar(settings, *args, env=ENV), commands))


def accounts_of(db: sqlite3.Connection, partner_id: str) -> list[tuple[str, str, int]]:
    return db.execute(
        "SELECT kind, ledger, shard FROM account WHERE partner_id = ? ORDER BY kind, shard",
        (uuid.UUID(partner_id).hex,),
    ).fetchall()


def test_a_brand_is_onboarded_with_its_keys(
    cli_settings: Settings, db: sqlite3.Connection, tmp_path: Path
) -> None:
    """Sky Air is created; then, at once: a second SKY is refused, an Ed25519 key and an HMAC key
    are added, and a P-256 key passed off as Ed25519 is refused; then the HMAC key is revoked."""
    brand = run(cli_settings, "partners", "create", "--kind", "brand", "--name", "Sky Air",
                "--currency", "sky")  # fmt: skip
    assert uuid.UUID(brand["id"])
    assert {k: v for k, v in brand.items() if k != "id"} == {
        "kind": "brand", "name": "Sky Air", "currency": "SKY", "min_donation_points": None,
    }  # fmt: skip
    # Its breakage account and two issuance shards on its own SKY ledger, two settlement
    # shards on the money ledger.
    assert accounts_of(db, brand["id"]) == [
        ("breakage", "SKY", 0), ("issuance", "SKY", 0), ("issuance", "SKY", 1),
        ("settlement", "EUR", 0), ("settlement", "EUR", 1),
    ]  # fmt: skip
    partner_hex = uuid.UUID(brand["id"]).hex

    private = Ed25519PrivateKey.generate()
    ed_pem = tmp_path / "partner.pem"
    ed_pem.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    p256_pem = tmp_path / "p256.pem"
    p256_pem.write_bytes(
        generate_private_key(SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    add_key = ("partners", "add-key", brand["id"], "--alg")
    copycat, ed, hm, not_ed = at_once(
        cli_settings,
        ("partners", "create", "--kind", "brand", "--name", "Copycat", "--currency", "SKY"),
        (*add_key, "ed25519", "--public-key", str(ed_pem)),
        (*add_key, "hmac-sha256"),
        (*add_key, "ed25519", "--public-key", str(p256_pem)),
    )
    assert refusal(copycat) == {"type": "invalid-input", "detail": "currency SKY is taken"}
    assert db.execute("SELECT COUNT(*), MIN(name) FROM partner").fetchone() == (1, "Sky Air")
    assert refusal(not_ed) == {
        "type": "invalid-input", "detail": "the public key is not an Ed25519 key",
    }  # fmt: skip

    # Ed25519: the partner keeps its private key; the exchange stores the raw public key.
    ed_key = answer(ed)
    assert (ed_key["partner_id"], ed_key["alg"]) == (brand["id"], "ed25519")
    assert "secret" not in ed_key
    assert ed_key["key_id"].startswith(partner_hex[:8] + "-")
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert db.execute(
        "SELECT partner_id, alg, public_key, secret_ciphertext, revoked_at FROM partner_key"
        " WHERE id = ?",
        (ed_key["key_id"],),
    ).fetchone() == (partner_hex, "ed25519", raw, None, None)

    # HMAC: the exchange makes the secret, shows it once, and keeps only its ciphertext.
    hm_key = answer(hm)
    secret = base64.b64decode(hm_key["secret"], validate=True)
    assert len(secret) == 32
    assert "once" in hm_key["note"]
    nonce, ciphertext, public = db.execute(
        "SELECT secret_nonce, secret_ciphertext, public_key FROM partner_key WHERE id = ?",
        (hm_key["key_id"],),
    ).fetchone()
    assert public is None
    assert ciphertext != secret and secret not in ciphertext
    assert decrypt_secret(MASTER_KEY, hm_key["key_id"], nonce, ciphertext) == secret
    database_files = b"".join(
        path.read_bytes() for path in cli_settings.data_dir.glob("exchange.sqlite3*")
    )
    assert secret not in database_files
    assert hm_key["secret"].encode() not in database_files
    assert db.execute("SELECT COUNT(*) FROM partner_key").fetchone() == (2,)

    revoked = run(cli_settings, "partners", "revoke-key", hm_key["key_id"])
    assert (revoked["key_id"], revoked["partner_id"]) == (hm_key["key_id"], brand["id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", revoked["revoked_at"])
    assert db.execute("SELECT id FROM partner_key WHERE revoked_at IS NOT NULL").fetchall() == [
        (hm_key["key_id"],)
    ]

    # The lists an operator reads (issue 16): JSON, or a table with --table.
    listed, keys, keys_table, listed_table = at_once(
        cli_settings,
        ("partners", "list"),
        ("partners", "keys", brand["id"]),
        ("partners", "keys", brand["id"], "--table"),
        ("partners", "list", "--kind", "brand", "--table"),
    )
    assert json.loads(listed.stdout) == [brand]
    shown = sorted((k["key_id"], k["alg"], k["active"]) for k in json.loads(keys.stdout))
    assert shown == sorted(
        [(ed_key["key_id"], "ed25519", True), (hm_key["key_id"], "hmac-sha256", False)]
    )
    assert all(k["created_at"].endswith("Z") for k in json.loads(keys.stdout))
    assert "secret" not in keys.stdout
    assert "ed25519" in keys_table.stdout and "Sky Air" in listed_table.stdout


def test_a_charity_and_the_operator_are_created(
    cli_settings: Settings, db: sqlite3.Connection
) -> None:
    charity, operator = (
        answer(done)
        for done in at_once(
            cli_settings,
            ("partners", "create", "--kind", "charity", "--name", "Red Cross",
             "--min-donation-points", "500"),
            ("partners", "create", "--kind", "operator", "--name", "Coalition"),
        )
    )  # fmt: skip
    assert (charity["kind"], charity["name"], charity["currency"]) == ("charity", "Red Cross", None)
    assert charity["min_donation_points"] == 500
    assert (operator["kind"], operator["currency"]) == ("operator", None)
    # Neither has a points ledger: a settlement account per shard, nothing else.
    for partner in (charity, operator):
        assert accounts_of(db, partner["id"]) == [
            ("settlement", "EUR", 0),
            ("settlement", "EUR", 1),
        ]
    assert db.execute("SELECT COUNT(*) FROM partner").fetchone() == (2,)


def test_expiry_policy_run_and_liability(cli_settings: Settings) -> None:
    """The operator sets Sky Air's expiry policy, runs the expiry (nothing due) and reads the
    liability: no points outstanding, no breakage."""
    run(cli_settings, "partners", "create", "--kind", "brand", "--name", "Sky Air",
        "--currency", "SKY")  # fmt: skip
    policy = run(cli_settings, "lots", "set-policy", "--currency", "SKY", "--kind", "months",
                 "--period", "24")  # fmt: skip
    assert (policy["kind"], policy["period"], policy["currency"]) == ("months", 24, "SKY")
    expired = run(cli_settings, "lots", "expire")
    assert (expired["members"], expired["points"]) == (0, 0)
    report = run(cli_settings, "lots", "liability", "--currency", "SKY")
    assert (report["points_outstanding"], report["value_micros"]) == (0, None)
    assert report["breakage"]["points"] == 0
    refused = litestar(cli_settings, "lots", "set-policy", "--currency", "SKY", "--kind",
                       "never", "--period", "3", env=ENV)  # fmt: skip
    assert refused.returncode == 1
    assert json.loads(refused.stderr)["type"] == "invalid-input"
