"""Domain errors. Each names its problem ``type`` (a stable slug under /problems/), its HTTP
status and the facts a caller needs; the API maps them to RFC 9457 problem details in one place."""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """Base of every refusal the exchange gives on purpose."""

    slug: ClassVar[str] = "domain-error"
    status: ClassVar[int] = 422
    title: ClassVar[str] = "The request was refused"

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class InvalidAmount(DomainError):
    slug = "invalid-amount"
    title = "Points must be a whole number from 1 to 10^12"


class InvalidInput(DomainError):
    slug = "invalid-input"
    title = "The request is not valid"


class InsufficientPoints(DomainError):
    slug = "insufficient-points"
    title = "Not enough available points"

    def __init__(self, member_ref: str, available: int, requested: int) -> None:
        super().__init__(
            f"member {member_ref!r} has {available} points available, {requested} requested",
            member_ref=member_ref,
            available=available,
            requested=requested,
        )


class MemberNotFound(DomainError):
    slug = "member-not-found"
    status = 404
    title = "No such member"

    def __init__(self, member_ref: str) -> None:
        super().__init__(f"no member {member_ref!r}", member_ref=member_ref)


class PartnerNotFound(DomainError):
    slug = "partner-not-found"
    status = 404
    title = "No such partner"


class NotABrand(DomainError):
    slug = "not-a-brand"
    status = 403
    title = "Only a brand partner can do this"


class HoldNotFound(DomainError):
    slug = "hold-not-found"
    status = 404
    title = "No such hold"


class HoldNotActive(DomainError):
    slug = "hold-not-active"
    status = 409
    title = "The hold is no longer active"


class TransactionNotFound(DomainError):
    slug = "transaction-not-found"
    status = 404
    title = "No such transaction"


class NotReversible(DomainError):
    slug = "not-reversible"
    title = "This transaction cannot be reversed"


class ReversalExceedsOriginal(DomainError):
    slug = "reversal-exceeds-original"
    title = "Reversals would exceed the original amount"


class LimitExceeded(DomainError):
    slug = "limit-exceeded"
    title = "A balance would leave the range the ledger keeps"


class UnbalancedTransaction(Exception):
    """A programming error: an operation built postings that do not sum to zero per ledger."""
