"""Writing what the engine posts: every transaction, posting and account head of a batch in one
statement per table, given column by column (``exchange.dialect.insert_columns`` and
``update_by_id`` say how each database takes them)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.dialect import insert_columns, update_by_id
from exchange.ledger.models import Account, LedgerTransaction, Posting

if TYPE_CHECKING:  # the engine hands these over; it imports this module
    from exchange.ledger.engine import PostedTransaction, TransactionSpec

account_t = cast(Table, Account.__table__)
posting_t = cast(Table, Posting.__table__)
transaction_t = cast(Table, LedgerTransaction.__table__)

Posted = Sequence[tuple["TransactionSpec", "PostedTransaction"]]
"""The specs that posted, each with what it posted."""


async def insert_transactions(session: AsyncSession, posted: Posted, now: dt.datetime) -> None:
    """One ``ledger_transaction`` row per posted spec, all stamped ``now``."""
    if not posted:
        return
    await insert_columns(
        session,
        transaction_t,
        {
            "id": [outcome.id for _, outcome in posted],
            "kind": [spec.kind for spec, _ in posted],
            "partner_id": [spec.partner_id for spec, _ in posted],
            "points": [spec.points for spec, _ in posted],
            "reference": [spec.reference for spec, _ in posted],
            "idempotency_key": [spec.idempotency_key for spec, _ in posted],
            "batch_id": [spec.batch_id for spec, _ in posted],
            "rate_version_id": [spec.rate_version_id for spec, _ in posted],
            "reverses_id": [spec.reverses_id for spec, _ in posted],
            "hold_id": [spec.hold_id for spec, _ in posted],
            "details": [
                json.dumps(spec.details, sort_keys=True) if spec.details else None
                for spec, _ in posted
            ],
        },
        {"created_at": now},
    )


async def insert_postings(session: AsyncSession, posted: Posted, now: dt.datetime) -> None:
    """Every line of every posted spec, all stamped ``now``."""
    lines = [(outcome.id, line) for _, outcome in posted for line in outcome.postings]
    if not lines:
        return
    await insert_columns(
        session,
        posting_t,
        {
            "transaction_id": [transaction_id for transaction_id, _ in lines],
            "account_id": [line.account_id for _, line in lines],
            "ledger": [line.ledger for _, line in lines],
            "seq": [line.seq for _, line in lines],
            "amount": [line.amount for _, line in lines],
            "balance_after": [line.balance_after for _, line in lines],
            "prev_hash": [line.prev_hash for _, line in lines],
            "hash": [line.hash for _, line in lines],
            "counterparty_account_id": [line.counterparty for _, line in lines],
        },
        {"created_at": now},
    )


async def update_heads(session: AsyncSession, columns: Mapping[str, list[Any]]) -> None:
    """Write the new heads (balance, held, seq, head hash) of the accounts, by id."""
    if columns["id"]:
        await update_by_id(session, account_t, columns)
