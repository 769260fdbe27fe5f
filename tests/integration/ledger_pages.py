"""Reading the ledger like an accountant: postings and balances by name, sums per ledger.

Accounts are named ``LEDGER:owner``: ``SKY:alice`` (a member), ``SKY:issuance`` (the brand's
issuance, all shards together), ``EUR:Sky Air`` (a participant's settlement, all shards together).
"""

from __future__ import annotations

import uuid
from collections import defaultdict

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.ledger.models import Account, LedgerTransaction, Member, Posting
from partners.models import Partner

account_t = Account.__table__
member_t = Member.__table__
partner_t = Partner.__table__
posting_t = Posting.__table__
transaction_t = LedgerTransaction.__table__


def _name(ledger: str, kind: str, partner_name: str, member_ref: str | None) -> str:
    if kind == "member":
        return f"{ledger}:{member_ref}"
    if kind == "issuance":
        return f"{ledger}:issuance"
    return f"{ledger}:{partner_name}"


async def postings(session: AsyncSession, transaction_id: uuid.UUID) -> dict[str, int]:
    """The transaction's postings, by account name (shards of one pool added together)."""
    rows = await session.execute(
        select(
            posting_t.c.ledger,
            account_t.c.kind,
            partner_t.c.name,
            member_t.c.member_ref,
            posting_t.c.amount,
        )
        .join(account_t, account_t.c.id == posting_t.c.account_id)
        .join(partner_t, partner_t.c.id == account_t.c.partner_id)
        .outerjoin(member_t, member_t.c.id == account_t.c.member_id)
        .where(posting_t.c.transaction_id == transaction_id)
    )
    page: dict[str, int] = defaultdict(int)
    for ledger, kind, partner_name, member_ref, amount in rows:
        page[_name(ledger, kind, partner_name, member_ref)] += amount
    return dict(page)


async def balances(session: AsyncSession) -> dict[str, int]:
    """Every account's balance by name (pools summed over their shards), zeros included."""
    rows = await session.execute(
        select(
            account_t.c.ledger,
            account_t.c.kind,
            partner_t.c.name,
            member_t.c.member_ref,
            account_t.c.balance,
        )
        .join(partner_t, partner_t.c.id == account_t.c.partner_id)
        .outerjoin(member_t, member_t.c.id == account_t.c.member_id)
    )
    page: dict[str, int] = defaultdict(int)
    for ledger, kind, partner_name, member_ref, balance in rows:
        page[_name(ledger, kind, partner_name, member_ref)] += balance
    return dict(page)


async def ledger_sums(session: AsyncSession) -> dict[str, int]:
    """Per ledger, the sum of every posting ever made and the sum of account balances."""
    sums: dict[str, int] = {}
    for ledger, total in await session.execute(
        select(posting_t.c.ledger, func.sum(posting_t.c.amount)).group_by(posting_t.c.ledger)
    ):
        sums[f"postings {ledger}"] = int(total)
    for ledger, total in await session.execute(
        select(account_t.c.ledger, func.sum(account_t.c.balance)).group_by(account_t.c.ledger)
    ):
        sums[f"balances {ledger}"] = int(total)
    return sums


async def counts(session: AsyncSession) -> tuple[int, int]:
    """How many transactions and postings the ledger holds."""
    transactions = await session.scalar(select(func.count()).select_from(transaction_t))
    posted = await session.scalar(select(func.count()).select_from(posting_t))
    return int(transactions or 0), int(posted or 0)
