"""Does an unknown key id answer faster than a known key with a bad signature? (issue 15, #9)

Runs the real app in this process (SQLite in a temporary directory, httpx's ASGI transport, no
network to blur the figures), registers one brand with an Ed25519 key, then sends signed
``GET /v1/partners/me`` requests, alternating: signed by a stranger's key under an unknown key
id, under a revoked key id, and under the brand's own key id (a known key, a bad signature).
All three are refused with the same 401; it prints the median and quartiles of each.

    .venv/bin/python -m bench.key_timing --requests 400
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.app import create_app
from exchange.db import create_engine, session_maker
from exchange.settings import Settings
from exchange.signing import load_master_key
from partners.httpsig import sign_request
from partners.service import add_key, create_partner, revoke_key


async def _brand_keys(settings: Settings) -> tuple[str, str]:
    """A brand with two Ed25519 keys: one active, one revoked; their ids."""
    engine = create_engine(settings)
    sessions = session_maker(engine)
    master = load_master_key(settings)
    async with sessions() as session, session.begin():
        brand = await create_partner(
            session, kind="brand", name="Sky Air", currency="SKY",
            settlement_currency=settings.settlement_currency, shards=settings.issuance_shards,
        )  # fmt: skip
        ids = []
        for _ in range(2):
            pem = (
                Ed25519PrivateKey.generate()
                .public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
            new = await add_key(
                session, partner_id=brand.id, alg="ed25519", master_key=master, public_key_pem=pem
            )
            ids.append(new.key_id)
        await revoke_key(session, ids[1])
    await engine.dispose()
    return ids[0], ids[1]


def _signed(key_id: str, key: Ed25519PrivateKey) -> dict[str, str]:
    return sign_request(
        method="GET", path="/v1/partners/me", query="", authority=None, headers={}, body=b"",
        key_id=key_id, alg="ed25519", key=key, created=int(time.time()),
        nonce=secrets.token_urlsafe(16),
    )  # fmt: skip


async def measure(requests: int, data_dir: Path) -> dict[str, list[float]]:
    settings = Settings(data_dir=data_dir, scheduler=False)
    app = create_app(settings)
    stranger = Ed25519PrivateKey.generate()
    timings: dict[str, list[float]] = {"unknown": [], "revoked": [], "known, bad signature": []}
    async with app.lifespan():
        known, revoked = await _brand_keys(settings)
        key_ids = {"unknown": "no-such-key", "revoked": revoked, "known, bad signature": known}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://exchange.test") as c:
            for round_ in range(requests + 20):
                for case, key_id in key_ids.items():
                    headers = _signed(key_id, stranger)
                    started = time.perf_counter()
                    answer = await c.get("/v1/partners/me", headers=headers)
                    elapsed = time.perf_counter() - started
                    assert answer.status_code == 401, answer.text
                    if round_ >= 20:  # the first rounds warm caches and pools
                        timings[case].append(elapsed * 1e6)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per case")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        timings = asyncio.run(measure(args.requests, Path(tmp)))
    for case, values in timings.items():
        q1, median, q3 = statistics.quantiles(values, n=4)
        spread = f"quartiles {q1:.0f} to {q3:.0f}, n={len(values)}"
        print(f"{case:>22}: median {median:7.0f} µs  ({spread})")


if __name__ == "__main__":
    main()
