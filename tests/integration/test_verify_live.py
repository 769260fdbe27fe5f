"""``verify_ledger`` on a ledger that is being written to: it reads one snapshot, so postings that
commit while it walks are neither half-seen (a posting past its account's head, a transaction
that does not sum to zero) nor counted in one check and not in the other.

A writer posts transfers, each committed on its own, for as long as the verifier runs it over
and over; every report must be clean, and each must have counted a number of postings the
ledger really had at some moment (between the counts before and after that run)."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger.members import enrol_member
from exchange.ledger.models import Posting
from exchange.ledger.operations import issue, transfer
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.verify import verify_ledger

Sessions = async_sessionmaker[AsyncSession]
MEMBERS = 40


async def _postings(sessions: Sessions) -> int:
    async with sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(Posting)) or 0)


@pytest.mark.postgres_only
async def test_verify_reads_one_snapshot_while_the_ledger_is_written(
    sessions: Sessions, sky: PartnerInfo
) -> None:
    refs = [f"m{i:02d}" for i in range(MEMBERS)]
    async with sessions() as s, s.begin():
        for ref in refs:
            await enrol_member(s, sky, ref)
            await issue(s, sky, ref, 1_000)
    done = asyncio.Event()
    written = 0

    async def writer() -> None:
        nonlocal written
        rng = random.Random(5)
        while not done.is_set():
            source, target = rng.sample(refs, 2)
            async with sessions() as s, s.begin():
                await transfer(s, sky, source, target, 1)
            written += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    try:
        for _ in range(20):
            before = await _postings(sessions)
            async with sessions() as session:
                report = await verify_ledger(session)
            after = await _postings(sessions)
            assert report.ok, report.as_dict()["first_fault"]
            assert before <= report.postings <= after
    finally:
        done.set()
        await task
    assert written > 0
    async with sessions() as session:
        final = await verify_ledger(session)
    assert final.ok
    assert final.postings == await _postings(sessions) == 2 * MEMBERS + 2 * written
