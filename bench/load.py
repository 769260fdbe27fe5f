"""A closed-loop load driver: N concurrent callers, each issuing its next request when the last
one answered, for a fixed time; latencies recorded per request."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class LoadResult:
    name: str
    operations: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def ops_per_second(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


async def drive(
    name: str,
    operation: Callable[[int, int], Awaitable[int]],
    *,
    concurrency: int,
    seconds: float,
) -> LoadResult:
    """Run ``operation(worker, i)`` in ``concurrency`` loops for ``seconds``. The operation
    returns how many ledger operations it performed (a batch counts its items)."""
    latencies: list[float] = []
    counts = [0]
    errors = [0]
    deadline = time.perf_counter() + seconds

    async def worker(worker_id: int) -> None:
        i = 0
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            try:
                counts[0] += await operation(worker_id, i)
            except Exception:
                errors[0] += 1
            latencies.append((time.perf_counter() - started) * 1000)
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return LoadResult(
        name, counts[0], errors[0], elapsed, percentile(latencies, 0.5), percentile(latencies, 0.99)
    )
