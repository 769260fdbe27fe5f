"""What the exchange signs in its answers: transaction receipts and account heads.

A signed document is exactly the JSON object the answer carries next to its signature
(``transaction`` with ``receipt``, ``head`` with ``signature``): a partner re-encodes that object
canonically (``exchange.signing.canonical_json``) and checks the signature against
``GET /v1/keys``. Timestamps are RFC 3339 in UTC, ids canonical UUID strings, hashes hex."""

from __future__ import annotations

from collections.abc import Collection, Mapping

import msgspec

from exchange.base import utcnow
from exchange.contract.schemas import (
    AccountHead,
    BalanceOut,
    DocumentSignature,
    HoldOut,
    MemberBalanceOut,
    OperationOut,
    PostingOut,
    TransactionOut,
    TransactionReceiptOut,
)
from exchange.ledger.engine import PostedTransaction
from exchange.ledger.holds import HoldView
from exchange.ledger.reads import MemberBalance, TransactionView
from exchange.signing import ExchangeKeys


def sign(keys: ExchangeKeys, document: msgspec.Struct) -> DocumentSignature:
    """The exchange's detached signature over ``document`` as it appears on the wire."""
    return DocumentSignature(**keys.sign_document(msgspec.to_builtins(document)))


def transaction_out(view: TransactionView) -> TransactionOut:
    return TransactionOut(
        id=view.id,
        kind=view.kind,
        partner=view.partner_id,
        points=view.points,
        reference=view.reference,
        reverses=view.reverses_id,
        hold=view.hold_id,
        created_at=view.created_at,
        postings=[
            PostingOut(
                ledger=p.ledger,
                account=p.account_kind,
                member_ref=p.member_ref,
                seq=p.seq,
                amount=p.amount,
                balance_after=p.balance_after,
                hash=p.hash.hex(),
                account_id=p.account_id,
                prev_hash=p.prev_hash.hex(),
                counterparty_account_id=p.counterparty_account_id or 0,
            )
            for p in view.postings
        ],
    )


_OWN_ACCOUNTS_ONLY = frozenset({"issue", "redeem", "transfer", "earn"})
"""Kinds whose every posting is on the brand's own accounts, with no reversal or hold."""


def posted_out(
    posted: PostedTransaction, accounts: Collection[int] | None = None
) -> tuple[TransactionOut, list[BalanceOut]]:
    """A transaction just posted, and its members' balances after it, as ``GET
    /v1/transactions/{id}`` will show its caller (tests hold the two equal), made from the
    engine's lines rather than read back. ``accounts``: the caller's own accounts among those
    the transaction touched, when it touched another partner's too (a conversion: the caller
    sees only its own postings); without them, only a transaction of the brand's own accounts
    (issue, redeem, transfer, every batch item) can be shown so."""
    if accounts is None and posted.kind not in _OWN_ACCOUNTS_ONLY:
        raise ValueError(f"a {posted.kind} transaction is shown only with its caller's accounts")
    lines = [line for line in posted.postings if accounts is None or line.account_id in accounts]
    refs = {
        account_id: ref
        for account_id, ref in posted.member_refs.items()
        if accounts is None or account_id in accounts
    }
    transaction = TransactionOut(
        id=posted.id,
        kind=posted.kind,
        partner=posted.partner_id,
        points=posted.points,
        reference=posted.reference,
        reverses=None,
        hold=None,
        created_at=posted.created_at,
        postings=[
            PostingOut(
                ledger=line.ledger,
                account=line.account_kind,
                member_ref=refs.get(line.account_id),
                seq=line.seq,
                amount=line.amount,
                balance_after=line.balance_after,
                hash=line.hash.hex(),
                account_id=line.account_id,
                prev_hash=line.prev_hash.hex(),
                counterparty_account_id=line.counterparty,
            )
            for line in lines
        ],
    )
    balances = []
    for account_id, member_ref in refs.items():
        balance, held = posted.balances[account_id]
        balances.append(BalanceOut(member_ref, balance, held, balance - held))
    return transaction, balances


def posted_operation_out(
    keys: ExchangeKeys, posted: PostedTransaction, accounts: Collection[int] | None = None
) -> OperationOut:
    """:func:`posted_out`, signed: the answer to issue, redeem, transfer and conversions."""
    transaction, balances = posted_out(posted, accounts)
    return OperationOut(transaction=transaction, receipt=sign(keys, transaction), balances=balances)


def receipt_out(keys: ExchangeKeys, view: TransactionView) -> TransactionReceiptOut:
    transaction = transaction_out(view)
    return TransactionReceiptOut(transaction=transaction, receipt=sign(keys, transaction))


def operation_out(
    keys: ExchangeKeys, view: TransactionView, balances: Mapping[int, tuple[int, int]]
) -> OperationOut:
    """``balances``: the engine's (balance, held) after the transaction, by account id."""
    transaction = transaction_out(view)
    members = {p.account_id: p.member_ref for p in view.postings if p.member_ref is not None}
    after = []
    for account_id, member_ref in members.items():
        balance, held = balances[account_id]
        after.append(BalanceOut(member_ref, balance, held, balance - held))
    return OperationOut(transaction=transaction, receipt=sign(keys, transaction), balances=after)


def balance_out(balance: MemberBalance) -> BalanceOut:
    return BalanceOut(balance.member_ref, balance.balance, balance.held, balance.available)


def member_balance_out(keys: ExchangeKeys, balance: MemberBalance) -> MemberBalanceOut:
    head = AccountHead(
        currency=balance.currency,
        member_ref=balance.member_ref,
        seq=balance.seq,
        balance=balance.balance,
        head_hash=balance.head_hash.hex(),
        signed_at=utcnow(),
    )
    return MemberBalanceOut(
        member_ref=balance.member_ref,
        currency=balance.currency,
        balance=balance.balance,
        held=balance.held,
        available=balance.available,
        head=head,
        signature=sign(keys, head),
        next_expiry_at=balance.next_expiry_at,
        next_expiry_points=balance.next_expiry_points,
    )


def hold_out(hold: HoldView) -> HoldOut:
    return HoldOut(
        id=hold.id,
        member_ref=hold.member_ref,
        points=hold.points,
        captured=hold.captured,
        status=hold.status,
        expires_at=hold.expires_at,
        created_at=hold.created_at,
        transaction_id=hold.transaction_id,
    )
