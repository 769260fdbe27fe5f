"""Issue 15, also seen: the data directory, the SQLite files and the development keys are the
service's alone (0700 directories, 0600 files), whatever the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import text

from exchange.db import create_engine
from exchange.settings import Settings
from exchange.signing import load_exchange_keys, load_master_key


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_the_data_directory_and_its_files_are_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    old = os.umask(0o022)
    try:
        engine = create_engine(settings)
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
        load_master_key(settings)
        load_exchange_keys(settings)
        await engine.dispose()
    finally:
        os.umask(old)
    data = tmp_path / "var"
    assert _mode(data) == 0o700
    assert _mode(data / "keys") == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert data / "exchange.sqlite3" in files
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
