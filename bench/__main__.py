"""``python -m bench`` (``make bench``): the exchange against pgbench, on one PostgreSQL server.

One run: pgbench TPC-B first (the reference: the same server, at each client count), then the
floor and the service under uvicorn, each scenario at each client count driven twice: by wrk
replaying requests pre-signed with the SDK's signer (the service's cost) and by the partner SDK
itself (a, b, c; batches by the SDK only), then settlement (d) and verify (e) on synthetic
money days. A table goes to the terminal and every
figure (with the CPU split and the settings of the run) to ``bench/out/<timestamp>.json``.
See bench/README.md for what each scenario does and how to read the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from bench import replay
from bench.floor import ROWS as FLOOR_ROWS
from bench.floor import floor_operation, points_moved, serve_floor
from bench.load import CpuMeter, LoadResult, drive
from bench.pg import drop_database, recreate_database, run_pgbench, scratch_name
from bench.scenarios import (
    ApiLoad,
    batches_route,
    build_api_world,
    child_env,
    group_by_reference,
    run_child,
)
from bench.service import ROOT, ServiceProcess
from bench.synth import synthesize_money_day

OUT = Path(__file__).resolve().parent / "out"
API_SCENARIOS = ("a", "b", "c", "batches")
ALL_SCENARIOS = ("floor", "a", "b", "c", "batches", "d", "e")
VERIFY_TARGET = 200_000
BATCHES_TARGET = 5
SETTLE_TARGET_POSTINGS = 10_000_000

# Wide enough for the tables when the output is a file or a pipe (rich's default is 80).
console = Console(width=None if sys.stdout.isatty() else 160)


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--seconds", type=int, default=20,
        help="measured time of each API scenario (and of pgbench), per client count",
    )  # fmt: skip
    parser.add_argument(
        "--clients", default="32,8",
        help="client counts, comma-separated: each API scenario and pgbench run at each (wrk"
        " connections, SDK callers, pgbench -c). The largest is judged for throughput, the"
        " smallest for latency",
    )  # fmt: skip
    parser.add_argument(
        "--no-sdk", dest="sdk", action="store_false",
        help="skip the SDK-driven rows (the same scenarios driven by the Python SDK)",
    )  # fmt: skip
    parser.add_argument(
        "--wrk-threads", type=int, default=2, help="wrk threads (at most the client count)"
    )
    parser.add_argument(
        "--max-requests", type=int, default=150_000,
        help="most requests pre-signed for one measured wrk run (sized from the warmup's rate:"
        " twice what it predicts; a file that runs out is reported, never hidden)",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help="comma-separated among floor,a,b,c,batches,d,e (batches runs only if the service"
        " has POST /v1/batches)",
    )
    parser.add_argument(
        "--postings",
        default="1000000,10000000",
        help="sizes of the settled day for d (and e), comma-separated",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="operations per batch (the API allows up to 1 000)",
    )
    parser.add_argument(
        "--settle-budget-minutes",
        type=float,
        default=10.0,
        help="skip a day size of d whose generation + settlement is estimated, from the sizes"
        " before it, to take longer than this",
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds, not counted")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first wait up to this long for other work on the machine to drop below"
        " --quiet-below cores (a shared machine skews every figure)",
    )
    parser.add_argument("--quiet-below", type=float, default=0.3, metavar="CORES")
    args = parser.parse_args()
    args.scenario_set = {s.strip() for s in args.scenarios.split(",") if s.strip()}
    unknown = args.scenario_set - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    args.sizes = [int(s.replace("_", "")) for s in args.postings.split(",") if s.strip()]
    try:
        args.client_counts = [int(c) for c in args.clients.split(",") if c.strip()]
    except ValueError:
        parser.error(f"--clients: not a list of numbers: {args.clients}")
    if not args.client_counts or min(args.client_counts) < 1:
        parser.error("--clients: at least one count, each >= 1")
    if args.seconds + args.warmup > replay.MAX_RUN_SECONDS / 2:
        parser.error(
            "--seconds + --warmup: keep a run well inside the server's 300 s signature window"
        )
    return args


def _git_revision() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "?"


def _background_load(seconds: float = 3.0) -> float:
    """Cores busy on the machine before we start: other work skews every figure here."""
    meter = CpuMeter()
    meter.start()
    time.sleep(seconds)
    return meter.stop()["machine_busy_cores"]


# --------------------------------------------------------------------------- API scenarios


DEFAULT_CEILING = {"floor": 20_000.0, "signed": 3_000.0}
"""Requests per second a warmup file is sized for when no floor was measured at that count."""


def _wrk_row(
    args: argparse.Namespace,
    key: str,
    clients: int,
    base_url: str,
    mix: replay.Mix,
    meter: CpuMeter,
    workdir: Path,
    ceiling: float,
    seed: int,
) -> dict[str, Any]:
    """Warm up with wrk (and learn the rate), then sign a file for the measured run and replay
    it. The meter covers the measured replay only, not the signing."""
    rate = ceiling
    warm = None
    if args.warmup > 0:
        warm = replay.replay(
            f"{key} warmup", base_url, mix(seed * 7919),
            count=replay.size_for(ceiling, args.warmup, clients), clients=clients,
            seconds=args.warmup, workdir=workdir, threads=args.wrk_threads,
        )  # fmt: skip
        if not warm.exhausted and warm.ok:
            rate = warm.ops_per_second
    count = min(args.max_requests, replay.size_for(rate, args.seconds, clients))
    result = replay.replay(
        key, base_url, mix(seed), count=count, clients=clients, seconds=args.seconds,
        workdir=workdir, threads=args.wrk_threads, on_start=meter.start,
    )  # fmt: skip
    cpu = meter.stop()
    entry = {
        "scenario": key, "driver": "wrk", "clients": clients,
        "ops_per_second": result.ops_per_second, "p50_ms": result.p50_ms,
        "p90_ms": result.p90_ms, "p99_ms": result.p99_ms, "mean_ms": result.mean_ms,
        "operations": result.ok, "requests": result.requests, "seconds": result.seconds,
        "non_2xx": result.non_2xx, "statuses": result.statuses,
        "socket_errors": result.socket_errors, "errors": result.errors,
        "sample_status": result.sample_status, "sample_body": result.sample_body,
        "signed": result.loaded, "sent": result.sent, "ran_out": result.exhausted,
        "sign_seconds": result.sign_seconds, "wrk_cpu_seconds": result.wrk_cpu_seconds,
        "warmup": None if warm is None else {
            "ops_per_second": warm.ops_per_second, "ok": warm.ok, "sent": warm.sent,
            "non_2xx": warm.non_2xx,
            "ran_out": warm.exhausted, "sample_body": warm.sample_body,
        },
        "cpu": cpu,
    }  # fmt: skip
    console.print(
        f"  {key} wrk {clients}: {result.ops_per_second:,.0f} ops/s, p50 {result.p50_ms:.1f} ms,"
        f" non-2xx {result.non_2xx}, signed {result.loaded:,} in {result.sign_seconds:.1f} s"
        + ("  [red]THE REQUEST FILE RAN OUT[/]" if result.exhausted else "")
    )
    return entry


async def _sdk_row(
    args: argparse.Namespace, key: str, clients: int, operation: Any, meter: CpuMeter
) -> dict[str, Any]:
    meter.start()
    result = await drive(
        key, operation, concurrency=clients, seconds=args.seconds, warmup=args.warmup
    )
    cpu = meter.stop()
    console.print(
        f"  {key} sdk {clients}: {result.ops_per_second:,.0f} ops/s, p50 {result.p50_ms:.1f} ms,"
        f" errors {result.errors}"
    )
    return {"scenario": key, "driver": "sdk", "clients": clients, **_load_entry(result, cpu)}


def _ceiling(run: dict[str, Any], clients: int, kind: str) -> float:
    floor = run["scenarios"].get(f"floor wrk {clients}")
    if floor and not floor.get("ran_out") and floor["ops_per_second"] > 0:
        return float(floor["ops_per_second"])
    return DEFAULT_CEILING[kind]


async def _floor(args: argparse.Namespace, run: dict[str, Any]) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="exchange-bench-floor-"))
    name = scratch_name("floor")
    try:
        async with serve_floor(workers=args.workers, data_dir=data_dir, database=name) as (
            service,
            url,
        ):
            assert service.process is not None
            meter = CpuMeter(service_pgid=service.process.pid, databases={name})
            for clients in args.client_counts:
                console.print(
                    f"[bold]floor[/]: bare Litestar + asyncpg transfer, {clients} clients"
                )
                before = await points_moved(url)
                entry = await asyncio.to_thread(
                    _wrk_row, args, "floor", clients, service.base_url,
                    lambda seed: replay.floor_transfers(FLOOR_ROWS, seed), meter, data_dir,
                    DEFAULT_CEILING["floor"], 11,
                )  # fmt: skip
                # Every 2xx moved one point (the warmup's too): the work was done.
                entry["points_moved"] = await points_moved(url) - before
                run["scenarios"][f"floor wrk {clients}"] = entry
                if args.sdk:
                    async with httpx.AsyncClient(base_url=service.base_url, timeout=30.0) as http:
                        run["scenarios"][f"floor sdk {clients}"] = await _sdk_row(
                            args, "floor", clients, floor_operation(http), meter
                        )
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def _ledger_transactions(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM ledger_transaction"))
    finally:
        await conn.close()


async def _api_scenarios(args: argparse.Namespace, run: dict[str, Any]) -> None:
    name = scratch_name("api")
    url = await recreate_database(name)
    data_dir = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
    try:
        console.print("[bold]api[/]: building the coalition (20 brands, members, rates)...")
        world = await build_api_world(url, data_dir)
        run["api_setup_seconds"] = round(world.setup_seconds, 1)
        service = ServiceProcess(
            url, data_dir, workers=args.workers, extra_env={"EXCHANGE_AUTO_MIGRATE": "0"}
        )
        service.start(timeout=60)
        try:
            assert service.process is not None
            meter = CpuMeter(service_pgid=service.process.pid, databases={name})
            route = await batches_route(service.base_url)
            run["batches_route"] = route
            every = list(range(len(world.brands)))
            mixes: dict[str, replay.Mix] = {
                "a": lambda seed: replay.ledger_mix(world, every, seed),
                "b": lambda seed: replay.ledger_mix(world, [0], seed),
                "c": lambda seed: replay.conversions(world, seed),
            }
            async with ApiLoad(service.base_url, world) as load:
                sdk_plans: dict[str, Any] = {
                    "a": lambda: load.ledger_mix(every, seed=1),
                    "b": lambda: load.ledger_mix([0], seed=2),
                    "c": lambda: load.conversions(seed=3),
                }
                if route is not None:
                    sdk_plans["batches"] = lambda: load.batches(every, args.batch_size, 4)
                elif "batches" in args.scenario_set:
                    run["scenarios"]["batches"] = {"available": False}
                for clients in args.client_counts:
                    for seed, key in enumerate(("a", "b", "c", "batches"), start=1):
                        if key not in args.scenario_set or key not in sdk_plans:
                            continue
                        console.print(f"[bold]{key}[/]: {clients} clients, {args.seconds} s")
                        if key in mixes:
                            before = await _ledger_transactions(url)
                            entry = await asyncio.to_thread(
                                _wrk_row, args, key, clients, service.base_url, mixes[key],
                                meter, data_dir, _ceiling(run, clients, "signed"),
                                seed * 1000 + clients,
                            )  # fmt: skip
                            entry["ledger_transactions"] = await _ledger_transactions(url) - before
                            run["scenarios"][f"{key} wrk {clients}"] = entry
                        if args.sdk or key not in mixes:
                            entry = await _sdk_row(args, key, clients, sdk_plans[key](), meter)
                            if key == "batches":
                                entry["batch_size"] = args.batch_size
                                entry["refused_items"] = load.refused_items
                            run["scenarios"][f"{key} sdk {clients}"] = entry
        finally:
            service.stop()
            failed = [k for k, v in run["scenarios"].items() if v.get("errors")]
            if failed and service.log_path is not None and service.log_path.exists():
                # The service's own account of the failures, kept past the scratch directory.
                stamp = run["started_at"].replace("-", "").replace(":", "")
                kept = OUT / f"service-{stamp}.log"
                shutil.copyfile(service.log_path, kept)
                run["service_log"] = str(kept.relative_to(ROOT))
                console.print(f"errors in {', '.join(failed)}: the service's log is {kept}")
    finally:
        await drop_database(name)
        shutil.rmtree(data_dir, ignore_errors=True)


def _load_entry(result: LoadResult, cpu: dict[str, float]) -> dict[str, Any]:
    entry = asdict(result)
    entry["ops_per_second"] = result.ops_per_second
    entry["cpu"] = cpu
    return entry


# --------------------------------------------------------------------------- settlement, verify


async def _money_days(args: argparse.Namespace, run: dict[str, Any]) -> None:
    """d: settle one synthetic day per size; e: verify the same ledgers (or a day of the first
    size, when d is not run)."""
    sizes = args.sizes if "d" in args.scenario_set else args.sizes[:1]
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    cutoff = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)
    budget = args.settle_budget_minutes * 60
    per_posting: float | None = None
    for size in sizes:
        if "d" in args.scenario_set and per_posting is not None and per_posting * size > budget:
            estimate = per_posting * size / 60
            console.print(f"[yellow]d {size:,}: skipped, estimated {estimate:.1f} min[/]")
            run["scenarios"][f"d {size}"] = {"skipped": f"estimated {estimate:.1f} min"}
            continue
        name = scratch_name(f"day_{size}")
        url = await recreate_database(name)
        data_dir = Path(tempfile.mkdtemp(prefix="exchange-bench-"))
        try:
            console.print(f"[bold]day {size:,}[/]: writing the postings (COPY)...")
            started = time.perf_counter()
            synth = await synthesize_money_day(url, postings=size, day=day)
            generated = time.perf_counter() - started
            size_mib = await _table_mib(url)
            env = child_env(url, data_dir)
            if "d" in args.scenario_set:
                console.print(f"[bold]d {size:,}[/]: bare GROUP BY, then settlement (child)")
                before = await group_by_reference(url, cutoff)
                settled = run_child(["settle", day.isoformat()], env, timeout=3600)
                after = await group_by_reference(url, cutoff)
                reference = {k: min(before[k], after[k]) for k in before}
                settle_seconds = settled.data["seconds"]
                run["scenarios"][f"d {size}"] = {
                    "postings": synth.postings,
                    "transactions": synth.transactions,
                    "generation_seconds": generated,
                    "posting_table_mib": size_mib,
                    "settle": settled.data,
                    "settle_child_wall_seconds": settled.wall_seconds,
                    "peak_rss_kib": settled.data["vm_hwm_kib"],
                    "group_by_seconds": reference,
                    "ratio_to_group_by": settle_seconds / reference["per_account"],
                    "ratio_to_group_by_per_partner": settle_seconds / reference["per_partner"],
                    "postings_per_second": synth.postings / settle_seconds,
                }
                per_posting = (generated + settle_seconds) / synth.postings
            if "e" in args.scenario_set:
                console.print(f"[bold]e {size:,}[/]: ledger verify (child)")
                verified = run_child(["verify"], env, timeout=3600)
                run["scenarios"][f"e {size}"] = {
                    **verified.data,
                    "peak_rss_kib": verified.data["vm_hwm_kib"],
                    "postings_per_second": verified.data["postings"] / verified.data["seconds"],
                }
        finally:
            await drop_database(name)
            shutil.rmtree(data_dir, ignore_errors=True)


async def _table_mib(url: str) -> float:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        size = await conn.fetchval("SELECT pg_total_relation_size('posting')")
    finally:
        await conn.close()
    return round(float(size) / 2**20, 1)


# --------------------------------------------------------------------------- report


def _fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _met(ok: bool) -> str:
    return "[green]yes[/]" if ok else "[red]no[/]"


_API_LABELS = {
    "floor": "floor  bare Litestar+asyncpg, unsigned",
    "a": "a  issue/redeem/transfer, 20 brands",
    "b": "b  the same, all of one brand",
    "c": "c  conversions between brands",
    "batches": "batches  POST /v1/batches (items/s)",
}
A_RATIO_TARGET = 0.5
C_RATIO_TARGET = 0.3
B_OF_A_TARGET = 0.8
A_P50_TARGET_MS = 10.0


def _errors_cell(entry: dict[str, Any]) -> str:
    if entry["driver"] == "wrk":
        cell = str(entry["non_2xx"])
        bad = {k: v for k, v in entry["statuses"].items() if not k.startswith("2")}
        if bad:
            cell += " (" + ", ".join(f"{k}: {v}" for k, v in sorted(bad.items())) + ")"
        sockets = sum(entry["socket_errors"].values())
        if sockets:
            cell += f" +{sockets} socket"
        if entry["ran_out"]:
            cell += " [red]REQUEST FILE RAN OUT[/]"
        return cell
    cell = str(entry["errors"])
    if entry.get("error_kinds"):
        cell += " (" + ", ".join(f"{k}: {v}" for k, v in entry["error_kinds"].items()) + ")"
    return cell


def _target(
    entry: dict[str, Any], ratio: float | None, a_ops: float | None, most: int, least: int
) -> tuple[str, str]:
    """What the issue asks of this row, and whether it is met (wrk rows only)."""
    key, clients = entry["scenario"], entry["clients"]
    if key == "batches":  # SDK-driven only: a batch's signing is one in a thousand items
        if ratio is None:
            return "", ""
        return f">= {BATCHES_TARGET} pgbench", _met(ratio >= BATCHES_TARGET and not entry["errors"])
    if entry["driver"] != "wrk":
        return "(the SDK's own cost)", ""
    clean = entry["non_2xx"] == 0 and not entry["ran_out"] and not entry["errors"]
    goals: list[tuple[str, bool]] = []
    if key == "floor":
        goals.append(("ceiling of a, b, c", True))
    if key == "a" and clients == most and ratio is not None:
        goals.append((f">= {A_RATIO_TARGET} pgbench", ratio >= A_RATIO_TARGET))
    if key == "c" and clients == most and ratio is not None:
        goals.append((f">= {C_RATIO_TARGET} pgbench", ratio >= C_RATIO_TARGET))
    if key == "b" and clients == most and a_ops:
        b_of_a = entry["ops_per_second"] / a_ops
        goals.append((f">= {B_OF_A_TARGET} a (b/a {b_of_a:.2f})", b_of_a >= B_OF_A_TARGET))
    if key == "a" and clients == least:
        goals.append((f"p50 <= {A_P50_TARGET_MS:g} ms", entry["p50_ms"] <= A_P50_TARGET_MS))
    goals.append(("no non-2xx", clean))
    return "; ".join(g for g, _ in goals), _met(all(ok for _, ok in goals))


def _results_table(run: dict[str, Any]) -> Table:
    pgbench = run.get("pgbench") or {}
    scenarios = run["scenarios"]
    counts = sorted({int(c) for c in pgbench} | {
        v["clients"] for v in scenarios.values() if "clients" in v
    }, reverse=True)  # fmt: skip
    most, least = (max(counts), min(counts)) if counts else (0, 0)
    table = Table(title=f"python -m bench  {run['started_at']}  rev {run['revision']}")
    for column in (
        "scenario", "clients", "driver", "ops/s", "x pgbench", "p50 ms", "p99 ms", "non-2xx",
        "target", "met",
    ):  # fmt: skip
        table.add_column(
            column,
            justify="left" if column in ("scenario", "driver", "non-2xx", "target") else "right",
        )
    if (scenarios.get("batches") or {}).get("available") is False:
        table.add_row(_API_LABELS["batches"], "", "", "not available", "", "", "", "", "", "")
    for clients in counts:
        pg = pgbench.get(str(clients))
        tps = pg["tps"] if pg else None
        if pg:
            table.add_row(
                "pgbench TPC-B (reference)", str(clients), "pgbench", _fmt(tps), "1.00",
                f"avg {pg['latency_ms']:.1f}", "—", "", "", "",
            )  # fmt: skip
        a_wrk = scenarios.get(f"a wrk {clients}")
        a_ops = a_wrk["ops_per_second"] if a_wrk else None
        for key, label in _API_LABELS.items():
            for driver in ("wrk", "sdk"):
                entry = scenarios.get(f"{key} {driver} {clients}")
                if entry is None:
                    continue
                ops = entry["ops_per_second"]
                ratio = ops / tps if tps else None
                target, met = _target(entry, ratio, a_ops, most, least)
                table.add_row(
                    label if driver == "wrk" or f"{key} wrk {clients}" not in scenarios
                    else f"  {key} (sdk)",
                    str(clients), driver, _fmt(ops), _fmt(ratio, 2), _fmt(entry["p50_ms"]),
                    _fmt(entry["p99_ms"]), _errors_cell(entry), target, met,
                )  # fmt: skip
        table.add_section()
    for key, entry in scenarios.items():
        if key.startswith("d "):
            label = f"d  settle a day of {int(key.split()[1]):,} postings"
            if "skipped" in entry:
                table.add_row(label, "", "", "skipped", "", "", "", entry["skipped"], "", "")
                continue
            ratio = entry["ratio_to_group_by"]
            # The target names the day of 10 million; a smaller day is shown for the
            # trend (memory, ratio), not judged.
            judged = int(key.split()[1]) >= SETTLE_TARGET_POSTINGS  # the size asked for
            table.add_row(
                label, "", "", _fmt(entry["postings_per_second"], 0),
                f"{ratio:.1f}x GROUP BY", "", "", "0",
                "<= 3x GROUP BY" if judged else "(at 10M)", _met(ratio <= 3) if judged else "",
            )  # fmt: skip
    for key, entry in scenarios.items():
        if key.startswith("e "):
            rate = entry["postings_per_second"]
            table.add_row(
                f"e  ledger verify, {entry['postings']:,} postings", "", "", _fmt(rate, 0),
                f"{rate / VERIFY_TARGET:.2f} of target", "", "", "0" if entry["ok"] else "FAULT",
                f">= {VERIFY_TARGET:,}/s", _met(rate >= VERIFY_TARGET),
            )  # fmt: skip
    return table


def _settlement_table(run: dict[str, Any]) -> Table | None:
    rows = [(k, v) for k, v in run["scenarios"].items() if k.startswith("d ") and "settle" in v]
    if not rows:
        return None
    table = Table(title="d  settlement vs the bare GROUP BY; peak RSS of the settling process")
    for column in (
        "postings", "generated s", "settle s", "steps at s", "GROUP BY s", "per partner s",
        "ratio", "peak RSS MiB", "RSS at start MiB", "posting table MiB",
    ):  # fmt: skip
        table.add_column(column, justify="right")
    for _key, entry in rows:
        settle = entry["settle"]
        steps = " ".join(f"{k[:5]} {v:.1f}" for k, v in settle["steps_at"].items())
        table.add_row(
            f"{entry['postings']:,}", f"{entry['generation_seconds']:.0f}",
            f"{settle['seconds']:.2f}", steps,
            f"{entry['group_by_seconds']['per_account']:.3f}",
            f"{entry['group_by_seconds']['per_partner']:.3f}",
            f"{entry['ratio_to_group_by']:.1f}x", f"{entry['peak_rss_kib'] / 1024:.0f}",
            f"{settle['vm_rss_before_kib'] / 1024:.0f}", f"{entry['posting_table_mib']:,.0f}",
        )  # fmt: skip
    return table


def _cpu_table(run: dict[str, Any]) -> Table | None:
    rows = [v for v in run["scenarios"].values() if "cpu" in v]
    if not rows:
        return None
    table = Table(title=f"cores used during each API scenario (the machine has {run['cpus']})")
    for column in (
        "scenario", "clients", "driver", "wrk", "python driver", "service", "postgres",
        "other work", "busy",
    ):  # fmt: skip
        table.add_column(column, justify="left" if column in ("scenario", "driver") else "right")
    for entry in sorted(
        rows, key=lambda e: (-e["clients"], list(_API_LABELS).index(e["scenario"]))
    ):
        cpu = entry["cpu"]
        table.add_row(
            entry["scenario"], str(entry["clients"]), entry["driver"],
            f"{cpu.get('wrk_cores', 0.0):.2f}", f"{cpu['driver_cores']:.2f}",
            f"{cpu['service_cores']:.2f}", f"{cpu['postgres_cores']:.2f}",
            f"{cpu['other_cores']:.2f}", f"{cpu['machine_busy_cores']:.2f}",
        )  # fmt: skip
    return table


def _problem_samples(run: dict[str, Any]) -> list[str]:
    """A sample answer of every wrk row that had a non-2xx, as the service wrote it."""
    lines = []
    for key, entry in run["scenarios"].items():
        if entry.get("driver") == "wrk" and entry.get("sample_body") is not None:
            lines.append(
                f"[red]{key}: {entry['non_2xx']} non-2xx; a sample ({entry['sample_status']}):[/]"
                f" {entry['sample_body'][:600]}"
            )
        if entry.get("driver") == "wrk" and entry.get("ran_out"):
            lines.append(
                f"[red]{key}: the {entry['signed']:,} pre-signed requests ran out before the"
                " time did; its ops/s is a lower bound (raise --max-requests)[/]"
            )
    return lines


# --------------------------------------------------------------------------- main


def main() -> None:
    args = _parse()
    OUT.mkdir(parents=True, exist_ok=True)
    started = dt.datetime.now(dt.UTC)
    run: dict[str, Any] = {
        "started_at": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "revision": _git_revision(),
        "command": "python -m bench " + " ".join(sys.argv[1:]),
        "cpus": os.cpu_count(),
        "args": {k: v for k, v in vars(args).items() if k != "scenario_set"},
        "scenarios": {},
    }
    background = _background_load()
    deadline = time.monotonic() + args.wait_quiet
    while background >= args.quiet_below and time.monotonic() < deadline:
        console.print(f"waiting for a quieter machine: {background:.2f} cores busy")
        time.sleep(10)
        background = _background_load()
    run["background_cores_before"] = round(background, 2)
    console.print(
        f"background load before start: {run['background_cores_before']:.2f} of "
        f"{os.cpu_count()} cores busy"
    )
    if args.scenario_set & {"floor", *API_SCENARIOS} - {"batches"}:
        replay.wrk_path()  # fail now, with how to install it, rather than after the setup
    if args.scenario_set & {"floor", *API_SCENARIOS}:
        run["pgbench"] = {}
        for clients in args.client_counts:
            console.print(f"[bold]pgbench[/]: TPC-B, {clients} clients, {args.seconds} s")
            meter = CpuMeter()
            meter.start()
            pg = run_pgbench(clients, args.seconds)
            busy = meter.stop()["machine_busy_cores"]
            run["pgbench"][str(clients)] = {**asdict(pg), "machine_busy_cores": busy}
    if "floor" in args.scenario_set:
        asyncio.run(_floor(args, run))
    if args.scenario_set & set(API_SCENARIOS):
        asyncio.run(_api_scenarios(args, run))
    if args.scenario_set & {"d", "e"}:
        asyncio.run(_money_days(args, run))
    run["finished_at"] = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    path = OUT / f"bench-{started.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(run, indent=2, default=str))
    for table in (_results_table(run), _settlement_table(run), _cpu_table(run)):
        if table is not None:
            console.print(table)
    pg_busy = ", ".join(
        f"{c} clients {v['machine_busy_cores']:.2f}" for c, v in run.get("pgbench", {}).items()
    )
    console.print(
        f"background load before start: {run['background_cores_before']:.2f} cores; "
        f"cores busy while pgbench ran: {pg_busy or '—'}"
    )
    for line in _problem_samples(run):
        console.print(line)
    console.print(f"results: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
