"""``python -m bench`` (``make bench``): the exchange against pgbench, on one PostgreSQL server.

One run: pgbench TPC-B first (the reference: the same server, the same client count), then the
service under uvicorn with signed requests through the partner SDK (a, b, c and batches), then
settlement (d) and verify (e) on synthetic money days. A table goes to the terminal and every
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

from rich.console import Console
from rich.table import Table

from bench.floor import run_floor
from bench.load import CpuMeter, LoadResult, drive
from bench.pg import drop_database, recreate_database, run_pgbench
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
    parser.add_argument("--seconds", type=int, default=20, help="per API scenario (and pgbench)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent callers; pgbench too")
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


async def _floor(args: argparse.Namespace, run: dict[str, Any]) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="exchange-bench-floor-"))
    try:
        console.print(f"[bold]floor[/]: bare Litestar + asyncpg transfer, {args.clients} clients")
        result, cpu, moved = await run_floor(
            clients=args.clients, seconds=args.seconds, warmup=args.warmup,
            workers=args.workers, data_dir=data_dir,
        )  # fmt: skip
        run["scenarios"]["floor"] = {**_load_entry(result, cpu), "points_moved": moved}
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


async def _api_scenarios(args: argparse.Namespace, run: dict[str, Any]) -> None:
    name = "exchange_bench_api"
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
            async with ApiLoad(service.base_url, world) as load:
                every = list(range(len(world.brands)))
                plans: list[tuple[str, Any]] = [
                    ("a", lambda: load.ledger_mix(every, seed=1)),
                    ("b", lambda: load.ledger_mix([0], seed=2)),
                    ("c", lambda: load.conversions(seed=3)),
                ]
                if route is not None:
                    plans.append(("batches", lambda: load.batches(every, args.batch_size, 4)))
                elif "batches" in args.scenario_set:
                    run["scenarios"]["batches"] = {"available": False}
                for key, make in plans:
                    if key not in args.scenario_set:
                        continue
                    console.print(f"[bold]{key}[/]: {args.clients} clients, {args.seconds} s")
                    operation = make()
                    meter.start()
                    result = await drive(
                        key,
                        operation,
                        concurrency=args.clients,
                        seconds=args.seconds,
                        warmup=args.warmup,
                    )
                    cpu = meter.stop()
                    run["scenarios"][key] = _load_entry(result, cpu)
                    if key == "batches":
                        run["scenarios"][key]["batch_size"] = args.batch_size
                        run["scenarios"][key]["refused_items"] = load.refused_items
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
        name = f"exchange_bench_day_{size}"
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
    "floor": "floor  bare Litestar + asyncpg transfer, unsigned (reference)",
    "a": "a  issue/redeem/transfer, 20 brands",
    "b": "b  the same, all of one brand",
    "c": "c  conversions between brands",
    "batches": "batches  POST /v1/batches (items/s)",
}


def _results_table(run: dict[str, Any]) -> Table:
    pg = run.get("pgbench") or {}
    tps = pg.get("tps")
    scenarios = run["scenarios"]
    table = Table(title=f"python -m bench  {run['started_at']}  rev {run['revision']}")
    for column in ("scenario", "ops/s", "p50 ms", "p99 ms", "ratio", "target", "met", "errors"):
        table.add_column(column, justify="left" if column in ("scenario", "errors") else "right")
    if tps:
        table.add_row(
            f"pgbench TPC-B, {pg['clients']} clients (reference)",
            _fmt(tps),
            f"avg {pg['latency_ms']:.1f}",
            "—",
            "1.00",
            "",
            "",
            "",
        )
    a_ops = (scenarios.get("a") or {}).get("ops_per_second")
    for key, label in _API_LABELS.items():
        entry = scenarios.get(key)
        if entry is None:
            continue
        if entry.get("available") is False:
            table.add_row(label, "not available", "", "", "", "", "", "")
            continue
        ops = entry["ops_per_second"]
        ratio = ops / tps if tps else None
        target, met = "", ""
        if key == "floor":
            target = "ceiling of a, b, c"
        elif key in ("a", "c") and ratio is not None:
            goal = 0.5 if key == "a" else 0.4
            target, met = f">= {goal} pgbench", _met(ratio >= goal)
        elif key == "batches" and ratio is not None:
            target, met = f">= {BATCHES_TARGET} pgbench", _met(ratio >= BATCHES_TARGET)
        elif key == "b" and a_ops:
            target, met = f">= 0.8 a (b/a {ops / a_ops:.2f})", _met(ops >= 0.8 * a_ops)
        errors = str(entry["errors"])
        if entry["error_kinds"]:
            errors += " (" + ", ".join(f"{k}: {v}" for k, v in entry["error_kinds"].items()) + ")"
        table.add_row(
            label, _fmt(ops), _fmt(entry["p50_ms"]), _fmt(entry["p99_ms"]), _fmt(ratio, 2),
            target, met, errors,
        )  # fmt: skip
    for key, entry in scenarios.items():
        if key.startswith("d "):
            label = f"d  settle a day of {int(key.split()[1]):,} postings"
            if "skipped" in entry:
                table.add_row(label, "skipped", "", "", "", "", "", entry["skipped"])
                continue
            ratio = entry["ratio_to_group_by"]
            # The target names the day of 10 million; a smaller day is shown for the
            # trend (memory, ratio), not judged.
            judged = int(key.split()[1]) >= SETTLE_TARGET_POSTINGS  # the size asked for
            table.add_row(
                label, _fmt(entry["postings_per_second"], 0), "", "",
                f"{ratio:.1f}x GROUP BY", "<= 3x GROUP BY" if judged else "(at 10M)",
                _met(ratio <= 3) if judged else "", "0",
            )  # fmt: skip
    for key, entry in scenarios.items():
        if key.startswith("e "):
            rate = entry["postings_per_second"]
            table.add_row(
                f"e  ledger verify, {entry['postings']:,} postings", _fmt(rate, 0), "", "",
                f"{rate / VERIFY_TARGET:.2f} of target", f">= {VERIFY_TARGET:,}/s",
                _met(rate >= VERIFY_TARGET), "0" if entry["ok"] else "FAULT",
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
    rows = [(k, v["cpu"]) for k, v in run["scenarios"].items() if "cpu" in v]
    if not rows:
        return None
    table = Table(title=f"cores used during each API scenario (the machine has {run['cpus']})")
    for column in ("scenario", "load driver", "service", "postgres", "other work", "busy"):
        table.add_column(column, justify="left" if column == "scenario" else "right")
    for key, cpu in rows:
        table.add_row(
            key, f"{cpu['driver_cores']:.2f}", f"{cpu['service_cores']:.2f}",
            f"{cpu['postgres_cores']:.2f}", f"{cpu['other_cores']:.2f}",
            f"{cpu['machine_busy_cores']:.2f}",
        )  # fmt: skip
    return table


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
    if args.scenario_set & {"floor", *API_SCENARIOS}:
        console.print(f"[bold]pgbench[/]: TPC-B, {args.clients} clients, {args.seconds} s")
        meter = CpuMeter()
        meter.start()
        pg = run_pgbench(args.clients, args.seconds)
        run["pgbench"] = {**asdict(pg), "machine_busy_cores": meter.stop()["machine_busy_cores"]}
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
    console.print(
        f"background load before start: {run['background_cores_before']:.2f} cores; "
        f"pgbench ran with {run.get('pgbench', {}).get('machine_busy_cores', 0):.2f} cores busy"
    )
    console.print(f"results: {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
