"""The transaction log as a partner checks it, with the SDK against a real exchange over TCP.

The worked example of the partner guide (README, "What a partner can prove") is
``test_worked_example``: Sky Air issues and transfers points, the exchange signs a checkpoint,
and Sky Air's auditor proves every receipt is in the log, recomputes its member's chain and
co-signs the checkpoint. The other tests are what the auditor must refuse.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.ledger import members, operations
from exchange.ledger.models import LedgerTransaction
from exchange.ledger.parties import PartnerInfo
from exchange.settings import Settings
from exchange.signing import load_exchange_keys
from exchange.transparency.checkpoints import sign_checkpoint
from exchange.transparency.models import LogCheckpoint, LogEntry
from exchange.transparency.scheduler import checkpoint_now
from exchange.transparency.sequencer import extend_log
from exchange.transparency.store import root_at
from exchange.transparency.tree import nodes_of_leaves, range_hash
from exchange.transparency.verify import verify_log
from partners.audit import LogAuditor, audit_files
from partners.audit import main as audit_main
from partners.client import ExchangeClient
from partners.transparency import (
    ChainLink,
    ForkDetected,
    ProofError,
    open_checkpoint,
    verify_chain,
    witnessed_by,
)
from settlement.runs import settle_due
from tests.integration.conftest import Credentials, register_key
from tests.integration.live_server import LiveServer, live_server
from tests.integration.settlement_support import (
    DAY1,
    Cast,
    SteppedCalendar,
    cutoff_now,
    post_day1,
)

__all__ = ["live_server"]


@pytest.fixture
async def sky_key(
    live_server: LiveServer, sessions: async_sessionmaker[AsyncSession], sky: PartnerInfo
) -> Credentials:
    return await register_key(sessions, live_server.master_key, sky)


def client_for(server: LiveServer, key: Credentials) -> ExchangeClient:
    assert isinstance(key.key, Ed25519PrivateKey)
    return ExchangeClient(server.base_url, key_id=key.key_id, alg="ed25519", key=key.key)


async def checkpoint(sessions: async_sessionmaker[AsyncSession], settings: Settings) -> int:
    """What the service does every interval and at each settlement cutoff."""
    async with sessions() as session, session.begin():
        made = await checkpoint_now(session, settings, load_exchange_keys(settings), "interval")
    assert made is not None
    return made.size


def links(items: list[dict[str, object]]) -> list[ChainLink]:
    return [
        ChainLink(
            int(i["account_id"]),
            int(i["seq"]),
            uuid.UUID(str(i["transaction_id"])),
            int(i["amount"]),
            int(i["balance_after"]),
            bytes.fromhex(str(i["prev_hash"])),
            bytes.fromhex(str(i["hash"])),
            int(i["counterparty_account_id"]),
        )
        for i in reversed(items)
    ]


async def test_worked_example(
    live_server: LiveServer,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    sky_key: Credentials,
    tmp_path: Path,
) -> None:
    sky = client_for(live_server, sky_key)

    def post() -> list[dict[str, object]]:
        sky.enrol("alice")
        sky.enrol("bob")
        issued = sky.issue("alice", 10_000)
        moved = sky.transfer("alice", "bob", 2_500)
        return [
            sky.request("GET", f"/v1/transactions/{op.transaction.id}").json()
            for op in (issued, moved)
        ]

    receipts = await asyncio.to_thread(post)
    size = await checkpoint(sessions, settings)
    assert size == 2

    def audit() -> None:
        state = tmp_path / "audit-state.json"
        auditor = LogAuditor(sky, settings.log_origin, state)
        latest = auditor.check_latest()
        assert (latest.size, len(latest.root)) == (2, 32)
        assert [auditor.verify_receipt(r) for r in receipts] == [0, 1]
        # Each posting of a transaction answer carries what its hash covers.
        posting = receipts[1]["transaction"]["postings"][0]
        assert set(posting) >= {"account_id", "seq", "prev_hash", "hash", "counterparty_account_id"}
        # Without a size, the proof names the first checkpoint that includes the transaction.
        first = sky.request(
            "GET", "/v1/proofs/inclusion", params={"transaction": receipts[1]["transaction"]["id"]}
        ).json()
        assert first["tree_size"] == 2
        assert first["checkpoint"] == latest.text
        # Alice's chain: issue +10 000, transfer -2 500; recomputed from the history answer.
        head = auditor.verify_history("alice")
        assert head.hex() == sky.member("alice").head.head_hash
        # The finance team's run over saved receipts, as the CLI does it.
        for n, receipt in enumerate(receipts):
            (tmp_path / f"r{n}.json").write_text(json.dumps(receipt))
        saved = sorted(tmp_path.glob("r*.json"))
        lines = audit_files(LogAuditor(sky, settings.log_origin, state), saved)
        assert lines[0].startswith("checkpoint 2 ") and lines[2].endswith(" at 1")
        assert isinstance(sky_key.key, Ed25519PrivateKey)
        pem = tmp_path / "sky.pem"
        pem.write_bytes(
            sky_key.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        cli = ["--url", live_server.base_url, "--key-id", sky_key.key_id, "--key", str(pem)]
        cli += ["--origin", settings.log_origin, "--state", str(state), *map(str, saved)]
        assert audit_main(cli) == 0
        assert audit_main([*cli[:-2], "--origin", "elsewhere/log"]) == 1
        # Sky co-signs the checkpoint it verified; the latest checkpoint names its witnesses.
        assert isinstance(sky_key.key, Ed25519PrivateKey)
        answer = auditor.witness(latest, sky_key.key_id, sky_key.key)
        assert answer.witnesses == [str(sky_key.partner.id)]
        cosigned = open_checkpoint(answer.note, settings.log_origin, auditor.keys())
        assert witnessed_by(cosigned, sky_key.key_id, sky_key.key.public_key())

    await asyncio.to_thread(audit)
    # More transactions, a new checkpoint: the auditor checks that it extends the last one.
    await asyncio.to_thread(lambda: sky.issue("bob", 7))
    assert await checkpoint(sessions, settings) == 3
    await asyncio.to_thread(
        lambda: LogAuditor(sky, settings.log_origin, tmp_path / "audit-state.json").check_latest()
    )
    sky.close()


async def test_a_receipt_not_in_the_log_is_refused(
    live_server: LiveServer,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    sky_key: Credentials,
) -> None:
    sky = client_for(live_server, sky_key)
    await asyncio.to_thread(lambda: (sky.enrol("alice"), sky.issue("alice", 5)))
    await checkpoint(sessions, settings)

    def late() -> dict[str, Any]:
        auditor = LogAuditor(sky, settings.log_origin)
        auditor.check_latest()
        unlogged = sky.issue("alice", 6)
        receipt = sky.request("GET", f"/v1/transactions/{unlogged.transaction.id}").json()
        with pytest.raises(ProofError, match="not in the log"):
            auditor.verify_receipt(receipt)
        # Kept, it waits for a checkpoint that holds it rather than failing.
        auditor.keep(receipt)
        assert auditor.verify_kept() == {} and auditor.kept == [receipt]
        answer = sky.request(
            "GET", "/v1/proofs/inclusion", params={"transaction": str(unlogged.transaction.id)}
        )
        assert answer.status_code == 404
        assert answer.json()["type"].endswith("/not-in-log")
        # A receipt whose postings were changed is not the logged transaction either.
        first = sky.history("alice").items[-1].transaction_id
        forged = sky.request("GET", f"/v1/transactions/{first}").json()
        forged["transaction"]["postings"][0]["hash"] = "00" * 32
        with pytest.raises(ProofError):
            auditor.verify_receipt(forged)
        return receipt

    receipt = await asyncio.to_thread(late)
    await checkpoint(sessions, settings)
    auditor = LogAuditor(sky, settings.log_origin)
    auditor.keep(receipt)
    assert await asyncio.to_thread(auditor.verify_kept) == {receipt["transaction"]["id"]: 1}
    assert auditor.kept == []
    sky.close()


async def test_a_changed_chain_is_refused(live_server: LiveServer, sky_key: Credentials) -> None:
    sky = client_for(live_server, sky_key)

    def history() -> list[dict[str, object]]:
        sky.enrol("alice")
        for points in (100, 200, 300):
            sky.issue("alice", points)
        return list(sky.request("GET", "/v1/members/alice/transactions").json()["items"])

    items = await asyncio.to_thread(history)
    verify_chain(links(items))
    changed = [dict(i) for i in items]
    changed[1]["amount"] = 201
    changed[1]["balance_after"] = 301
    with pytest.raises(ProofError, match="changed"):
        verify_chain(links(changed))
    with pytest.raises(ProofError, match="missing"):
        verify_chain(links(items[:1] + items[2:]))
    sky.close()


async def test_unknown_key_and_forks_are_refused(
    live_server: LiveServer,
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    sky_key: Credentials,
    htl: PartnerInfo,
) -> None:
    htl_key = await register_key(sessions, live_server.master_key, htl)
    sky, hotel = client_for(live_server, sky_key), client_for(live_server, htl_key)
    await asyncio.to_thread(lambda: (sky.enrol("a"), sky.issue("a", 1), sky.issue("a", 2)))
    await checkpoint(sessions, settings)
    keys = load_exchange_keys(settings)
    origin = settings.log_origin

    def check() -> None:
        honest = LogAuditor(sky, origin)
        real = honest.check_latest()
        # Signed by a key the exchange does not publish.
        stranger = dataclasses.replace(keys, signing_key=Ed25519PrivateKey.generate())
        with pytest.raises(ProofError, match="no key"):
            honest.accept(sign_checkpoint(stranger, origin, real.size, real.root))
        # A split view: the exchange serves another root of the same size to Hotel Co. Each
        # client alone accepts what it sees; comparing notes, either one detects the fork.
        other = sign_checkpoint(keys, origin, real.size, bytes(32))
        fooled = LogAuditor(hotel, origin)
        fooled.accept(other)
        with pytest.raises(ForkDetected):
            honest.accept(other)
        with pytest.raises(ForkDetected):
            fooled.accept(real.text)
        # A larger tree that does not extend the one seen: the consistency proof fails.
        with pytest.raises(ForkDetected):
            honest.accept(sign_checkpoint(keys, origin, real.size - 1, bytes(32)))

    await asyncio.to_thread(check)
    sky.close()
    hotel.close()


@pytest.mark.postgres_only
async def test_concurrent_writers_log_every_transaction_once(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], sky: PartnerInfo
) -> None:
    """Posting and sequencing at once, from many sessions: every committed transaction gets
    exactly one index, the indexes are 0..n-1, and the stored tiles give the recomputed root."""
    async with sessions() as session, session.begin():
        await members.enrol_member(session, sky, "m")
    stop = asyncio.Event()

    async def post(n: int) -> None:
        for i in range(15):
            async with sessions() as session, session.begin():
                await operations.issue(session, sky, "m", 1 + i, reference=f"{n}-{i}")

    async def sequence() -> None:
        while not stop.is_set():
            async with sessions() as session, session.begin():
                await extend_log(session, settings.log_late_seconds, wait=False)
            await asyncio.sleep(0)

    sequencers = [asyncio.create_task(sequence()) for _ in range(3)]
    await asyncio.gather(*(post(n) for n in range(8)))
    stop.set()
    await asyncio.gather(*sequencers)
    async with sessions() as session, session.begin():
        size = await extend_log(session, settings.log_late_seconds)
    async with sessions() as session:
        total = await session.scalar(select(func.count()).select_from(LedgerTransaction))
        rows = (await session.execute(select(LogEntry).order_by(LogEntry.idx))).scalars().all()
        assert size == total == len(rows) == len({r.transaction_id for r in rows})
        assert [r.idx for r in rows] == list(range(size))
        leaves = [r.leaf_hash for r in rows]
        assert await root_at(session, size) == range_hash(0, size, nodes_of_leaves(leaves))


async def test_verify_checks_the_log(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], sky: PartnerInfo, db_kind: str
) -> None:
    """``ledger verify``'s log check: clean, then a changed leaf, then a changed checkpoint."""
    async with sessions() as session, session.begin():
        await members.enrol_member(session, sky, "m")
        for points in range(1, 300):
            await operations.issue(session, sky, "m", points)
    size = await checkpoint(sessions, settings)
    assert size == 299
    origin, late = settings.log_origin, settings.log_late_seconds
    async with sessions() as session:
        report = await verify_log(session, origin, late)
    assert report.ok, report.faults
    assert (report.entries, report.checkpoints) == (299, 1)
    changes = [
        update(LogEntry).where(LogEntry.idx == 7).values(leaf_hash=bytes(32)),
        update(LogCheckpoint).values(root_hash=bytes(32)),
    ]
    async with sessions() as session:
        for change in changes:  # the database refuses them
            with pytest.raises(DBAPIError):
                async with session.begin():
                    await session.execute(change)
    async with sessions() as session, session.begin():
        if db_kind == "postgresql":
            await session.execute(text("SET LOCAL session_replication_role = replica"))
        else:
            for trigger in ("log_entry_no_update", "log_checkpoint_no_update"):
                await session.execute(text(f"DROP TRIGGER {trigger}"))
        for change in changes:
            await session.execute(change)
    async with sessions() as session:
        faults = (await verify_log(session, origin, late)).faults
    assert [f["kind"] for f in faults] == ["leaf-changed", "checkpoint-root"]
    assert faults[0]["index"] == 7


async def test_settlement_cutoff_signs_a_checkpoint(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], cast: Cast
) -> None:
    """Settling the ended days checkpoints the log: every transaction of the day is in it."""
    await post_day1(sessions, cast)
    calendar = SteppedCalendar(DAY1, await cutoff_now(), dt.timedelta(hours=1))
    late = calendar.cutoff_at(DAY1) + dt.timedelta(minutes=1)
    keys = load_exchange_keys(settings)
    settled = await settle_due(sessions, settings=settings, keys=keys, calendar=calendar, now=late)
    assert [batch.business_date for batch in settled] == [DAY1]
    async with sessions() as session:
        total = await session.scalar(select(func.count()).select_from(LedgerTransaction))
        row = (await session.execute(select(LogCheckpoint))).scalar_one()
    assert (row.size, row.reason) == (total, "cutoff")
    assert row.note.startswith(f"{settings.log_origin}\n{total}\n")
