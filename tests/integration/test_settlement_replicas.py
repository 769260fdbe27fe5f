"""Two real service processes on one PostgreSQL database at a cutoff make exactly one batch.

Each is the whole service (uvicorn serving ``exchange.app:create_app``) with its scheduler on,
as two replicas behind a load balancer would run; the business day is set to end a few seconds
after both are up. Both wake at the cutoff and try to settle; the advisory lock lets one do it,
and the other finds the day done."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import os
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bench.service import ServiceProcess
from exchange.base import utcnow
from exchange.ledger.models import Posting
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.verify import verify_ledger
from exchange.settings import Settings
from settlement import views as settlement
from settlement.calendar import BusinessCalendar
from settlement.models import SettlementBatch
from tests.integration.settlement_support import (
    DAY1_INSTRUCTIONS,
    DAY1_POSITIONS,
    SETTLED,
    make_cast,
    named_instructions,
    named_positions,
    post_day1,
)

pytestmark = pytest.mark.postgres_only

LEAD_SECONDS = 15
"""How far ahead the cutoff is set: time for both processes to start on a busy machine."""


def _replica(settings: Settings, tmp: Path, name: str, cutoff: dt.datetime) -> ServiceProcess:
    assert settings.database_url is not None
    return ServiceProcess(
        database_url=settings.database_url,
        data_dir=tmp / name,
        extra_env={
            "EXCHANGE_AUTO_MIGRATE": "0",
            "EXCHANGE_SIGNING_KEY": str(tmp / "signing-key.pem"),
            "EXCHANGE_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "EXCHANGE_SCHEDULER": "1",
            "EXCHANGE_SETTLEMENT_TIMEZONE": "UTC",
            "EXCHANGE_SETTLEMENT_CUTOFF": cutoff.strftime("%H:%M:%S"),
            "EXCHANGE_SETTLEMENT_GRACE_SECONDS": "0",
            "EXCHANGE_SETTLEMENT_POLL_SECONDS": "1",
        },
    )


async def test_two_replicas_at_a_cutoff_make_one_batch(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    sky: PartnerInfo,
    htl: PartnerInfo,
    tmp_path: Path,
) -> None:
    cutoff = (utcnow() + dt.timedelta(seconds=LEAD_SECONDS)).replace(microsecond=0)
    if cutoff.date() != (cutoff + dt.timedelta(seconds=30)).date():
        pytest.skip("too close to midnight UTC for a same-day cutoff")
    calendar = BusinessCalendar.from_settings(
        replace(settings, settlement_cutoff=cutoff.strftime("%H:%M:%S"))
    )
    business_date = calendar.business_date_of(utcnow())
    assert calendar.cutoff_at(business_date) == cutoff

    cast = await make_cast(sessions, settings, sky, htl)
    money_postings = await post_day1(sessions, cast)
    (tmp_path / "signing-key.pem").write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    replicas = [_replica(settings, tmp_path, name, cutoff) for name in ("one", "two")]
    try:
        await asyncio.gather(*(asyncio.to_thread(replica.start) for replica in replicas))
        assert utcnow() < cutoff, "the replicas started after the cutoff; raise LEAD_SECONDS"
        async with asyncio.timeout(LEAD_SECONDS + 60):
            while True:
                async with sessions() as session:
                    status = await session.scalar(
                        select(SettlementBatch.status).where(
                            SettlementBatch.business_date == business_date
                        )
                    )
                if status == "complete":
                    break
                await asyncio.sleep(0.5)
        await asyncio.sleep(3)  # both had their chance at the day
        for replica in replicas:
            assert replica.process is not None and replica.process.poll() is None
    finally:
        for replica in replicas:
            replica.stop()

    async with sessions() as session:
        batches = (await session.scalars(select(SettlementBatch))).all()
        entries = await session.scalar(text(f"SELECT count(*) FROM ({SETTLED}) e"))
        money = await session.scalar(
            select(func.count()).select_from(Posting).where(Posting.ledger == "EUR")
        )
        report = await verify_ledger(session)
        batch = await settlement.get_batch(session, business_date)
    assert [(b.business_date, b.status) for b in batches] == [(business_date, "complete")]
    assert entries == money == money_postings
    assert named_positions(cast, batch.positions) == DAY1_POSITIONS
    assert named_instructions(cast, batch.instructions) == DAY1_INSTRUCTIONS
    assert report.ok, report.as_dict()
