"""Group commit: concurrent calls in one process gathered into one call over all of them.

A :class:`Grouper` runs at most ``flushers`` flushes at a time. A call that arrives while
fewer run starts one at once (after letting the calls already scheduled in this turn of the
event loop join); a call that arrives while all of them run waits and joins the next flush
that starts, which takes every call waiting by then (at most ``max_size``). So under load each
flush serves everything that queued meanwhile, and a lone call pays no added latency but a
loop turn. Several flushers let one group be prepared while another waits on the database.

``flush`` returns one outcome per item, in order: a value, or an exception for that item
alone. An exception raised by ``flush`` itself is every item's outcome (nothing of the group
committed). A caller cancelled while it waits (a client that hung up) does not cancel the
flush: its item is still decided with the others, as it would be had it been alone.

Written here rather than taken from a library: what is grouped is our own database work, and
the ordering rules (one flush at a time, per-item outcomes) are the point of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

Flush = Callable[[Sequence[T]], Awaitable[Sequence["R | BaseException"]]]


class Grouper(Generic[T, R]):
    """Gathers :meth:`submit` calls into calls of ``flush`` (see the module note)."""

    def __init__(self, flush: Flush[T, R], *, max_size: int = 512, flushers: int = 1) -> None:
        self._flush = flush
        self._max_size = max_size
        self._flushers = flushers
        self._running = 0
        self._waiting: list[tuple[T, asyncio.Future[R]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        """``item``'s outcome, once the flush that took it has finished."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._running < self._flushers:
            self._running += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)  # a reference, so that the task is not collected mid-flush
            task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        try:
            await asyncio.sleep(0)  # the calls scheduled in this loop turn join the first flush
            while self._waiting:
                group = self._waiting[: self._max_size]
                del self._waiting[: self._max_size]
                await self._run(group)
        finally:
            self._running -= 1

    async def _run(self, group: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            outcomes = await self._flush([item for item, _ in group])
        except Exception as error:  # every item's outcome: nothing of the group committed
            outcomes = [error] * len(group)
        if len(outcomes) != len(group):
            outcomes = [RuntimeError("a flush returned the wrong number of outcomes")] * len(group)
        for (_, future), outcome in zip(group, outcomes, strict=True):
            if future.done():
                continue
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
