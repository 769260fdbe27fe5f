"""The bank test, in the manner of Jepsen's: money and points must survive crashes.

Many concurrent clients issue, redeem, transfer, convert, donate, reverse, buy (purchases that
earn points by the brand's earn rules), return bought lines and batch at random
through the real signed API, each brand with its own Ed25519 key, against a real uvicorn process
on a fresh PostgreSQL database, while a killer SIGKILLs the service every few seconds and starts
it again (same port, same database, same signing and master keys). A client that loses its
connection retries with the same ``Idempotency-Key`` until it has an answer, across the downtime.
Some operations are sent impatiently (the first attempt hangs up after 20 ms, often while the
exchange goes on to commit it), and some clients give up at their first lost answer: those
operations stay *unknown*, as real ones do.

Some of the requests are batches (``POST /v1/batches``): 2 to 8 issue, redeem, transfer and
purchase operations of one brand, each with an item key of its own. A batch is retried like any
request, with the same item keys, and half its retries go under a new Idempotency-Key: the
exchange then cannot replay the request, and must replay the items that had posted by their own
keys (``replayed: true``). Batches are impatient more often than single operations, so that
this happens in every run. Each item is an operation of its own in the log and in every check below,
its outcome the one the batch's answer gives it (or ``unknown`` with the batch's); reversals
may pick an acknowledged item as their original.

Every operation goes into a log: kind, brand, idempotency key, request, attempts, final status
and answer (or ``unknown``). When the clients are done and the service stopped, the log is held
against the database:

1. every ledger sums to zero, over postings and over account balances;
2. no member account is negative, nor its available points (balance - held);
3. every acknowledged operation is in the ledger exactly once, under its partner's idempotency
   key, with the transaction id the client was given (retried or not: never twice); a refused
   one is not at all; an unknown one zero times or once (then it is ``unknown-committed``);
   the ledger holds no transaction whose key is not in the log. A batch item's transaction
   has the item key and a ``batch_id`` (for an item posted, not replayed, the answer's), a
   single request's has its Idempotency-Key and no ``batch_id``; a batch's own keys name no
   transaction; an item is replayed only if its batch was sent before, and the counts a batch
   answers are its items';
4. ``verify_ledger`` (and ``litestar ledger verify``, as a subprocess) finds no fault;
5. each member's balance is what the log says it must be (a model of every operation, reversals
   and returns included), each participant's settlement balance is its net from the log, and
   settling the whole run as one business day (a calendar whose cutoff is just after the run)
   gives the gross obligations the log predicts: per conversion ``destination_micros`` from the
   source brand to the destination brand and ``operator_fee_micros`` to the operator, per
   donation its receipt's ``amount_micros`` to the charity, and per reversed share of either the
   opposite obligation (for a conversion, the destination points and fee points moved back at
   their values). Purchases and their returns move points only: they are in the members' model.

Reversals are predicted without knowing the order they committed in: the engine reverses a share
of a transaction cumulatively (:func:`exchange.ledger.reversal.reversal_legs`), so whatever the
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
from exchange.contract.purchases import EarnRate, EarnRulesCreate
from exchange.db import create_engine
from exchange.ledger.models import Account, LedgerTransaction, Member, Posting
from exchange.ledger.parties import PartnerInfo
from exchange.ledger.verify import verify_ledger
from exchange.migrate import upgrade_async
from exchange.pricing.service import set_point_value, set_rate
from exchange.purchases.rules import set_earn_rules
from exchange.settings import Settings
from exchange.signing import load_exchange_keys
from partners.client import IN_FLIGHT_PROBLEM, AsyncExchangeClient, ResponseSignatureInvalid
from partners.service import add_key, create_partner
from settlement.netting import Obligation, net_positions
from settlement.runs import settle_day

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
    "batch": (12, "/v1/batches"),  # about as large a share as before purchases joined
    "purchase": (10, "/v1/purchases"),
    "return": (6, "/v1/purchases/{}/returns"),
}
LEDGER_KINDS = {"purchase": "earn", "return": "reverse"}
"""The transaction kind of an operation whose kind is not its own name."""
EARN_RULES = EarnRulesCreate(
    rates=[EarnRate("EUR", 1, 100)], category_multipliers_bps={"books": 20_000}
)
"""Every brand's: 1 point per euro, books doubled. Lines of 1.00 to 300.00 EUR, one unit each,
so every line earns, and every return (of one line) takes back at least a point."""
BATCH_ITEMS = (2, 8)
"""How many operations a batch holds (issue, redeem and transfer of one brand, at random)."""
REKEY_RATE = 0.5
"""The chance that a batch's retry goes under a new Idempotency-Key (with the same item keys), so
that its items are replayed by their own keys rather than the request by its key."""
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
    batch_impatient_rate: float = 0.3
    """The same for batches, higher: a batch that commits after its client hung up, sent again
    under a new Idempotency-Key (``REKEY_RATE``), is what makes the exchange replay items by
    their own keys."""
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
    request_keys: list[str] = field(default_factory=list)
    """A batch's Idempotency-Keys, in the order it was sent under them (the first is ``key``)."""
    items: list[Op] = field(default_factory=list)
    """A batch's operations, each an ``Op`` of its own: its kind, its item key as ``key``, the
    operation as sent as ``body``, and its own outcome, taken from the batch's answer."""
    batch: int | None = None
    """An item's batch (its ``id``)."""
    batch_id: str | None = None
    """An acknowledged item's ``batch_id``, from the answer."""
    abandon: bool = False
    impatient: bool = False
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    status: int | None = None
    response: Any = None
    replayed: bool = False
    """Answered as a replay: a request by its Idempotency-Key, a batch item by its item key."""
    outcome: str = "pending"
    """``ok`` (2xx), ``refused`` (4xx), ``unknown``; after the checks an unknown one is
    ``unknown-committed`` or ``unknown-absent`` (a batch: whether any of its items is in the
    ledger). A batch's item has the outcome of its own in the batch's answer (201: ``ok``)."""
    transaction_id: str | None = None
    started: float = 0.0
    finished: float = 0.0

    @property
    def problem_type(self) -> str | None:
        if self.outcome == "refused" and isinstance(self.response, dict):
            problem = self.response.get("problem") or self.response  # an item's, or the answer
            return str(problem.get("type", "")).rsplit("/", 1)[-1]
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

    @property
    def batch_items(self) -> list[Op]:
        return [item for op in self.ops for item in op.items]

    def batch_summary(self) -> dict[str, Any]:
        batches = [op for op in self.ops if op.kind == "batch"]
        items = self.batch_items
        ids = {item.transaction_id for item in items if item.outcome == "ok"}
        outcomes = Counter(
            ("replayed" if item.replayed else "posted") if item.outcome == "ok" else item.outcome
            for item in items
        )
        return {
            "batches": len(batches),
            "outcomes": dict(sorted(Counter(op.outcome for op in batches).items())),
            "replayed": sum(1 for op in batches if op.replayed),
            "rekeyed": sum(1 for op in batches if len(op.request_keys) > 1),
            "items": len(items),
            "by_kind": dict(sorted(Counter(item.kind for item in items).items())),
            "item_outcomes": dict(sorted(outcomes.items())),
            "item_refusals": dict(
                sorted(Counter(i.problem_type for i in items if i.problem_type).items())
            ),
            "item_reversals": sum(
                1 for op in self.ops if op.kind == "reverse" and op.target in ids
            ),
        }

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
            "batches": self.batch_summary(),
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
                await set_earn_rules(session, info, EARN_RULES)
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
        self.purchases: dict[str, list[Op]] = defaultdict(list)
        """Per brand, its purchases acknowledged as single requests, which returns pick from."""
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
        if kind == "batch":
            op.request_keys.append(op.key)
        self.result.ops.append(op)
        return op

    def new_batch(self, client: int, brand: str, rng: random.Random, **chaos: bool) -> Op:
        """A batch of a few issue, redeem and transfer operations of ``brand``, each with an
        item key of its own in the style of every operation's key (it names a transaction)."""
        operations: list[dict[str, Any]] = []
        op = self.new_op(client, "batch", brand, "/v1/batches", {"operations": operations}, **chaos)
        for _ in range(rng.randint(*BATCH_ITEMS)):
            self.next_id += 1
            kind = rng.choice(("issue", "redeem", "transfer", "purchase"))
            key = f"bank-{self.run_tag}-{client}-{self.next_id}"
            body = {"type": kind, "idempotency_key": key}
            body.update(self.points_body(kind, rng, f"bank-{self.run_tag}-{self.next_id}"))
            item = Op(
                id=self.next_id, client=client, kind=kind, brand=brand, key=key, method="POST",
                path=op.path, body=body, batch=op.id, abandon=op.abandon, impatient=op.impatient,
            )  # fmt: skip
            op.items.append(item)
            operations.append(body)
        return op

    def new_return(self, client: int, brand: str, rng: random.Random, chaos: dict[str, bool]) -> Op:
        """A return of one line of an acknowledged purchase (often a recent one, so that returns
        of one purchase race): refused when that line was returned already."""
        candidates = self.purchases[brand]
        original = rng.choice(candidates[-20:] if rng.random() < 0.5 else candidates)
        purchase = original.response["purchase"]
        line = rng.randint(1, len(original.body["lines"]))
        path = OPERATIONS["return"][1].format(purchase["id"])
        body = {"lines": [{"line": line, "quantity": 1}]}
        return self.new_op(
            client, "return", brand, path, body, target=original.transaction_id, **chaos
        )

    def points_body(self, kind: str, rng: random.Random, reference: str) -> dict[str, Any]:
        """An issue's, a redemption's, a transfer's or a purchase's body, alone or as a batch's
        operation."""
        refs = self.world.member_refs
        member = rng.choice(refs)
        if kind == "purchase":
            lines = [
                {"sku": f"sku-{rng.randint(1, 50)}", "product_type": "goods",
                 "category": rng.choice(("books", "food", "music")),
                 "amount_minor": rng.randint(100, 30_000)}
                for _ in range(rng.randint(1, 3))
            ]  # fmt: skip
            return {"order_id": reference, "member_ref": member, "currency": "EUR", "lines": lines}
        if kind == "issue":
            return {"member_ref": member, "points": rng.randint(1, 3_000), "reference": reference}
        if kind == "redeem":
            return {"member_ref": member, "points": rng.randint(1, 600), "reference": reference}
        to = rng.choice([ref for ref in refs if ref != member])
        return {"from_member_ref": member, "to_member_ref": to,
                "points": rng.randint(1, 800), "reference": reference}  # fmt: skip

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
            key = op.key
            if op.kind == "batch":
                if op.attempts > 1 and rng.random() < REKEY_RATE:
                    op.request_keys.append(f"{op.key}-r{op.attempts}")
                key = op.request_keys[-1]
            sending = client.request(op.method, op.path, json=op.body, idempotency_key=key)
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
        op.finished = time.time()
        for one in (op, *op.items):
            one.outcome = "unknown"

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
            if op.kind == "batch":
                self._take_items(op, body)
            elif op.kind != "enrol":
                op.transaction_id = body["transaction"]["id"]
                if op.kind not in ("reverse", "return"):
                    self.acknowledged[op.brand].append(op)
                if op.kind == "purchase":
                    self.purchases[op.brand].append(op)
        else:
            op.outcome = "refused"
            for item in op.items:  # refused as a whole: none of them posted
                item.outcome, item.status, item.response = "refused", status, body
        return False

    def _take_items(self, op: Op, body: dict[str, Any]) -> None:
        """A batch's answer: each item's outcome, as if it had been answered alone."""
        results = body["results"]
        sent = [(i, item.key) for i, item in enumerate(op.items)]
        if [(r["index"], r["idempotency_key"]) for r in results] != sent:
            self.result.violations.append(f"op {op.id} batch: the answer's items are not {sent}")
            for item in op.items:  # checked as unknown: the ledger says what became of them
                item.outcome = "unknown"
            return
        for item, answer in zip(op.items, results, strict=True):
            item.attempts, item.finished = op.attempts, op.finished
            item.status, item.response = answer["status"], answer
            item.replayed = answer.get("replayed", False)
            if answer["status"] == 201:
                item.outcome = "ok"
                item.transaction_id = answer["transaction"]["id"]
                item.batch_id = body["batch_id"]
                self.acknowledged[op.brand].append(item)
            else:
                item.outcome = "refused"

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
        impatience = (
            self.config.batch_impatient_rate if kind == "batch" else self.config.impatient_rate
        )
        chaos = {
            "abandon": rng.random() < self.config.abandon_rate,
            "impatient": rng.random() < impatience,
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
        if kind == "return":
            if not self.purchases[brand]:
                kind = "purchase"
            else:
                return self.new_return(client, brand, rng, chaos)
        if kind == "batch":
            return self.new_batch(client, brand, rng, **chaos)
        path = OPERATIONS[kind][1]
        body: dict[str, Any]
        if kind in ("issue", "redeem", "transfer", "purchase"):
            body = self.points_body(kind, rng, reference)
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
    batch_id: str | None
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
        elif op.kind == "purchase":
            self.points[brand, body["member_ref"]] += facts["points"]
        elif op.kind in ("reverse", "return"):
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

            if op.kind in ("issue", "purchase"):
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
                # A conversion's money follows the points moved back (SPEC 3).
                back = share(facts["out"]) * facts["destination_value_micros"]
                self.owed[target_brand, source] += back
                self.owed[self.operator, source] += (
                    share(facts["fee"]) * facts["source_value_micros"]
                )
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
            fee=conversion["fee"],
            source_value_micros=conversion["source_value_micros"],
            destination_value_micros=conversion["destination_value_micros"],
            destination_micros=conversion["money"]["destination_micros"],
            operator_fee_micros=conversion["money"]["operator_fee_micros"],
        )
    elif op.kind == "donate":
        facts["amount_micros"] = answer["donation_receipt"]["amount_micros"]
    return facts


def _facts_from_ledger(tx: Recorded) -> dict[str, Any]:
    facts: dict[str, Any] = {"points": tx.points}
    names = ("out", "fee", "source_value_micros", "destination_value_micros")
    for name in (*names, "destination_micros", "operator_fee_micros", "amount_micros"):
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
                t.c.reverses_id, t.c.batch_id, t.c.details,
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
                None if row.batch_id is None else str(row.batch_id),
                json.loads(row.details) if row.details else {},
            )
            for row in rows
        ]

    def check_idempotency(self, transactions: list[Recorded]) -> list[tuple[Op, dict[str, Any]]]:
        """Check 3, for single operations and batch items alike; returns every committed one
        with its facts. A transaction is found by its partner and key, and by whether it is a
        batch item (``batch_id`` set, its key the item's) or a single request's."""
        by_key: dict[tuple[str, str | None, bool], list[Recorded]] = defaultdict(list)
        for tx in transactions:
            by_key[tx.partner_id, tx.key, tx.batch_id is not None].append(tx)
        logged = set()
        committed = []
        for op in self.result.ops:
            partner = str(self.world.brands[op.brand].partner.id)
            if op.kind == "batch":
                self.check_batch_answer(op)
            # A batch's own keys name no transaction (a stray if one did): its items' keys do.
            for one in op.items or [op]:
                item = one.batch is not None
                logged.add((partner, one.key, item))
                entry = self.check_once(one, by_key.get((partner, one.key, item), []))
                if entry is not None:
                    committed.append(entry)
            if op.kind == "batch" and op.outcome == "unknown":
                landed = any(item.outcome == "unknown-committed" for item in op.items)
                op.outcome = "unknown-committed" if landed else "unknown-absent"
        strays = [
            tx
            for tx in transactions
            if (tx.partner_id, tx.key, tx.batch_id is not None) not in logged
        ]
        for tx in strays[:20]:
            self.fail(
                f"transaction {tx.id} ({tx.kind}, key {tx.key!r}, batch {tx.batch_id}) is not"
                " in the log"
            )
        self.result.checks["transactions"] = len(transactions)
        self.result.checks["batch_items"] = sum(tx.batch_id is not None for tx in transactions)
        self.result.checks["stray_transactions"] = len(strays)
        return committed

    def check_once(self, op: Op, found: list[Recorded]) -> tuple[Op, dict[str, Any]] | None:
        """One operation against the transactions under its key: the operation with its facts
        when it committed."""
        name = f"op {op.id} {op.kind}" + ("" if op.batch is None else f" (batch {op.batch})")
        if op.kind == "enrol" or op.outcome == "refused":
            if found:
                self.fail(f"{name} ({op.outcome}) posted {len(found)} times")
            return None
        if op.outcome == "ok":
            if len(found) != 1:
                self.fail(f"{name} acknowledged, in the ledger {len(found)}x")
                return None
            tx = found[0]
            if tx.id != op.transaction_id:
                self.fail(f"{name}: acknowledged {op.transaction_id}, ledger has {tx.id}")
            if op.batch_id is not None and not op.replayed and tx.batch_id != op.batch_id:
                self.fail(f"{name}: posted by batch {op.batch_id}, ledger says {tx.batch_id}")
            facts = _facts_from_answer(op)
            if _facts_from_ledger(tx) != facts:
                self.fail(f"{name}: answered {facts}, ledger has {_facts_from_ledger(tx)}")
        else:
            if len(found) > 1:
                self.fail(f"{name} unanswered, in the ledger {len(found)}x")
                return None
            if not found:
                op.outcome = "unknown-absent"
                return None
            op.outcome = "unknown-committed"
            tx = found[0]
            op.transaction_id = tx.id
            facts = _facts_from_ledger(tx)
        if tx.kind != LEDGER_KINDS.get(op.kind, op.kind):
            self.fail(f"{name} is a {tx.kind} transaction in the ledger")
        if op.kind in ("reverse", "return") and tx.reverses_id != op.target:
            self.fail(f"{name} reverses {op.target}, the ledger says {tx.reverses_id}")
        return op, facts

    def check_batch_answer(self, batch: Op) -> None:
        """What a batch's answer says without the ledger: an item key is replayed only when the
        batch was sent before (and that answer lost), and the answer's counts are its items'."""
        for item in batch.items:
            if item.replayed and batch.attempts < 2:
                self.fail(f"op {item.id} {item.kind} (batch {batch.id}) replayed at first sending")
        if batch.outcome == "ok":
            statuses = Counter(
                ("replayed" if i.replayed else "posted") if i.status == 201 else "refused"
                for i in batch.items
            )
            counts = {name: batch.response[name] for name in ("posted", "replayed", "refused")}
            if counts != {name: statuses[name] for name in counts}:
                self.fail(f"op {batch.id} batch: answered {counts}, its items say {statuses}")

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
    parser.add_argument("--batch-impatient-rate", type=float, default=0.3)
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
        batch_impatient_rate=args.batch_impatient_rate,
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
