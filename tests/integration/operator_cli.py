"""Running the operator's real command line (``litestar ...``) against a test database."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from exchange.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
LITESTAR = Path(sys.executable).with_name("litestar")


def litestar(
    settings: Settings, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``litestar ARGS`` in the repository root (where ``.env`` names the app), pointed at the
    test's database and data directory, with nothing else of ours inherited from this process."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("EXCHANGE_")}
    environment |= {"EXCHANGE_DATA_DIR": str(settings.data_dir), "EXCHANGE_AUTO_MIGRATE": "0"}
    if settings.database_url is not None:
        environment["EXCHANGE_DATABASE_URL"] = settings.database_url
    environment |= env or {}
    return subprocess.run(
        [str(LITESTAR), *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
