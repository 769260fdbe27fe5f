"""A closed-loop load driver: N concurrent callers, each issuing its next request when the last
one answered, for a fixed time; latencies recorded per request."""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class LoadResult:
    name: str
    operations: int
    errors: int
    seconds: float
    p50_ms: float
    p99_ms: float
    error_kinds: dict[str, int] = field(default_factory=dict)
    """What failed, by exception (and problem type), for the report."""

    @property
    def ops_per_second(self) -> float:
        return self.operations / self.seconds if self.seconds else 0.0


def percentile(sorted_values: list[float], fraction: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def _error_kind(exc: Exception) -> str:
    kind = getattr(exc, "type", None)  # the SDK's ProblemError carries the problem type
    name = type(exc).__name__
    return f"{name} {kind}" if isinstance(kind, str) and kind else name


async def drive(
    name: str,
    operation: Callable[[int, int], Awaitable[int]],
    *,
    concurrency: int,
    seconds: float,
    warmup: float = 0.0,
) -> LoadResult:
    """Run ``operation(worker, i)`` in ``concurrency`` loops for ``seconds``. The operation
    returns how many ledger operations it performed (a batch counts its items). A ``warmup``
    (same loops, not counted) runs first, so that connections and caches are open."""
    if warmup > 0:
        await _loops(operation, concurrency, warmup, [], [0], Counter(), start=1_000_000)
    latencies: list[float] = []
    counts = [0]
    errors: Counter[str] = Counter()
    started = time.perf_counter()
    await _loops(operation, concurrency, seconds, latencies, counts, errors)
    elapsed = time.perf_counter() - started
    latencies.sort()
    return LoadResult(
        name,
        counts[0],
        sum(errors.values()),
        elapsed,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        dict(errors),
    )


async def _loops(
    operation: Callable[[int, int], Awaitable[int]],
    concurrency: int,
    seconds: float,
    latencies: list[float],
    counts: list[int],
    errors: Counter[str],
    start: int = 0,
) -> None:
    deadline = time.perf_counter() + seconds

    async def worker(worker_id: int) -> None:
        i = start
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            try:
                # Await first, then add: ``counts[0] += await ...`` reads the count before the
                # await and writes it back after, losing every other worker's additions.
                done = await operation(worker_id, i)
                counts[0] += done
            except Exception as exc:
                errors[_error_kind(exc)] += 1
            latencies.append((time.perf_counter() - began) * 1000)
            i += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))


# --------------------------------------------------------------------------- where the CPU went

_TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def _processes() -> Iterable[tuple[int, str, int]]:
    """(pid, comm, process group) of every process we can see."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        head, _, tail = stat.rpartition(")")
        comm = head.partition("(")[2]
        yield int(entry.name), comm, int(tail.split()[2])


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / _TICKS, sum(values) / _TICKS


def _postgres_database(pid: int) -> str | None:
    """The database a PostgreSQL backend serves (from its process title), if it is one."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return None
    # "postgres: [CLUSTER:] USER DATABASE HOST(PORT) STATE"
    parts = title.replace("\0", " ").split()
    if not parts or parts[0] != "postgres:":
        return None
    first = 2 if len(parts) > 1 and parts[1].endswith(":") else 1
    return parts[first + 1] if len(parts) > first + 2 else None


@dataclass
class CpuMeter:
    """Cores used, between ``start()`` and ``stop()``, by the load driver (this process), the
    children it waited for in between (``wrk``), the service (its process group), PostgreSQL's
    backends of ``databases``, and everything else on the machine (``other``: other work,
    PostgreSQL's shared background processes). On a small machine they share the cores, and
    this says how."""

    service_pgid: int | None = None
    databases: set[str] = field(default_factory=set)
    _before: dict[str, float] = field(default_factory=dict)
    _pids_before: dict[int, float] = field(default_factory=dict)
    _pids_last: dict[int, float] = field(default_factory=dict)
    result: dict[str, float] = field(default_factory=dict)

    def _sample(self) -> dict[str, float]:
        service = postgres = 0.0
        pids: dict[int, float] = {}
        for pid, comm, pgid in _processes():
            if self.service_pgid is not None and pgid == self.service_pgid:
                pids[pid] = _cpu_seconds(pid)
                service += pids[pid]
            elif comm == "postgres" and _postgres_database(pid) in self.databases:
                pids[-pid] = _cpu_seconds(pid)  # negative: PostgreSQL's, apart
                postgres += pids[-pid]
        # A process that ended in between took its CPU time with it: count, at stop(), only
        # the processes alive then, from what each had at start() (0 if it began after).
        self._pids_last = pids
        times = os.times()
        busy, total = _machine_busy()
        return {
            "driver": times.user + times.system,
            # Children this process has waited for: wrk, when a scenario is replayed by it.
            "children": times.children_user + times.children_system,
            "service": service,
            "postgres": postgres,
            "machine_busy": busy,
            "machine_total": total,
            "wall": time.perf_counter(),
        }

    def start(self) -> None:
        self._before = self._sample()
        self._pids_before = self._pids_last

    def stop(self) -> dict[str, float]:
        after = self._sample()
        wall = after["wall"] - self._before["wall"]
        delta = {k: after[k] - self._before[k] for k in after}
        before_pids = self._pids_before
        delta["service"] = sum(
            v - before_pids.get(p, 0.0) for p, v in self._pids_last.items() if p > 0
        )
        delta["postgres"] = sum(
            v - before_pids.get(p, 0.0) for p, v in self._pids_last.items() if p < 0
        )
        cpus = os.cpu_count() or 1
        total = delta["machine_total"]
        busy_fraction = delta["machine_busy"] / total if total else 0.0
        ours = (delta["driver"] + delta["children"] + delta["service"] + delta["postgres"]) / wall
        self.result = {
            "driver_cores": delta["driver"] / wall,
            "wrk_cores": delta["children"] / wall,
            "service_cores": delta["service"] / wall,
            "postgres_cores": delta["postgres"] / wall,
            "machine_busy_cores": busy_fraction * cpus,
            "other_cores": max(0.0, busy_fraction * cpus - ours),
        }
        return self.result
