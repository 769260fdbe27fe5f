"""The README's "A partner's first day, end to end", run as written (issue 16): its shell
blocks through bash (the operator's ``litestar`` commands and ``openssl``), its Python blocks
through the SDK in a fresh interpreter, against a live server on the test's database. A new
user following only the README finds the OpenAPI document, signs with an Ed25519 PEM, converts,
donates to a charity by code, settles a test day, and fetches and verifies a statement."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from exchange.settings import Settings
from tests.integration.live_server import LiveServer, live_server  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r"<!-- readme-example: (\w+) -->\n```(sh|python)\n(.*?)```", re.S)


def readme_blocks() -> list[tuple[str, str, str]]:
    return BLOCK.findall((ROOT / "README.md").read_text())


def _environment(settings: Settings, server: LiveServer) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    bin_dir = str(Path(sys.executable).parent)
    return environment | {
        "PATH": f"{bin_dir}{os.pathsep}{environment.get('PATH', '')}",
        "LITESTAR_APP": "exchange.app:create_app",
        "EXCHANGE_DATA_DIR": str(settings.data_dir),
        "EXCHANGE_AUTO_MIGRATE": "0",
        "EXCHANGE_URL": server.base_url,
        **({"EXCHANGE_DATABASE_URL": settings.database_url} if settings.database_url else {}),
    }


def test_the_readme_has_the_four_steps() -> None:
    assert [name for name, _, _ in readme_blocks()] == [
        "operator",
        "partner",
        "settle",
        "statement",
    ]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="the README's keys come from openssl")
def test_a_partners_first_day_runs_as_the_readme_says(
    settings: Settings,
    live_server: LiveServer,  # noqa: F811
    tmp_path: Path,
) -> None:
    environment = _environment(settings, live_server)
    work = tmp_path / "partner"
    work.mkdir()
    exported = ""
    for name, language, code in readme_blocks():
        if language == "sh":
            # Each shell block runs in one bash; what it exports is handed to the next blocks.
            script = f"set -euo pipefail\n{exported}\n{code}\nexport -p\n"
            command = ["bash", "-c", script]
        else:
            command = [sys.executable, "-c", code]
        done = subprocess.run(
            command, cwd=work, env=environment, capture_output=True, text=True,
            timeout=300, check=False,
        )  # fmt: skip
        assert done.returncode == 0, (name, done.stdout, done.stderr)
        if language == "sh":
            exports = re.findall(r"^declare -x (SKY_KEY|HTL_KEY)=\"([^\"]*)\"$", done.stdout, re.M)
            for variable, value in exports:
                environment[variable] = value
                exported += f"export {variable}={value}\n"
    assert environment.get("SKY_KEY") and environment.get("HTL_KEY")
