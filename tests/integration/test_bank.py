"""The bank test, short form: 20 seconds of random signed operations (batches among them) from 12
clients while the service is SIGKILLed and restarted three times (about 30 s in all); then every
check of ``bench.bank`` (ledgers sum to zero, no member negative, every acknowledged operation
and batch item posted exactly once and no unanswered one twice, verify, member balances and
settlement as the clients' log predicts). The long form: ``python -m bench.bank --minutes 5``."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bench.bank import BankConfig, run_bank
from tests.conftest import POSTGRES_URL

pytestmark = pytest.mark.postgres_only

CONFIG = BankConfig(seconds=20, clients=12, kill_every=5, seed=5, drain_seconds=20)
HARD_TIMEOUT = 180
"""Seconds the whole test may take, set-up and checks included, before it fails as hung."""


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
async def bank_database(postgres_template: str | None) -> AsyncIterator[str]:
    """A scratch database of its own (the service runs in another process), migrated from the
    session's template."""
    if postgres_template is None:
        pytest.skip("PostgreSQL is not reachable")
    name = f"exchange_bank_t_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    await _admin(f'CREATE DATABASE "{name}" TEMPLATE "{postgres_template}"')
    base, _, _ = POSTGRES_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_bank_survives_sigkill(bank_database: str, tmp_path: Path) -> None:
    result = await asyncio.wait_for(run_bank(bank_database, tmp_path, CONFIG), HARD_TIMEOUT)
    summary = result.summary()
    print(json.dumps(summary, indent=2))  # shown with -s, and in the report when it fails

    assert result.violations == [], summary
    assert result.kills >= 3, summary
    assert result.server_errors == [], summary
    # Modest floors (a loaded CI machine does a few hundred operations; an idle one, 500).
    assert len(result.ledger_ops) >= 60, summary
    assert summary["outcomes"].get("ok", 0) >= 30, summary
    # The run did what it is for: operations were retried across a kill with their keys, and
    # the clients' log was checked against every transaction in the ledger.
    assert summary["retried_ok"] > 0, summary
    # Batch items were posted, and some replayed by their item keys: a batch that committed
    # after its client hung up, sent again under a new Idempotency-Key (a third of the batches
    # hang up at first, and half of the retries take a new key: some 20 a run on an idle
    # machine, a few even on a loaded one).
    items = summary["batches"]["item_outcomes"]
    assert items.get("posted", 0) >= 10, summary
    assert items.get("replayed", 0) > 0, summary
    assert summary["checks"]["batch_items"] >= items["posted"], summary
    assert summary["checks"]["stray_transactions"] == 0
    assert summary["checks"]["verify"]["ok"]
    assert summary["checks"]["cli_verify"]["ok"]
    assert summary["checks"]["settlement"]["postings"] > 0
