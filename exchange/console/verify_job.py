"""``verify`` run from the console as a background job, with its progress in the database.

The job is a row of ``console_job``: the console's POST writes it and starts the run in this
process (a task of the event loop, with transactions of its own, the request long answered);
the run moves the row through its steps (the ledger's chains and sums, then the transaction
log) and writes the report at the end, so any replica's page shows where it is. A run whose
process died says so: its row stops moving (``STALLED_AFTER``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from exchange.base import json_default, utcnow, uuid7
from exchange.console import audit
from exchange.console.models import ConsoleJob
from exchange.ledger.verify import verify_ledger
from exchange.settings import Settings
from exchange.transparency.verify import verify_log

log = structlog.get_logger()

STEPS = ("the ledger: every chain, balance and zero-sum", "the transaction log")
STALLED_AFTER = dt.timedelta(minutes=30)
_RUNNING: set[asyncio.Task[None]] = set()
"""Runs in progress (the loop keeps only weak references to tasks)."""


@dataclass(frozen=True)
class JobView:
    id: str
    started_by: str
    started_at: dt.datetime
    updated_at: dt.datetime
    finished_at: dt.datetime | None
    state: str
    step: int
    steps: int
    message: str
    result: dict[str, Any] | None

    @property
    def stalled(self) -> bool:
        return self.state == "running" and utcnow() - self.updated_at > STALLED_AFTER


async def latest(session: AsyncSession) -> JobView | None:
    row = await session.scalar(
        select(ConsoleJob)
        .where(ConsoleJob.kind == "verify")
        .order_by(ConsoleJob.started_at.desc())
        .limit(1)
    )
    if row is None:
        return None
    return JobView(
        str(row.id), row.started_by, row.started_at, row.updated_at, row.finished_at,
        row.state, row.step, row.steps, row.message,
        json.loads(row.result) if row.result else None,
    )  # fmt: skip


async def create(session: AsyncSession, started_by: str) -> JobView | None:
    """A new verify job, unless one is running already (then ``None``)."""
    running = await latest(session)
    if running is not None and running.state == "running" and not running.stalled:
        return None
    now = utcnow()
    session.add(
        ConsoleJob(
            id=uuid7(),
            kind="verify",
            started_by=started_by,
            started_at=now,
            updated_at=now,
            state="running",
            step=0,
            steps=len(STEPS),
            message="waiting to start",
        )
    )
    await session.flush()
    return await latest(session)


async def launch(
    session: AsyncSession, engine: AsyncEngine, settings: Settings, *, user: str, address: str
) -> JobView | None:
    """Record a new job (unless one runs) and its audit entry, commit both, so that the run
    finds its row, and start the run; ``None`` when one was running already."""
    job = await create(session, user)
    await audit.record(
        session, user_name=user, action="verify", address=address,
        outcome="ok" if job else "refused",
        details={"job_id": job.id} if job else {"error": "a verify is running already"},
    )  # fmt: skip
    await session.commit()
    if job is not None:
        start(engine, settings, job.id)
    return job


def start(engine: AsyncEngine, settings: Settings, job_id: str) -> None:
    """Run the job in the background of this process."""
    task = asyncio.get_running_loop().create_task(_run(engine, settings, job_id))
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)


async def _move(engine: AsyncEngine, job_id: str, **values: Any) -> None:
    async with AsyncSession(engine) as session, session.begin():
        await session.execute(
            update(ConsoleJob)
            .where(ConsoleJob.id == uuid.UUID(job_id))
            .values(updated_at=utcnow(), **values)
        )


async def _run(engine: AsyncEngine, settings: Settings, job_id: str) -> None:
    try:
        await _move(engine, job_id, step=1, message=STEPS[0])
        async with AsyncSession(engine) as session, session.begin():
            ledger = await verify_ledger(session)
        await _move(engine, job_id, step=2, message=STEPS[1])
        async with AsyncSession(engine) as session, session.begin():
            transparency = await verify_log(session, settings.log_origin, settings.log_late_seconds)
        report = {
            **ledger.as_dict(),
            "ok": ledger.ok and transparency.ok,
            "log": transparency.as_dict(),
        }
        await _move(
            engine, job_id, state="ok" if report["ok"] else "failed", step=len(STEPS),
            finished_at=utcnow(), message="verified" if report["ok"] else "faults found",
            result=json.dumps(report, default=json_default),
        )  # fmt: skip
    except Exception as error:
        log.exception("console verify failed")
        await _move(
            engine, job_id, state="failed", finished_at=utcnow(),
            message=f"verify stopped: {type(error).__name__}",
        )  # fmt: skip
