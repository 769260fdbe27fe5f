"""The bank test, in the manner of Jepsen's: money and points must survive crashes.

Many concurrent clients issue, redeem, transfer, convert, donate and reverse at random through the
real signed API, each brand with its own Ed25519 key, against a real uvicorn process on a fresh
PostgreSQL database, while a killer SIGKILLs the service every few seconds and starts it again
(same port, same database, same signing and master keys). A client that loses its connection
retries with the same ``Idempotency-Key`` until it has an answer, across the downtime. Some
operations are sent impatiently (the first attempt hangs up after 20 ms, often while the exchange
goes on to commit it), and some clients give up at their first lost answer: those operations
stay *unknown*, as real ones do.

Every operation goes into a log: kind, brand, idempotency key, request, attempts, final status
and answer (or ``unknown``). When the clients are done and the service stopped, the log is held
against the database:

1. every ledger sums to zero, over postings and over account balances;
2. no member account is negative, nor its available points (balance - held);
3. every acknowledged operation is in the ledger exactly once, under its partner's idempotency
   key, with the transaction id the client was given (retried or not: never twice); a refused
   one is not at all; an unknown one zero times or once (then it is ``unknown-committed``);
   the ledger holds no transaction whose key is not in the log;
4. ``verify_ledger`` (and ``litestar ledger verify``, as a subprocess) finds no fault;
5. each member's balance is what the log says it must be (a model of every operation, reversals
   included), each participant's settlement balance is its net from the log, and settling the
   whole run as one business day (a calendar whose cutoff is just after the run) gives the gross
   obligations the log predicts: per conversion ``destination_micros`` from the source brand to
   the destination brand and ``operator_fee_micros`` to the operator, per donation its receipt's
   ``amount_micros`` to the charity, and per reversed share of either the opposite obligation.

Reversals are predicted without knowing the order they committed in: the engine reverses a share
of a transaction cumulatively (:func:`exchange.ledger.service.reversal_legs`), so whatever the
order, the reversals of one transaction that reach ``R`` of its ``P`` points have together moved
``floor(amount * R / P)`` of each of its non-balancing legs.

    python -m bench.bank --minutes 5                  # the long form, by hand
    pytest tests/integration/test_bank.py             # the short form, in CI
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import math
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from bench.pg import drop_database, recreate_database
from bench.service import ROOT, ServiceProcess
from exchange.db import create_engine
from exchange.ledger.models import Account, LedgerTransaction, Member, Posting
from exchange.ledger.verify import verify_ledger
from exchange.migrate import upgrade_async
from exchange.rates.service import set_point_value, set_rate
from exchange.settings import Settings
from exchange.signing import load_exchange_keys
from partners.client import IN_FLIGHT_PROBLEM, AsyncExchangeClient, ResponseSignatureInvalid
from partners.service import PartnerInfo, add_key, create_partner
from settlement.netting import Obligation, net_positions
from settlement.service import settle_day

SETTLEMENT_CURRENCY = "EUR"
POINT_VALUES = {"SKY": 12_000, "HTL": 5_000, "RTL": 8_000}
"""Micros per point of each brand: an airline, a hotel chain, a retailer."""
RATES = {
    # (from, to): (from_points, to_points, fee_bps, min_points); two pairs without a fee, so
    # that conversions with no operator leg are in the mix too.
    ("SKY", "HTL"): (1, 2, 150, 10),
    ("HTL", "SKY"): (5, 2, 100, 10),
    ("SKY", "RTL"): (2, 3, 0, 10),
    ("RTL", "SKY"): (3, 2, 200, 10),
    ("HTL", "RTL"): (3, 2, 50, 10),
    ("RTL", "HTL"): (2, 3, 0, 10),
}
CHARITY_MINIMUM = 5
OPERATIONS = {
    # kind: (weight, path); a reversal's path names its transaction.
    "issue": (30, "/v1/issuances"),
    "transfer": (15, "/v1/transfers"),
    "convert": (20, "/v1/conversions"),
    "donate": (10, "/v1/donations"),
    "redeem": (10, "/v1/redemptions"),
    "reverse": (15, "/v1/transactions/{}/reversal"),
}
REQUEST_TIMEOUT = 10.0
IMPATIENCE = 0.02
"""Seconds an impatient first attempt waits for its answer: often less than the exchange takes,
so that the client hangs up on a request the exchange may well go on to commit."""
RETRY_CEILING = 1.0
"""The longest a client waits between two attempts of one operation, in seconds."""


@dataclass(frozen=True)
class BankConfig:
    seconds: float = 20.0
    """How long clients start new operations; then they finish the ones under way."""
    clients: int = 12
    kill_every: float = 4.0
    """Seconds between kills (each kill lands within a quarter of this of its slot)."""
    members: int = 10
    """Members per brand; every member_ref is enrolled at every brand."""
    seed: int = 1
    abandon_rate: float = 0.15
    """The share of operations whose client gives up at its first lost answer."""
    impatient_rate: float = 0.1
    """The share of operations whose first attempt stops waiting after ``IMPATIENCE`` seconds."""
    drain_seconds: float = 30.0
    """How long, after ``seconds``, operations under way may keep retrying."""
    workers: int = 1
    cli_verify: bool = True
    """Also run ``litestar ledger verify`` as a subprocess."""


@dataclass
class Op:
    """One operation of the log."""

    id: int
    client: int
    kind: str
    brand: str
    key: str
    method: str
    path: str
    body: dict[str, Any]
    target: str | None = None
    """A reversal's original transaction."""
    abandon: bool = False
    impatient: bool = False
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    status: int | None = None
    response: Any = None
    replayed: bool = False
    outcome: str = "pending"
    """``ok`` (2xx), ``refused`` (4xx), ``unknown``; after the checks an unknown one is
    ``unknown-committed`` or ``unknown-absent``."""
    transaction_id: str | None = None
    started: float = 0.0
    finished: float = 0.0

    @property
    def problem_type(self) -> str | None:
        if self.outcome == "refused" and isinstance(self.response, dict):
            return str(self.response.get("type", "")).rsplit("/", 1)[-1]
        return None


@dataclass(frozen=True)
class Brand:
    partner: PartnerInfo
    key_id: str
    key: Ed25519PrivateKey

    @property
    def currency(self) -> str:
        assert self.partner.currency is not None
        return self.partner.currency


@dataclass(frozen=True)
class World:
    """What the set-up made: partners, their keys, the service's configuration."""

    settings: Settings
    brands: dict[str, Brand]
    charity: PartnerInfo
    operator: PartnerInfo
    member_refs: tuple[str, ...]


@dataclass
class BankResult:
    ops: list[Op]
    kills: int = 0
    restart_seconds: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    transport_errors: int = 0
    server_errors: list[str] = field(default_factory=list)
    """Every 5xx answer, as ``status type``: none is expected."""
    in_flight: int = 0
    violations: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    log_path: Path | None = None

    @property
    def ledger_ops(self) -> list[Op]:
        return [op for op in self.ops if op.kind != "enrol"]

    def summary(self) -> dict[str, Any]:
        ops = self.ledger_ops
        outcomes = Counter(op.outcome for op in ops)
        refusals = Counter(op.problem_type for op in ops if op.problem_type)
        restarts = sorted(self.restart_seconds)
        return {
            "ops": len(ops),
            "by_kind": dict(sorted(Counter(op.kind for op in ops).items())),
            "outcomes": dict(sorted(outcomes.items())),
            "refusals": dict(sorted(refusals.items())),
            "retried": sum(1 for op in ops if op.attempts > 1),
            "retried_ok": sum(1 for op in ops if op.attempts > 1 and op.outcome == "ok"),
            "replayed": sum(1 for op in ops if op.replayed),
            "attempts": sum(op.attempts for op in ops),
            "transport_errors": self.transport_errors,
            "errors": dict(sorted(Counter(e for op in ops for e in op.errors).items())),
            "impatient": sum(1 for op in ops if op.impatient),
            "abandoning": sum(1 for op in ops if op.abandon),
            "in_flight_409": self.in_flight,
            "server_errors": len(self.server_errors),
            "kills": self.kills,
            "restart_seconds_max": round(restarts[-1], 2) if restarts else None,
            "restart_seconds_median": round(restarts[len(restarts) // 2], 2) if restarts else None,
            "elapsed_seconds": round(self.elapsed, 1),
            "checks": self.checks,
            "violations": self.violations[:50],
            "violation_count": len(self.violations),
            "log": str(self.log_path) if self.log_path else None,
        }


# --------------------------------------------------------------------------- set-up


def bank_settings(
    database_url: str, data_dir: Path, signing_key: Path, master_key: str
) -> Settings:
    """The service's configuration, not read from this process's environment."""
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        auto_migrate=False,
        signing_key=signing_key,
        master_key=master_key,
        settlement_currency=SETTLEMENT_CURRENCY,
        settlement_minor_exponent=2,
        issuance_shards=4,
        scheduler=False,
    )


def service_env(settings: Settings) -> dict[str, str]:
    assert settings.signing_key is not None and settings.master_key is not None
    return {
        "EXCHANGE_SIGNING_KEY": str(settings.signing_key),
        "EXCHANGE_MASTER_KEY": settings.master_key,
        "EXCHANGE_AUTO_MIGRATE": "0",
        "EXCHANGE_SCHEDULER": "0",
        "EXCHANGE_SETTLEMENT_CURRENCY": settings.settlement_currency,
        "EXCHANGE_ISSUANCE_SHARDS": str(settings.issuance_shards),
    }


def _pem(private: Ed25519PrivateKey, public: bool) -> bytes:
    if public:
        return private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


async def prepare(database_url: str, data_dir: Path, config: BankConfig) -> World:
    """Migrate a fresh database and set the coalition up through the services: three brands, a
    charity and the operator, a key per brand, point values and a rate for every pair."""
    data_dir.mkdir(parents=True, exist_ok=True)
    signing_key = data_dir / "signing-key.pem"
    signing_key.write_bytes(_pem(Ed25519PrivateKey.generate(), public=False))
    signing_key.chmod(0o600)
    master_key = base64.b64encode(os.urandom(32)).decode()
    settings = bank_settings(database_url, data_dir, signing_key, master_key)
    await upgrade_async(settings)
    engine = create_engine(settings)
    brands: dict[str, Brand] = {}
    try:
        async with AsyncSession(engine) as session, session.begin():

            async def partner(kind: str, name: str, currency: str | None = None) -> PartnerInfo:
                return await create_partner(
                    session, kind=kind, name=name, currency=currency,
                    settlement_currency=SETTLEMENT_CURRENCY, shards=settings.issuance_shards,
                    min_donation_points=CHARITY_MINIMUM if kind == "charity" else None,
                )  # fmt: skip

            operator = await partner("operator", "Coalition operator")
            charity = await partner("charity", "Sea Rescue")
            for currency, name in (("SKY", "Sky Air"), ("HTL", "Hotel Co"), ("RTL", "Shop Mart")):
                info = await partner("brand", name, currency)
                private = Ed25519PrivateKey.generate()
                key = await add_key(
                    session, partner_id=info.id, alg="ed25519",
                    master_key=base64.b64decode(master_key), public_key_pem=_pem(private, True),
                )  # fmt: skip
                brands[currency] = Brand(info, key.key_id, private)
            for currency, micros in POINT_VALUES.items():
                await set_point_value(session, currency, micros)
            for (source, destination), (from_points, to_points, fee_bps, least) in RATES.items():
                await set_rate(
                    session, source, destination, from_points=from_points,
                    to_points=to_points, fee_bps=fee_bps, min_points=least,
                )  # fmt: skip
    finally:
        await engine.dispose()
    refs = tuple(f"member-{i:03d}" for i in range(config.members))
    return World(settings, brands, charity, operator, refs)


# --------------------------------------------------------------------------- the run


class Bank:
    """The clients, the killer and the log of one run."""

    def __init__(self, world: World, service: ServiceProcess, config: BankConfig) -> None:
        self.world = world
        self.service = service
        self.config = config
        self.result = BankResult(ops=[])
        self.acknowledged: dict[str, list[Op]] = defaultdict(list)
        """Per brand, its acknowledged operations a reversal may pick (any but reversals)."""
        self.next_id = 0
        self.run_tag = uuid.uuid4().hex[:8]
        self.end = self.deadline = math.inf
        """When clients stop starting operations, and stop retrying them (event loop time)."""

    def client(self, brand: Brand) -> AsyncExchangeClient:
        """A brand's client. It fetches the exchange's public keys with its first answer; when
        the service dies just then, that answer counts as lost, and is asked for again."""
        return AsyncExchangeClient(
            self.service.base_url,
            key_id=brand.key_id,
            alg="ed25519",
            key=brand.key,
            retries=0,  # the harness retries by itself, across the downtime, and counts
            timeout=REQUEST_TIMEOUT,
        )

    def new_op(
        self, client: int, kind: str, brand: str, path: str, body: dict[str, Any], **extra: Any
    ) -> Op:
        self.next_id += 1
        op = Op(
            id=self.next_id, client=client, kind=kind, brand=brand,
            key=f"bank-{self.run_tag}-{client}-{self.next_id}", method="POST", path=path,
            body=body, **extra,
        )  # fmt: skip
        self.result.ops.append(op)
        return op

    async def perform(self, client: AsyncExchangeClient, op: Op, rng: random.Random) -> None:
        """Send ``op`` until it has an answer: the same key every time, a fresh signature each.
        An impatient operation's first attempt gives up waiting after ``IMPATIENCE`` seconds,
        perhaps while the exchange commits it. An operation that gives up at its first lost
        answer (``abandon``), or is still unanswered at the deadline, stays ``unknown``."""
        loop = asyncio.get_running_loop()
        op.started = time.time()
        pause = 0.05
        while True:
            op.attempts += 1
            sending = client.request(op.method, op.path, json=op.body, idempotency_key=op.key)
            try:
                if op.impatient and op.attempts == 1:
                    response = await asyncio.wait_for(sending, IMPATIENCE)
                else:
                    response = await sending
            except (httpx.TransportError, TimeoutError) as exc:
                self.result.transport_errors += 1
                op.errors.append(type(exc).__name__)
                if op.abandon:
                    break
            except ResponseSignatureInvalid as exc:
                self.result.violations.append(
                    f"op {op.id}: answer not signed by the exchange: {exc}"
                )
                op.errors.append("ResponseSignatureInvalid")
                break
            else:
                if not self._take_answer(op, response):
                    return
            if loop.time() > self.deadline:
                if not op.abandon:
                    self.result.violations.append(
                        f"op {op.id} {op.kind} still unanswered {self.config.drain_seconds} s"
                        f" after the clients stopped: {op.errors[-5:]}"
                    )
                break
            await asyncio.sleep(pause * (0.5 + rng.random()))
            pause = min(pause * 2, RETRY_CEILING)
        op.outcome = "unknown"
        op.finished = time.time()

    def _take_answer(self, op: Op, response: httpx.Response) -> bool:
        """Record an answer; ``True`` when it says "ask again" (5xx, key in flight)."""
        status = response.status_code
        body: Any
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text
        kind = body.get("type", "") if isinstance(body, dict) else ""
        if status >= 500:
            # Retried like a lost answer (nothing was committed, says the contract), but none
            # is expected: a crash loses connections, it does not make the exchange answer 5xx.
            error = f"{status} {kind} (op {op.id} {op.kind}, attempt {op.attempts})"
            self.result.server_errors.append(error)
            self.result.violations.append(f"5xx answer: {error}")
            op.errors.append(f"{status} {kind}")
            return True
        if status == 409 and str(kind).endswith(IN_FLIGHT_PROBLEM):
            self.result.in_flight += 1
            op.errors.append("409 in-flight")
            return True
        op.status = status
        op.response = body
        op.replayed = response.headers.get("idempotent-replayed") == "true"
        op.finished = time.time()
        if 200 <= status < 300:
            op.outcome = "ok"
            if op.kind != "enrol":
                op.transaction_id = body["transaction"]["id"]
                if op.kind != "reverse":
                    self.acknowledged[op.brand].append(op)
        else:
            op.outcome = "refused"
        return False

    async def enrol_everyone(self) -> None:
        rng = random.Random(0)
        for brand in self.world.brands.values():
            async with self.client(brand) as client:
                for ref in self.world.member_refs:
                    body = {"member_ref": ref}
                    op = self.new_op(-1, "enrol", brand.currency, "/v1/members", body)
                    await self.perform(client, op, rng)
                    if op.outcome != "ok":
                        raise RuntimeError(f"could not enrol {ref} at {brand.currency}: {op}")

    def random_op(self, client: int, rng: random.Random) -> Op:
        brand = rng.choice(sorted(self.world.brands))
        refs = self.world.member_refs
        kind = rng.choices(list(OPERATIONS), weights=[w for w, _ in OPERATIONS.values()])[0]
        reference = f"bank-{self.run_tag}-{self.next_id + 1}"
        chaos = {
            "abandon": rng.random() < self.config.abandon_rate,
            "impatient": rng.random() < self.config.impatient_rate,
        }
        member = rng.choice(refs)
        if kind == "reverse":
            candidates = self.acknowledged[brand]
            if not candidates:
                kind = "issue"
            else:
                # Often one of the latest, so that reversals of one transaction race each other.
                pool = candidates[-20:] if rng.random() < 0.5 else candidates
                original = rng.choice(pool)
                assert original.transaction_id is not None
                total = original.response["transaction"]["points"]
                share = {} if rng.random() < 0.4 else {"points": rng.randint(1, max(1, total))}
                return self.new_op(
                    client, kind, brand, OPERATIONS[kind][1].format(original.transaction_id), share,
                    target=original.transaction_id, **chaos,
                )  # fmt: skip
        path = OPERATIONS[kind][1]
        body: dict[str, Any]
        if kind == "issue":
            body = {"member_ref": member, "points": rng.randint(1, 3_000), "reference": reference}
        elif kind == "redeem":
            body = {"member_ref": member, "points": rng.randint(1, 600), "reference": reference}
        elif kind == "transfer":
            to = rng.choice([ref for ref in refs if ref != member])
            body = {"from_member_ref": member, "to_member_ref": to,
                    "points": rng.randint(1, 800), "reference": reference}  # fmt: skip
        elif kind == "convert":
            destination = rng.choice([c for c in sorted(self.world.brands) if c != brand])
            body = {"member_ref": member, "to_partner": destination,
                    "to_member_ref": rng.choice(refs), "points": rng.randint(10, 1_000),
                    "reference": reference}  # fmt: skip
        else:
            points = rng.randint(CHARITY_MINIMUM, 300)
            body = {"member_ref": member, "charity": str(self.world.charity.id),
                    "points": points, "reference": reference}  # fmt: skip
        return self.new_op(client, kind, brand, path, body, **chaos)

    async def client_loop(self, number: int) -> None:
        rng = random.Random(self.config.seed * 7919 + number)
        clients = {currency: self.client(brand) for currency, brand in self.world.brands.items()}
        try:
            loop = asyncio.get_running_loop()
            while loop.time() < self.end:
                op = self.random_op(number, rng)
                await self.perform(clients[op.brand], op, rng)
        finally:
            for client in clients.values():
                await client.aclose()

    async def kill_loop(self) -> None:
        """SIGKILL the service at ``kill_every`` intervals (give or take a quarter), start it
        again at once; the last kill comes before the clients stop starting operations."""
        rng = random.Random(self.config.seed)
        loop = asyncio.get_running_loop()
        begin = loop.time()
        slot = 1
        while True:
            at = begin + self.config.kill_every * (slot + rng.uniform(-0.25, 0.25))
            slot += 1
            if at >= self.end - 0.5:
                return
            if at > loop.time():
                await asyncio.sleep(at - loop.time())
            await asyncio.to_thread(self.service.kill)
            self.result.kills += 1
            started = time.perf_counter()
            await self._restart()
            self.result.restart_seconds.append(time.perf_counter() - started)

    async def _restart(self) -> None:
        for attempt in range(3):
            try:
                await asyncio.to_thread(self.service.start)
                return
            except (RuntimeError, TimeoutError) as exc:
                self.result.violations.append(f"restart {attempt + 1} failed: {exc}")
                await asyncio.to_thread(self.service.kill)
        raise RuntimeError(f"the service would not start again; see {self.service.log_path}")

    async def run(self) -> None:
        """Clients and killer for ``seconds``; then the operations under way finish."""
        started = time.perf_counter()
        self.end = asyncio.get_running_loop().time() + self.config.seconds
        self.deadline = self.end + self.config.drain_seconds
        clients = [asyncio.create_task(self.client_loop(n)) for n in range(self.config.clients)]
        killer = asyncio.create_task(self.kill_loop())
        try:
            await killer
            await asyncio.gather(*clients)
        finally:
            for task in (*clients, killer):
                task.cancel()
        self.result.elapsed = time.perf_counter() - started


# --------------------------------------------------------------------------- the checks


@dataclass(frozen=True)
class Recorded:
    """A ledger transaction as the checks read it."""

    id: str
    kind: str
    partner_id: str
    key: str | None
    points: int
    reverses_id: str | None
    details: dict[str, Any]


class Model:
    """What the log says the ledger must hold: member balances and money owed."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.partner_of = {c: str(b.partner.id) for c, b in world.brands.items()}
        self.charity = str(world.charity.id)
        self.operator = str(world.operator.id)
        self.points: dict[tuple[str, str], int] = defaultdict(int)
        self.owed: dict[tuple[str, str], int] = defaultdict(int)
        self.reversed: dict[str, int] = defaultdict(int)

    def apply(self, op: Op, facts: dict[str, Any]) -> None:
        """One committed operation; ``facts`` holds what only the exchange knew (a conversion's
        ``out`` and money, a donation's amount, a full reversal's points)."""
        body, brand = op.body, op.brand
        if op.kind == "issue":
            self.points[brand, body["member_ref"]] += body["points"]
        elif op.kind == "redeem":
            self.points[brand, body["member_ref"]] -= body["points"]
        elif op.kind == "transfer":
            self.points[brand, body["from_member_ref"]] -= body["points"]
            self.points[brand, body["to_member_ref"]] += body["points"]
        elif op.kind == "convert":
            destination = body["to_partner"]
            self.points[brand, body["member_ref"]] -= body["points"]
            self.points[destination, body["to_member_ref"]] += facts["out"]
            source, target = self.partner_of[brand], self.partner_of[destination]
            self.owed[source, target] += facts["destination_micros"]
            self.owed[source, self.operator] += facts["operator_fee_micros"]
        elif op.kind == "donate":
            self.points[brand, body["member_ref"]] -= body["points"]
            self.owed[self.partner_of[brand], self.charity] += facts["amount_micros"]
        elif op.kind == "reverse":
            assert op.target is not None
            self.reversed[op.target] += facts["points"]

    def apply_reversals(self, originals: dict[str, tuple[Op, dict[str, Any]]]) -> list[str]:
        """Each original's reversals together, by the points they reached (see the module
        note); returns what breaks the cap."""
        problems = []
        for target, reached in self.reversed.items():
            if target not in originals:
                problems.append(f"reversals of {target}, which is not a logged transaction")
                continue
            op, facts = originals[target]
            total, body, brand = facts["points"], op.body, op.brand
            if reached > total:
                problems.append(f"transaction {target} reversed {reached} of {total} points")

            def share(amount: int, total: int = total, reached: int = reached) -> int:
                return amount * reached // total

            if op.kind == "issue":
                self.points[brand, body["member_ref"]] -= reached
            elif op.kind == "redeem":
                self.points[brand, body["member_ref"]] += reached
            elif op.kind == "transfer":
                self.points[brand, body["from_member_ref"]] += reached
                self.points[brand, body["to_member_ref"]] -= reached
            elif op.kind == "convert":
                destination = body["to_partner"]
                source, target_brand = self.partner_of[brand], self.partner_of[destination]
                self.points[brand, body["member_ref"]] += reached
                self.points[destination, body["to_member_ref"]] -= share(facts["out"])
                self.owed[target_brand, source] += share(facts["destination_micros"])
                self.owed[self.operator, source] += share(facts["operator_fee_micros"])
            elif op.kind == "donate":
                self.points[brand, body["member_ref"]] += reached
                self.owed[self.charity, self.partner_of[brand]] += share(facts["amount_micros"])
        return problems

    def obligations(self) -> dict[tuple[str, str], int]:
        return {pair: amount for pair, amount in sorted(self.owed.items()) if amount}


def _facts_from_answer(op: Op) -> dict[str, Any]:
    answer = op.response
    facts: dict[str, Any] = {"points": answer["transaction"]["points"]}
    if op.kind == "convert":
        conversion = answer["conversion"]
        facts.update(
            out=conversion["out"],
            destination_micros=conversion["money"]["destination_micros"],
            operator_fee_micros=conversion["money"]["operator_fee_micros"],
        )
    elif op.kind == "donate":
        facts["amount_micros"] = answer["receipt"]["amount_micros"]
    return facts


def _facts_from_ledger(tx: Recorded) -> dict[str, Any]:
    facts: dict[str, Any] = {"points": tx.points}
    for name in ("out", "destination_micros", "operator_fee_micros", "amount_micros"):
        if name in tx.details:
            facts[name] = tx.details[name]
    return facts


class Checker:
    """Holds the log of a run against its database; every finding goes to ``violations``."""

    def __init__(self, world: World, result: BankResult) -> None:
        self.world = world
        self.result = result
        self.violations = result.violations

    def fail(self, message: str) -> None:
        self.violations.append(message)

    async def run(self, engine: AsyncEngine) -> None:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        async with sessions() as session:
            await self.check_sums(session)
            members = await self.check_members(session)
            transactions = await self.read_transactions(session)
            committed = self.check_idempotency(transactions)
            model = self.check_model(committed, members)
            await self.check_settlement_accounts(session, model)
            await self.check_verify(session)
        await self.check_settlement(sessions, model)

    async def check_sums(self, session: AsyncSession) -> None:
        p, a = Posting.__table__, Account.__table__
        postings = await _sums(session, p.c.ledger, p.c.amount)
        balances = await _sums(session, a.c.ledger, a.c.balance)
        for name, sums in (("postings", postings), ("balances", balances)):
            for ledger, total in sorted(sums.items()):
                if total:
                    self.fail(f"ledger {ledger}: {name} sum to {total}, not 0")
        self.result.checks["ledgers"] = sorted(balances)
        self.result.checks["postings"] = int(
            await session.scalar(select(func.count()).select_from(p)) or 0
        )

    async def check_members(self, session: AsyncSession) -> dict[tuple[str, str], int]:
        a, m = Account.__table__, Member.__table__
        rows = (
            await session.execute(
                select(a.c.ledger, m.c.member_ref, a.c.balance, a.c.held)
                .join(m, m.c.id == a.c.member_id)
                .where(a.c.kind == "member")
            )
        ).all()
        for row in rows:
            if row.balance < 0 or row.balance - row.held < 0:
                self.fail(
                    f"member {row.member_ref} at {row.ledger}: balance {row.balance},"
                    f" held {row.held}"
                )
        return {(row.ledger, row.member_ref): row.balance for row in rows}

    async def read_transactions(self, session: AsyncSession) -> list[Recorded]:
        t = LedgerTransaction.__table__
        rows = await session.execute(
            select(
                t.c.id, t.c.kind, t.c.partner_id, t.c.idempotency_key, t.c.points,
                t.c.reverses_id, t.c.details,
            )
        )  # fmt: skip
        return [
            Recorded(
                str(row.id),
                row.kind,
                str(row.partner_id),
                row.idempotency_key,
                row.points,
                None if row.reverses_id is None else str(row.reverses_id),
                json.loads(row.details) if row.details else {},
            )
            for row in rows
        ]

    def check_idempotency(self, transactions: list[Recorded]) -> list[tuple[Op, dict[str, Any]]]:
        """Check 3; returns every committed operation with its facts."""
        by_key: dict[tuple[str, str | None], list[Recorded]] = defaultdict(list)
        for tx in transactions:
            by_key[tx.partner_id, tx.key].append(tx)
        logged = set()
        committed = []
        for op in self.result.ops:
            partner = str(self.world.brands[op.brand].partner.id)
            logged.add((partner, op.key))
            found = by_key.get((partner, op.key), [])
            if op.kind == "enrol" or op.outcome == "refused":
                if found:
                    self.fail(f"op {op.id} {op.kind} ({op.outcome}) posted {len(found)} times")
                continue
            if op.outcome == "ok":
                if len(found) != 1:
                    self.fail(f"op {op.id} {op.kind} acknowledged, in the ledger {len(found)}x")
                    continue
                tx = found[0]
                if tx.id != op.transaction_id:
                    self.fail(f"op {op.id}: acknowledged {op.transaction_id}, ledger has {tx.id}")
                facts = _facts_from_answer(op)
                if _facts_from_ledger(tx) != facts:
                    self.fail(f"op {op.id}: answered {facts}, ledger has {_facts_from_ledger(tx)}")
            else:
                if len(found) > 1:
                    self.fail(f"op {op.id} {op.kind} unanswered, in the ledger {len(found)}x")
                    continue
                if not found:
                    op.outcome = "unknown-absent"
                    continue
                op.outcome = "unknown-committed"
                tx = found[0]
                op.transaction_id = tx.id
                facts = _facts_from_ledger(tx)
            if tx.kind != op.kind:
                self.fail(f"op {op.id} {op.kind} is a {tx.kind} transaction in the ledger")
            if op.kind == "reverse" and tx.reverses_id != op.target:
                self.fail(f"op {op.id} reverses {op.target}, the ledger says {tx.reverses_id}")
            committed.append((op, facts))
        strays = [tx for tx in transactions if (tx.partner_id, tx.key) not in logged]
        for tx in strays[:20]:
            self.fail(f"transaction {tx.id} ({tx.kind}, key {tx.key!r}) is not in the log")
        self.result.checks["transactions"] = len(transactions)
        self.result.checks["stray_transactions"] = len(strays)
        return committed

    def check_model(
        self, committed: list[tuple[Op, dict[str, Any]]], members: dict[tuple[str, str], int]
    ) -> Model:
        model = Model(self.world)
        originals = {}
        for op, facts in committed:
            model.apply(op, facts)
            assert op.transaction_id is not None
            originals[op.transaction_id] = (op, facts)
        for problem in model.apply_reversals(originals):
            self.fail(problem)
        wrong = {
            member: (members.get(member, 0), expected)
            for member, expected in model.points.items()
            if members.get(member, 0) != expected
        }
        wrong.update({m: (b, 0) for m, b in members.items() if m not in model.points and b != 0})
        for (ledger, ref), (actual, expected) in sorted(wrong.items())[:20]:
            self.fail(f"member {ref} at {ledger}: balance {actual}, the log says {expected}")
        self.result.checks["member_balances"] = len(members)
        return model

    async def check_settlement_accounts(self, session: AsyncSession, model: Model) -> None:
        a = Account.__table__
        balances = {
            str(partner): int(total)
            for partner, total in await session.execute(
                select(a.c.partner_id, func.sum(a.c.balance))
                .where(a.c.kind == "settlement")
                .group_by(a.c.partner_id)
            )
        }
        expected = net_positions(_as_obligations(model.obligations()))
        for partner in sorted(balances.keys() | expected.keys()):
            if balances.get(partner, 0) != expected.get(partner, 0):
                self.fail(
                    f"settlement account of {partner}: {balances.get(partner, 0)},"
                    f" the log says {expected.get(partner, 0)}"
                )

    async def check_verify(self, session: AsyncSession) -> None:
        report = await verify_ledger(session)
        self.result.checks["verify"] = {"ok": report.ok, "postings": report.postings}
        if not report.ok:
            self.fail(f"verify_ledger: {report.as_dict()['first_fault']}")

    async def check_settlement(
        self, sessions: async_sessionmaker[AsyncSession], model: Model
    ) -> None:
        cutoff = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
        calendar = RunCalendar(cutoff.date(), cutoff)
        settings = self.world.settings
        batch = await settle_day(
            sessions, calendar.business_date, settings=settings,
            keys=load_exchange_keys(settings), calendar=calendar, now=cutoff,
        )  # fmt: skip
        got = {(str(o.debtor_id), str(o.creditor_id)): o.amount_micros for o in batch.obligations}
        expected = {pair: amount for pair, amount in model.obligations().items()}
        names = self.names()
        for pair in sorted(got.keys() | expected.keys()):
            if got.get(pair, 0) != expected.get(pair, 0):
                self.fail(
                    f"settlement: {names[pair[0]]} owes {names[pair[1]]} {got.get(pair, 0)}"
                    f" micros, the log says {expected.get(pair, 0)}"
                )
        nets = {str(p.partner_id): p.net_micros for p in batch.positions}
        want = net_positions(_as_obligations(expected))
        for partner in sorted(nets.keys() | want.keys()):
            if nets.get(partner, 0) != want.get(partner, 0):
                self.fail(
                    f"settlement: net of {names[partner]} is {nets.get(partner, 0)},"
                    f" the log says {want.get(partner, 0)}"
                )
        async with sessions() as session:
            money = await session.scalar(
                select(func.count())
                .select_from(Posting.__table__)
                .where(Posting.__table__.c.ledger == SETTLEMENT_CURRENCY)
            )
        if batch.postings != money:
            self.fail(f"settlement took {batch.postings} of {money} money postings")
        if sum(p.payout_minor for p in batch.positions) != 0:
            self.fail("settlement payouts do not sum to zero")
        self.result.checks["settlement"] = {
            "business_date": batch.business_date.isoformat(),
            "postings": batch.postings,
            "obligations": {f"{names[d]} -> {names[c]}": v for (d, c), v in sorted(got.items())},
        }

    def names(self) -> dict[str, str]:
        names = {str(b.partner.id): c for c, b in self.world.brands.items()}
        names[str(self.world.charity.id)] = "charity"
        names[str(self.world.operator.id)] = "operator"
        return names


async def _sums(session: AsyncSession, group: Any, amount: Any) -> dict[str, int]:
    rows = await session.execute(select(group, func.sum(amount)).group_by(group))
    return {ledger: int(total) for ledger, total in rows}


def _as_obligations(matrix: dict[tuple[str, str], int]) -> Iterator[Obligation]:
    return (Obligation(d, c, amount) for (d, c), amount in matrix.items() if amount)


@dataclass(frozen=True)
class RunCalendar:
    """One business day that ends at ``cutoff``, just after the run: the whole run settles as
    one batch. Day ``D + k`` ends ``k`` days later."""

    business_date: dt.date
    cutoff: dt.datetime

    def cutoff_at(self, business_date: dt.date) -> dt.datetime:
        return self.cutoff + (business_date - self.business_date).days * dt.timedelta(days=1)

    def business_date_of(self, instant: dt.datetime) -> dt.date:
        days = (instant - self.cutoff) // dt.timedelta(days=1)
        return self.business_date + dt.timedelta(days=days + 1)


def cli_verify(settings: Settings) -> dict[str, Any]:
    """``litestar ledger verify`` as the operator runs it."""
    env = {**os.environ, "EXCHANGE_DATABASE_URL": str(settings.database_url)}
    env.update(service_env(settings))
    done = subprocess.run(
        [sys.executable, "-m", "litestar", "ledger", "verify"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except ValueError:
        report = {"ok": False, "stdout": done.stdout[-2000:], "stderr": done.stderr[-2000:]}
    report["exit_code"] = done.returncode
    return report


# --------------------------------------------------------------------------- entry points


def write_log(ops: list[Op], path: Path) -> None:
    with path.open("w") as handle:
        for op in ops:
            handle.write(json.dumps(asdict(op), default=str) + "\n")


async def run_bank(database_url: str, data_dir: Path, config: BankConfig) -> BankResult:
    """Set up, run clients and killer, then check everything (see the module note). The database
    must exist; it is migrated here. Bounded: raises ``TimeoutError`` when something hangs."""
    world = await prepare(database_url, data_dir, config)
    service = ServiceProcess(
        database_url=database_url,
        data_dir=data_dir,
        workers=config.workers,
        extra_env=service_env(world.settings),
    )
    bank = Bank(world, service, config)
    result = bank.result
    result.log_path = data_dir / "ops.jsonl"
    budget = config.seconds + config.drain_seconds + 120
    try:
        async with asyncio.timeout(budget):
            await asyncio.to_thread(service.start)
            await bank.enrol_everyone()
            await bank.run()
            await asyncio.to_thread(service.stop)
            engine = create_engine(world.settings)
            try:
                await Checker(world, result).run(engine)
            finally:
                await engine.dispose()
            if config.cli_verify:
                report = await asyncio.to_thread(cli_verify, world.settings)
                result.checks["cli_verify"] = {
                    k: report.get(k) for k in ("ok", "postings", "first_fault", "exit_code")
                }
                if not report.get("ok") or report["exit_code"] != 0:
                    result.violations.append(f"litestar ledger verify: {report}")
    finally:
        with contextlib.suppress(Exception):
            service.kill()
        write_log(result.ops, result.log_path)  # also when the run failed: it says how far
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bank",
        description="The bank test: random signed operations while the service is SIGKILLed.",
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--kill-every", type=float, default=10.0, help="seconds between kills")
    parser.add_argument("--members", type=int, default=10, help="members per brand")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    parser.add_argument("--abandon-rate", type=float, default=0.15)
    parser.add_argument("--impatient-rate", type=float, default=0.1)
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bank")
    parser.add_argument("--database", default="exchange_bank_run", help="exchange_bank_* name")
    parser.add_argument("--keep-database", action="store_true")
    args = parser.parse_args(argv)
    if not args.database.startswith("exchange_bank_"):
        parser.error("the database name must start with exchange_bank_ (it is dropped first)")
    config = BankConfig(
        seconds=args.minutes * 60, clients=args.clients, kill_every=args.kill_every,
        members=args.members, seed=args.seed, workers=args.workers,
        abandon_rate=args.abandon_rate, impatient_rate=args.impatient_rate,
    )  # fmt: skip

    async def go() -> BankResult:
        url = await recreate_database(args.database)
        try:
            return await run_bank(url, args.data_dir / time.strftime("%Y%m%d-%H%M%S"), config)
        finally:
            if not args.keep_database:
                await drop_database(args.database)

    result = asyncio.run(go())
    print(json.dumps(result.summary(), indent=2, sort_keys=False))
    return 1 if result.violations else 0


if __name__ == "__main__":
    sys.exit(main())
