"""Group commit's gatherer (exchange.grouping): concurrent calls are flushed together, each
gets its own outcome, and no more flushes run at once than it allows."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from exchange.grouping import Grouper


class _Recorder:
    def __init__(self, pause: float = 0.01) -> None:
        self.groups: list[list[int]] = []
        self.running = 0
        self.most_at_once = 0
        self.pause = pause

    async def flush(self, items: Sequence[int]) -> list[int | BaseException]:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        self.groups.append(list(items))
        await asyncio.sleep(self.pause)
        self.running -= 1
        return [ValueError(item) if item % 7 == 0 else item * 10 for item in items]


async def _outcome(grouper: Grouper[int, int], item: int) -> int | str:
    try:
        return await grouper.submit(item)
    except ValueError:
        return "refused"


@pytest.mark.parametrize("flushers", [1, 3])
async def test_concurrent_calls_share_flushes_and_keep_their_own_outcomes(flushers: int) -> None:
    recorder = _Recorder()
    grouper: Grouper[int, int] = Grouper(recorder.flush, flushers=flushers)
    outcomes = await asyncio.gather(*(_outcome(grouper, item) for item in range(1, 101)))
    assert outcomes == ["refused" if i % 7 == 0 else i * 10 for i in range(1, 101)]
    assert sorted(item for group in recorder.groups for item in group) == list(range(1, 101))
    assert len(recorder.groups) <= 2 * flushers  # everything waiting joins the next flush
    assert recorder.most_at_once <= flushers


async def test_a_failed_flush_is_every_item_s_outcome_and_the_next_flush_runs() -> None:
    calls: list[list[str]] = []

    async def flush(items: Sequence[str]) -> list[str | BaseException]:
        calls.append(list(items))
        if "boom" in items:
            raise RuntimeError("the commit failed")
        return [item.upper() for item in items]

    grouper: Grouper[str, str] = Grouper(flush)
    failed = await asyncio.gather(
        grouper.submit("boom"), grouper.submit("bystander"), return_exceptions=True
    )
    assert [type(outcome) for outcome in failed] == [RuntimeError, RuntimeError]
    assert await grouper.submit("later") == "LATER"
    assert calls == [["boom", "bystander"], ["later"]]


async def test_a_caller_that_gives_up_does_not_cancel_its_group() -> None:
    recorder = _Recorder(pause=0.05)
    grouper: Grouper[int, int] = Grouper(recorder.flush)
    waiting = asyncio.create_task(grouper.submit(1))
    neighbour = asyncio.create_task(grouper.submit(2))
    await asyncio.sleep(0.01)
    waiting.cancel()
    assert await neighbour == 20
    assert recorder.groups == [[1, 2]]
