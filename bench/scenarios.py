"""The benchmark scenarios: what each sets up and what one operation of it is.

API scenarios (a, b, c, batches) run against a real ``uvicorn`` (``bench.service``) through the
partner SDK (``partners.client.AsyncExchangeClient``: every request signed with Ed25519, every
answer's signature verified), driven closed-loop by ``bench.load.drive``. Their world is made
once, not timed:

    20 brands B000..B019, 8 issuance shards each, an operator (conversion fees go to it);
    MEMBERS members per brand, the same refs in every brand (so a conversion may credit the
    member of the same ref at the destination brand), each opened with SEED_POINTS points
    (one opening transaction per brand, through the engine);
    every brand's point worth 10 000 micros; a rate for every ordered pair: 4 -> 3, fee 1 %.

Settlement (d) and verify (e) run on a synthetic money day (``bench.synth``) in a child process,
so that the child's peak RSS (its own ``VmHWM``) is the cost of that one job and nothing else.
``python -m bench.scenarios settle|verify`` is that child.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import asyncpg
import httpx
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.ext.asyncio import AsyncSession

from partners.client import AsyncExchangeClient, ProblemError

ROOT = Path(__file__).resolve().parent.parent

BRANDS = 20
MEMBERS = 1_000
SEED_POINTS = 10**9
POINT_MICROS = 10_000
RATE = {"from_points": 4, "to_points": 3, "fee_bps": 100, "min_points": 0}

Operation = Callable[[int, int], Awaitable[int]]


# --------------------------------------------------------------------------- the API world


@dataclass(frozen=True)
class Brand:
    currency: str
    partner_id: str
    key_id: str
    private_key: Ed25519PrivateKey


@dataclass
class ApiWorld:
    url: str
    brands: list[Brand]
    member_refs: list[str]
    setup_seconds: float = 0.0


def _settings(url: str, data_dir: Path) -> Any:
    from exchange.settings import get_settings

    return replace(get_settings(), database_url=url, data_dir=data_dir, auto_migrate=False)


async def build_api_world(
    url: str, data_dir: Path, *, brands: int = BRANDS, members: int = MEMBERS
) -> ApiWorld:
    """Migrate a fresh database and onboard the coalition (not timed): partners, keys, values
    and rates through their services; members and opening balances in bulk."""
    from exchange.db import create_engine, session_maker
    from exchange.migrate import upgrade_async
    from exchange.pricing import service as rates
    from exchange.signing import load_master_key
    from partners.service import add_key, create_partner

    started = time.perf_counter()
    settings = _settings(url, data_dir)
    await upgrade_async(settings)
    master_key = load_master_key(settings)
    engine = create_engine(settings)
    sessions = session_maker(engine)
    made: list[Brand] = []
    infos = []
    refs = [f"m{i:05d}" for i in range(members)]
    try:
        async with sessions() as session, session.begin():
            await create_partner(
                session, kind="operator", name="Operator", currency=None,
                settlement_currency=settings.settlement_currency, shards=settings.issuance_shards,
            )  # fmt: skip
            for i in range(brands):
                info = await create_partner(
                    session, kind="brand", name=f"Brand {i}", currency=f"B{i:03d}",
                    settlement_currency=settings.settlement_currency,
                    shards=settings.issuance_shards,
                )  # fmt: skip
                private = Ed25519PrivateKey.generate()
                pem = private.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                key = await add_key(
                    session, partner_id=info.id, alg="ed25519", master_key=master_key,
                    public_key_pem=pem,
                )  # fmt: skip
                infos.append(info)
                made.append(Brand(f"B{i:03d}", str(info.id), key.key_id, private))
            # Effective a minute ago, so that a request at once finds them in force.
            since = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
            for brand in made:
                await rates.set_point_value(
                    session, brand.currency, POINT_MICROS, effective_at=since, at=since
                )
            for source in made:
                for target in made:
                    if source is not target:
                        await rates.set_rate(
                            session, source.currency, target.currency, effective_at=since,
                            at=since, **RATE,
                        )  # fmt: skip

        # Members are enrolled in bulk, with the rows ``enrol_member`` writes, and each brand
        # opens its members' balances in one transaction through the engine (one leg per
        # member, the brand's issuance shards the other side): minutes less of setting up.
        async with sessions() as session, session.begin():
            for info in infos:
                await _open_members(session, info, refs)
    finally:
        await engine.dispose()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    return ApiWorld(url, made, refs, time.perf_counter() - started)


async def _open_members(session: AsyncSession, info: Any, refs: list[str]) -> None:
    from sqlalchemy import Table, insert, select

    from exchange.base import utcnow, uuid7
    from exchange.ledger.chain import GENESIS_HASH
    from exchange.ledger.engine import Leg, TransactionSpec, post_transaction
    from exchange.ledger.models import Account, Member

    now = utcnow()
    members = [
        {"id": uuid7(), "partner_id": info.id, "member_ref": ref, "created_at": now} for ref in refs
    ]
    member_t = cast(Table, Member.__table__)
    account_t = cast(Table, Account.__table__)
    await session.execute(insert(member_t), members)
    await session.execute(
        insert(account_t),
        [
            {
                "ledger": info.currency,
                "kind": "member",
                "partner_id": info.id,
                "member_id": m["id"],
                "shard": 0,
                "balance": 0,
                "held": 0,
                "seq": 0,
                "head_hash": GENESIS_HASH,
                "created_at": now,
            }
            for m in members
        ],
    )
    account = account_t.c
    member_accounts = (
        await session.execute(
            select(account.id).where(account.partner_id == info.id, account.kind == "member")
        )
    ).scalars()
    issuance = {
        shard: account_id
        for shard, account_id in await session.execute(
            select(account.shard, account.id).where(
                account.partner_id == info.id, account.kind == "issuance"
            )
        )
    }
    legs: list[Leg] = []
    owed: dict[int, int] = {}
    for account_id in member_accounts:
        legs.append(Leg(account_id, SEED_POINTS))
        shard = issuance[account_id % info.shards]
        owed[shard] = owed.get(shard, 0) - SEED_POINTS
    legs.extend(Leg(account_id, amount) for account_id, amount in owed.items())
    await post_transaction(
        session,
        TransactionSpec(
            kind="issue", partner_id=info.id, legs=legs, points=SEED_POINTS * len(refs),
            reference="opening balances",
        ),
    )  # fmt: skip


# --------------------------------------------------------------------------- API load


class _BatchCounts(msgspec.Struct):
    """What the driver reads of a batch's answer."""

    posted: int
    refused: int


@dataclass
class ApiLoad:
    """One SDK client per brand (each with its own connection pool) against the service."""

    base_url: str
    world: ApiWorld
    clients: list[AsyncExchangeClient] = field(default_factory=list)
    refused_items: int = 0

    async def __aenter__(self) -> ApiLoad:
        for brand in self.world.brands:
            client = AsyncExchangeClient(
                self.base_url, key_id=brand.key_id, alg="ed25519", key=brand.private_key,
                retries=0, timeout=30.0,
            )  # fmt: skip
            await client.refresh_keys()
            self.clients.append(client)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for client in self.clients:
            await client.aclose()

    def ledger_mix(self, brand_indices: list[int], seed: int) -> Operation:
        """Issue, redeem, transfer in turn (a third each), on a random member of a random brand
        among ``brand_indices``."""
        refs = self.world.member_refs
        rngs: dict[int, random.Random] = {}

        async def operation(worker: int, i: int) -> int:
            rng = rngs.setdefault(worker, random.Random(seed * 1000 + worker))
            client = self.clients[rng.choice(brand_indices)]
            kind = (worker + i) % 3
            if kind == 0:
                await client.issue(rng.choice(refs), rng.randint(100, 1_000))
            elif kind == 1:
                await client.redeem(rng.choice(refs), rng.randint(1, 50))
            else:
                source, target = rng.sample(refs, 2)
                await client.transfer(source, target, rng.randint(1, 50))
            return 1

        return operation

    def conversions(self, seed: int) -> Operation:
        """A member of a random brand converts to the same member ref at another brand."""
        refs = self.world.member_refs
        brands = self.world.brands
        rngs: dict[int, random.Random] = {}

        async def operation(worker: int, i: int) -> int:
            rng = rngs.setdefault(worker, random.Random(seed * 1000 + worker))
            source, target = rng.sample(range(len(brands)), 2)
            ref = rng.choice(refs)
            await self.clients[source].convert(
                ref, brands[target].currency, ref, rng.randint(100, 1_000)
            )
            return 1

        return operation

    def batches(self, brand_indices: list[int], size: int, seed: int) -> Operation:
        """``POST /v1/batches``: ``size`` operations of one random brand, the mix of
        :meth:`ledger_mix`; counts the items posted (a refused item is counted apart)."""
        refs = self.world.member_refs
        rngs: dict[int, random.Random] = {}

        async def operation(worker: int, i: int) -> int:
            rng = rngs.setdefault(worker, random.Random(seed * 1000 + worker))
            client = self.clients[rng.choice(brand_indices)]
            items: list[dict[str, Any]] = []
            for n in range(size):
                key = os.urandom(16).hex()
                kind = (worker + i + n) % 3
                if kind == 0:
                    item = {"type": "issue", "member_ref": rng.choice(refs),
                            "points": rng.randint(100, 1_000)}  # fmt: skip
                elif kind == 1:
                    item = {"type": "redeem", "member_ref": rng.choice(refs),
                            "points": rng.randint(1, 50)}  # fmt: skip
                else:
                    source, target = rng.sample(refs, 2)
                    item = {"type": "transfer", "from_member_ref": source,
                            "to_member_ref": target, "points": rng.randint(1, 50)}  # fmt: skip
                items.append({"idempotency_key": key, **item})
            response = await client.request("POST", "/v1/batches", json={"operations": items})
            if not response.is_success:
                raise ProblemError(response.status_code, response.json())
            # The counts alone: the SDK has checked the signature over the whole answer, and
            # building the thousand results as Python objects took a quarter of the driver.
            answer = msgspec.json.decode(response.content, type=_BatchCounts)
            self.refused_items += answer.refused
            return answer.posted

        return operation


async def batches_route(base_url: str) -> str | None:
    """The batches path the running service documents, if it has one."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10.0) as http:
        answer = await http.get("/docs/openapi.json")
        answer.raise_for_status()
        paths = answer.json().get("paths", {})
    for path, operations in paths.items():
        if path.rstrip("/") == "/v1/batches" and "post" in operations:
            return str(path)
    return None


# --------------------------------------------------------------------------- settlement, verify


@dataclass(frozen=True)
class ChildResult:
    """What a child process measured (its JSON line), and its wall time seen from outside."""

    data: dict[str, Any]
    wall_seconds: float


def run_child(args: list[str], env: dict[str, str], timeout: float) -> ChildResult:
    """Run ``python -m bench.scenarios ARGS`` in a process of its own.

    Peak memory is the child's own ``VmHWM``, read by the child as it ends. Not ``ru_maxrss``
    from ``wait4`` or ``RUSAGE_CHILDREN``: on Linux that also counts the pages the child had
    between ``fork`` and ``exec``, i.e. this (larger) process's, and it is the maximum over every
    child so far."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bench.scenarios", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        timeout=timeout,
    )
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace")[-3000:]
        raise RuntimeError(f"child {args} failed ({done.returncode}): {tail}")
    data = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return ChildResult(data, time.perf_counter() - started)


def child_env(url: str, data_dir: Path) -> dict[str, str]:
    return {
        "EXCHANGE_DATABASE_URL": url,
        "EXCHANGE_DATA_DIR": str(data_dir),
        "EXCHANGE_AUTO_MIGRATE": "0",
        "EXCHANGE_SCHEDULER": "0",
    }


async def group_by_reference(url: str, cutoff: dt.datetime, *, runs: int = 2) -> dict[str, float]:
    """The bare aggregate a settlement cannot beat: per money account, and per partner (a join),
    the sum of the day's postings. Best of ``runs`` (warm cache), in seconds."""
    per_account = (
        "SELECT account_id, sum(amount) FROM posting"
        " WHERE ledger = 'EUR' AND created_at < $1 GROUP BY account_id"
    )
    per_partner = (
        "SELECT a.partner_id, sum(p.amount) FROM posting p JOIN account a ON a.id = p.account_id"
        " WHERE p.ledger = 'EUR' AND p.created_at < $1 GROUP BY a.partner_id"
    )
    conn = await asyncpg.connect(url)
    out: dict[str, float] = {}
    try:
        for name, query in (("per_account", per_account), ("per_partner", per_partner)):
            best = float("inf")
            for _ in range(runs):
                started = time.perf_counter()
                await conn.fetch(query, cutoff)
                best = min(best, time.perf_counter() - started)
            out[name] = best
    finally:
        await conn.close()
    return out


def _status_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


async def _child_settle(day: dt.date) -> dict[str, Any]:
    from exchange.db import create_engine, session_maker
    from exchange.settings import get_settings
    from exchange.signing import load_exchange_keys
    from settlement.runs import settle_day

    settings = get_settings()
    keys = load_exchange_keys(settings)
    engine = create_engine(settings)
    sessions = session_maker(engine)
    steps: dict[str, float] = {}
    rss_before = _status_kib("VmRSS")
    started = time.perf_counter()

    def on_step(_day: dt.date, step: str) -> None:
        steps[step] = round(time.perf_counter() - started, 3)

    try:
        batch = await settle_day(sessions, day, settings=settings, keys=keys, on_step=on_step)
        elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    return {
        "seconds": elapsed,
        "postings": batch.postings,
        "participants": len(batch.positions),
        "instructions": len(batch.instructions),
        "steps_at": steps,
        "vm_rss_before_kib": rss_before,
        "vm_hwm_kib": _status_kib("VmHWM"),
    }


async def _child_verify() -> dict[str, Any]:
    from exchange.db import create_engine
    from exchange.ledger.verify import verify_ledger
    from exchange.settings import get_settings

    engine = create_engine(get_settings())
    rss_before = _status_kib("VmRSS")
    try:
        async with AsyncSession(engine) as session, session.begin():
            started = time.perf_counter()
            report = await verify_ledger(session)
            elapsed = time.perf_counter() - started
    finally:
        await engine.dispose()
    return {
        "seconds": elapsed,
        "postings": report.postings,
        "accounts": report.accounts,
        "ok": report.ok,
        "first_fault": report.as_dict()["first_fault"],
        "vm_rss_before_kib": rss_before,
        "vm_hwm_kib": _status_kib("VmHWM"),
    }


def _child_main(argv: list[str]) -> None:
    if argv[:1] == ["settle"]:
        result = asyncio.run(_child_settle(dt.date.fromisoformat(argv[1])))
    elif argv[:1] == ["verify"]:
        result = asyncio.run(_child_verify())
    else:
        raise SystemExit("usage: python -m bench.scenarios settle YYYY-MM-DD | verify")
    print(json.dumps(result))


if __name__ == "__main__":
    _child_main(sys.argv[1:])
