"""Pre-signed requests replayed by ``wrk`` (bench/wrk_replay.lua): the load generator is C,
so what is measured is the service and PostgreSQL, not a Python driver on the same cores.

Before a scenario is measured, its requests are made and signed here, the way the partner SDK
makes them (``partners.client``: compact JSON body, ``accept`` and ``content-type``, an
``Idempotency-Key`` as a Structured Field string, then ``partners.httpsig.sign_request`` with
``created`` now and a fresh nonce; it adds ``Content-Digest``, ``Signature-Input`` and
``Signature``). Every request has its own nonce and its own Idempotency-Key, and is sent once.
They are written one a line, tab-separated, to one file per wrk thread (``PREFIX.0``, ...); each
wrk connection takes the next unused line of its thread's file. The answers are not verified
(the SDK rows do that, and show what it costs).

The server refuses a signature whose ``created`` is more than 300 s old: the requests of a
scenario are signed right before it runs, and a run (signing + warmup + measure) must stay well
inside that window (``MAX_RUN_SECONDS``).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import resource
import secrets
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_sf
import msgspec

from bench.scenarios import ApiWorld, Brand
from partners.httpsig import sign_request

LUA = Path(__file__).resolve().parent / "wrk_replay.lua"
MAX_RUN_SECONDS = 200
"""Signing, warmup and the measured time of one scenario together: under the server's 300 s."""
WRK_INSTALL_HINT = "apt-get install -y wrk (Debian/Ubuntu; `make bench` runs it when root)"


@dataclass(frozen=True)
class Prepared:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def line(self) -> str:
        body = self.body.decode()
        fields = [self.method, self.path, body]
        for name, value in self.headers.items():
            fields += [name, value]
        if any("\t" in f or "\n" in f or "\r" in f for f in fields):
            raise ValueError(f"cannot write a request holding a tab or a line break: {fields}")
        return "\t".join(fields)


def signed(brand: Brand, method: str, path: str, payload: Any, created: int) -> Prepared:
    """One request as ``AsyncExchangeClient`` sends it for ``brand`` (a POST with a fresh
    Idempotency-Key), signed with ``partners.httpsig.sign_request``."""
    body = msgspec.json.encode(payload)
    headers = {
        "accept": "application/json",
        "content-type": "application/json",
        "idempotency-key": http_sf.ser(str(uuid.uuid4())),
    }
    headers.update(
        sign_request(
            method=method, path=path, query="", authority=None, headers=headers, body=body,
            key_id=brand.key_id, alg="ed25519", key=brand.private_key, created=created,
            nonce=secrets.token_urlsafe(16),
        )
    )  # fmt: skip
    return Prepared(method, path, headers, body)


# --------------------------------------------------------------------------- the mixes


def ledger_mix(world: ApiWorld, brand_indices: list[int], seed: int) -> Iterator[Prepared]:
    """a / b: issue, redeem, transfer in turn (a third each), each on a random member of a
    random brand among ``brand_indices`` (``ApiLoad.ledger_mix``, pre-signed)."""
    rng = random.Random(seed)
    refs = world.member_refs
    i = 0
    while True:
        brand = world.brands[rng.choice(brand_indices)]
        created = int(time.time())
        kind = i % 3
        if kind == 0:
            body = {"member_ref": rng.choice(refs), "points": rng.randint(100, 1_000)}
            yield signed(brand, "POST", "/v1/issuances", body, created)
        elif kind == 1:
            body = {"member_ref": rng.choice(refs), "points": rng.randint(1, 50)}
            yield signed(brand, "POST", "/v1/redemptions", body, created)
        else:
            source, target = rng.sample(refs, 2)
            body = {"from_member_ref": source, "to_member_ref": target,
                    "points": rng.randint(1, 50)}  # fmt: skip
            yield signed(brand, "POST", "/v1/transfers", body, created)
        i += 1


def conversions(world: ApiWorld, seed: int) -> Iterator[Prepared]:
    """c: a random member of a random brand converts 100-1 000 points to the member of the
    same ref at another random brand (``ApiLoad.conversions``, pre-signed)."""
    rng = random.Random(seed)
    brands = world.brands
    while True:
        source, target = rng.sample(range(len(brands)), 2)
        ref = rng.choice(world.member_refs)
        body = {"member_ref": ref, "to_partner": brands[target].currency, "to_member_ref": ref,
                "points": rng.randint(100, 1_000)}  # fmt: skip
        yield signed(brands[source], "POST", "/v1/conversions", body, int(time.time()))


def floor_transfers(rows: int, seed: int) -> Iterator[Prepared]:
    """floor: the floor app's request (unsigned: the floor has no signatures)."""
    rng = random.Random(seed)
    headers = {"content-type": "application/json"}
    while True:
        source, target = rng.sample(range(1, rows + 1), 2)
        body = msgspec.json.encode({"source": source, "target": target, "points": 1})
        yield Prepared("POST", "/transfer", dict(headers), body)


Mix = Callable[[int], Iterator[Prepared]]
"""A scenario's request stream, from a seed."""


def write_requests(requests: Iterator[Prepared], count: int, prefix: Path, threads: int) -> float:
    """Write ``count`` requests round-robin to ``PREFIX.0`` .. ``PREFIX.{threads-1}``; return
    the seconds spent making (signing) them."""
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(Path(f"{prefix}.{t}").open("w")) for t in range(threads)]
        for n in range(count):
            files[n % threads].write(next(requests).line() + "\n")
    return time.perf_counter() - started


# --------------------------------------------------------------------------- running wrk


@dataclass
class WrkResult:
    name: str
    clients: int
    seconds: float
    requests: int
    ok: int
    """2xx answers to requests of the file (operations done)."""
    non_2xx: int
    statuses: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    loaded: int
    sent: int
    exhausted: bool
    """The file ran out before the time did: the rate is then a floor, not a measure."""
    socket_errors: dict[str, int]
    sample_status: int | None
    sample_body: str | None
    sign_seconds: float = 0.0
    wrk_cpu_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ops_per_second(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def errors(self) -> int:
        return self.non_2xx + sum(self.socket_errors.values())


def wrk_path() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(f"wrk is not on the PATH; install it: {WRK_INSTALL_HINT}")
    return path


def run_wrk(
    name: str, base_url: str, prefix: Path, *, threads: int, clients: int, seconds: float
) -> WrkResult:
    """Replay ``PREFIX.*`` against ``base_url`` with ``clients`` connections for ``seconds``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(
        [
            wrk_path(), "-t", str(threads), "-c", str(clients), "-d", f"{max(1, round(seconds))}s",
            "--timeout", "30s", "-s", str(LUA), base_url, "--", str(prefix),
        ],
        capture_output=True, text=True, timeout=seconds + 120,
    )  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = re.search(r"^WRK_REPLAY_JSON (.*)$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    data = json.loads(match.group(1))
    statuses = {str(k): int(v) for k, v in data["statuses"].items()}
    two_xx = sum(v for k, v in statuses.items() if k.startswith("2"))
    non_2xx = sum(v for k, v in statuses.items() if not k.startswith("2"))
    return WrkResult(
        name=name,
        clients=clients,
        seconds=data["duration_us"] / 1e6,
        requests=data["requests"],
        ok=max(0, two_xx - data["padding"]),
        non_2xx=non_2xx,
        statuses=statuses,
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data["p90_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        mean_ms=data["mean_us"] / 1000,
        loaded=data["loaded"],
        sent=data["sent"],
        exhausted=data["threads_exhausted"] > 0,
        socket_errors=data["socket_errors"],
        sample_status=data["sample_status"],
        sample_body=data["sample_body"],
        wrk_cpu_seconds=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
    )


def replay(
    name: str,
    base_url: str,
    mix: Iterator[Prepared],
    *,
    count: int,
    clients: int,
    seconds: float,
    workdir: Path,
    threads: int = 2,
    on_start: Callable[[], None] | None = None,
) -> WrkResult:
    """Sign ``count`` requests of ``mix`` now, then replay them with wrk for ``seconds``.
    ``on_start`` runs between the two (to start a CPU meter on the measured part only)."""
    threads = max(1, min(threads, clients))
    count = max(count, clients)  # every connection has at least one request
    prefix = workdir / f"requests-{name.replace(' ', '_')}-{clients}"
    sign_seconds = write_requests(mix, count, prefix, threads)
    if sign_seconds + seconds > MAX_RUN_SECONDS:
        raise RuntimeError(
            f"{name}: signing took {sign_seconds:.0f} s; with {seconds:.0f} s of load the first"
            " signatures would near the server's 300 s window. Fewer requests or seconds."
        )
    try:
        if on_start is not None:
            on_start()
        result = run_wrk(name, base_url, prefix, threads=threads, clients=clients, seconds=seconds)
    finally:
        for t in range(threads):
            Path(f"{prefix}.{t}").unlink(missing_ok=True)
    result.sign_seconds = sign_seconds
    return result


def size_for(rate: float, seconds: float, clients: int) -> int:
    """Requests to sign for ``seconds`` at an expected ``rate``: twice over, and some."""
    return int(rate * seconds * 2) + 50 * clients + 200
