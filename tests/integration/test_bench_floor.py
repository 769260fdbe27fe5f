"""The benchmark's floor (``bench.floor``) does the work it stands for: every transfer it
answered moved a point in the database, in one transaction each, and the balances still sum
to what they opened with."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from bench.floor import run_floor

pytestmark = pytest.mark.postgres_only


async def test_floor_moves_one_point_per_answered_transfer(
    postgres_template: str | None, tmp_path: Path
) -> None:
    if postgres_template is None:
        pytest.skip("PostgreSQL is not reachable")
    result, cpu, moved = await run_floor(
        clients=4, seconds=1.0, warmup=0.0, workers=1, data_dir=tmp_path,
        database=f"exchange_bench_floor_t_{os.getpid()}_{uuid.uuid4().hex[:6]}",
    )  # fmt: skip
    assert result.errors == 0, result.error_kinds
    assert result.operations > 0
    assert moved == result.operations
    assert cpu["service_cores"] > 0
