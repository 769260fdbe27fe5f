"""Every setting that can be wrong stops the start with one clear line (issue 16), and
EXCHANGE_SIGNING_KEY takes the path of a PEM or the PEM itself."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.settings import Settings
from exchange.signing import key_id_for
from tests.conftest import base_settings
from tests.integration.operator_cli import litestar


@pytest.fixture
def cli_settings(tmp_path: Path, sqlite_template: Path) -> Settings:
    shutil.copy(sqlite_template, tmp_path / "exchange.sqlite3")
    return base_settings(tmp_path, None)


def _pem() -> tuple[str, str]:
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, key_id_for(key.public_key())


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (
            "EXCHANGE_SIGNING_KEY",
            "-----BEGIN PRIVATE KEY-----\nnot a key\n",
            "not a PEM private key",
        ),
        ("EXCHANGE_SIGNING_KEY", "/nowhere/key.pem", "neither a PEM nor the path"),
        ("EXCHANGE_MASTER_KEY", "short", "MASTER_KEY"),
        ("EXCHANGE_SETTLEMENT_TIMEZONE", "Mars/Olympus", "not an IANA time zone"),
        ("EXCHANGE_SETTLEMENT_CUTOFF", "25:00", "not a time of day"),
        ("EXCHANGE_SETTLEMENT_CUTOFF", "midnight", "not a time HH:MM"),
        ("EXCHANGE_QUOTE_TTL_SECONDS", "9000", "out of range (must be from 1 to 900)"),
        ("EXCHANGE_ISSUANCE_SHARDS", "eight", "not a whole number"),
        ("EXCHANGE_SETTLEMENT_CURRENCY", "EURO", "not an ISO 4217 code"),
    ],
)
def test_a_wrong_setting_is_one_line_naming_it(
    cli_settings: Settings, variable: str, value: str, said: str
) -> None:
    done = litestar(cli_settings, "ledger", "verify", env={variable: value})
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"exchange: {variable}: ") and said in lines[0], lines[0]


def test_the_signing_key_may_be_the_pem_itself_or_its_path(
    cli_settings: Settings, tmp_path: Path
) -> None:
    pem, key_id = _pem()
    master = {"EXCHANGE_MASTER_KEY": base64.b64encode(bytes(32)).decode()}
    path = tmp_path / "signing.pem"
    path.write_text(pem)
    show = (
        "import json; from exchange.settings import get_settings;"
        " from exchange.signing import load_exchange_keys;"
        " print(json.dumps({'key_id': load_exchange_keys(get_settings()).key_id}))"
    )
    for value in (pem, str(path)):
        environment = {"EXCHANGE_SIGNING_KEY": value} | master
        assert litestar(cli_settings, "ledger", "verify", env=environment).returncode == 0
        done = subprocess.run(
            [sys.executable, "-c", show], env=os.environ | environment,
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["key_id"] == key_id
