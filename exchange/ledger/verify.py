"""``ledger verify``: recompute every chain, balance and zero-sum from the postings alone.

A single changed, deleted or inserted posting shows up here: a changed one no longer hashes to
what the next posting (or the account head) chained to, a deleted one leaves a gap in its
account's sequence, an inserted one runs past the account head or breaks a sequence, and each of
them leaves its transaction unbalanced."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.ledger.engine import GENESIS_HASH, posting_hash
from exchange.ledger.models import Account, Hold, Posting

MAX_FAULTS = 100

account_t = Account.__table__
posting_t = Posting.__table__
hold_t = Hold.__table__


@dataclass
class Fault:
    kind: str
    detail: str
    account_id: int | None = None
    posting_id: int | None = None
    seq: int | None = None
    transaction_id: uuid.UUID | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, uuid.UUID) else v) for k, v in self.__dict__.items()}


@dataclass
class VerifyReport:
    accounts: int = 0
    postings: int = 0
    transactions_checked: bool = False
    faults: list[Fault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults

    def add(self, fault: Fault) -> None:
        if len(self.faults) < MAX_FAULTS:
            self.faults.append(fault)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "accounts": self.accounts,
            "postings": self.postings,
            "first_fault": self.faults[0].as_dict() if self.faults else None,
            "faults": [fault.as_dict() for fault in self.faults],
        }


async def verify_ledger(session: AsyncSession) -> VerifyReport:
    """Walk every account's chain in sequence order, then check each transaction's zero-sum."""
    report = VerifyReport()
    rows = await session.stream(
        select(
            account_t.c.id,
            account_t.c.ledger,
            account_t.c.kind,
            account_t.c.balance,
            account_t.c.seq,
            account_t.c.head_hash,
            posting_t.c.id,
            posting_t.c.transaction_id,
            posting_t.c.ledger,
            posting_t.c.seq,
            posting_t.c.amount,
            posting_t.c.balance_after,
            posting_t.c.prev_hash,
            posting_t.c.hash,
        )
        .select_from(account_t.outerjoin(posting_t, posting_t.c.account_id == account_t.c.id))
        .order_by(account_t.c.id, posting_t.c.seq)
        .execution_options(yield_per=5000)
    )
    current: Any = None
    balance = seq = 0
    head = GENESIS_HASH

    def close_account() -> None:
        if current is None:
            return
        if (current.balance, current.seq, current.head_hash) != (balance, seq, head):
            report.add(
                Fault(
                    "account-head",
                    f"account {current.id} head says balance {current.balance} at seq "
                    f"{current.seq}, its postings give balance {balance} at seq {seq}"
                    + (" (postings missing after the last one)" if current.seq > seq else ""),
                    account_id=current.id,
                    seq=seq + 1 if current.seq > seq else current.seq,
                )
            )
        if current.kind == "member" and balance < 0:
            report.add(Fault("negative-member", f"member account {current.id} is negative",
                             account_id=current.id))  # fmt: skip

    async for partition in rows.partitions():
        for row in partition:
            (account_id, ledger, _kind, _bal, _seq, _head, posting_id, transaction_id,
             posting_ledger, p_seq, amount, balance_after, prev_hash, digest) = row  # fmt: skip
            if current is None or account_id != current.id:
                close_account()
                current = _AccountHead(account_id, ledger, _kind, _bal, _seq, _head)
                report.accounts += 1
                balance, seq, head = 0, 0, GENESIS_HASH
            if posting_id is None:
                continue
            report.postings += 1
            expected_seq = seq + 1
            problem = None
            if p_seq != expected_seq:
                problem = f"posting {posting_id} has seq {p_seq}, expected {expected_seq}" + (
                    f" (seq {expected_seq}..{p_seq - 1} missing)" if p_seq > expected_seq else ""
                )
            elif prev_hash != head:
                problem = f"posting {posting_id} does not chain to the posting before it"
            elif balance_after != balance + amount:
                problem = (
                    f"posting {posting_id} says balance {balance_after}, "
                    f"{balance} + {amount} = {balance + amount}"
                )
            elif posting_ledger != ledger:
                problem = (
                    f"posting {posting_id} is on ledger {posting_ledger}, its account on {ledger}"
                )
            elif digest != posting_hash(
                account_id, p_seq, transaction_id, amount, balance_after, prev_hash
            ):
                problem = f"posting {posting_id} does not hash to its recorded hash"
            if problem:
                report.add(
                    Fault("chain", problem, account_id=account_id, posting_id=posting_id,
                          seq=p_seq, transaction_id=transaction_id)
                )  # fmt: skip
            # Carry on from what the row says, so one bad row is named once, not at every row after.
            balance, seq, head = balance_after, p_seq, digest
    close_account()

    unbalanced = await session.execute(
        select(posting_t.c.transaction_id, posting_t.c.ledger, func.sum(posting_t.c.amount),
               func.min(posting_t.c.id))
        .group_by(posting_t.c.transaction_id, posting_t.c.ledger)
        .having(func.sum(posting_t.c.amount) != 0)
        .order_by(func.min(posting_t.c.id))
    )  # fmt: skip
    for transaction_id, ledger, total, first_posting in unbalanced:
        report.add(
            Fault("zero-sum", f"transaction {transaction_id} sums to {total} on ledger {ledger}",
                  posting_id=first_posting, transaction_id=transaction_id)
        )  # fmt: skip
    report.transactions_checked = True

    held = await session.execute(
        select(account_t.c.id, account_t.c.held, func.coalesce(func.sum(hold_t.c.points), 0))
        .select_from(account_t.outerjoin(
            hold_t, and_(hold_t.c.account_id == account_t.c.id, hold_t.c.status == "active")))
        .where(account_t.c.kind == "member")
        .group_by(account_t.c.id, account_t.c.held)
        .having(account_t.c.held != func.coalesce(func.sum(hold_t.c.points), 0))
    )  # fmt: skip
    for account_id, recorded, active in held:
        report.add(Fault("held", f"account {account_id} holds {recorded}, its active holds "
                                 f"{active}", account_id=account_id))  # fmt: skip
    return report


@dataclass(frozen=True)
class _AccountHead:
    id: int
    ledger: str
    kind: str
    balance: int
    seq: int
    head_hash: bytes
