"""Domain errors. Each names its problem ``type`` (a stable slug under /problems/), its HTTP
status and the facts a caller needs; the API maps them to RFC 9457 problem details in one place."""

from __future__ import annotations

from typing import Any, ClassVar

PROBLEM_TYPE_BASE = "https://exchange.example/problems/"
"""Every problem's ``type`` is this plus its slug."""
_RESERVED = frozenset({"type", "title", "status", "detail", "instance"})


class DomainError(Exception):
    """Base of every refusal the exchange gives on purpose."""

    slug: ClassVar[str] = "domain-error"
    status: ClassVar[int] = 422
    title: ClassVar[str] = "The request was refused"

    status_code: ClassVar[int] = 422
    """``status`` again, on the class: Litestar's exception logging looks up ``status_code`` on
    the exception's class, and leaves the statuses in ``disable_stack_trace`` (refusals, which
    are answers, not incidents) out of the error log."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.status_code = cls.status

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra

    def problem_document(self) -> dict[str, Any]:
        """This refusal as an RFC 9457 problem document (what the API answers with)."""
        document: dict[str, Any] = {
            "type": PROBLEM_TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            document["detail"] = self.detail
        document.update((k, v) for k, v in self.extra.items() if k not in _RESERVED)
        return document


class InvalidAmount(DomainError):
    slug = "invalid-amount"
    title = "Points must be a whole number from 1 to 10^12"


class InvalidInput(DomainError):
    slug = "invalid-input"
    title = "The request is not valid"


class BadRequest(DomainError):
    """A request no conforming client sends (duplicate JSON keys, several Host fields): the
    same ``bad-request`` problem as Litestar's own 400s."""

    slug = "bad-request"
    status = 400
    title = "Bad Request"


class InvalidCursor(InvalidInput):
    """A page cursor that this service did not give (or one holding an absurd position)."""

    slug = "invalid-cursor"
    status = 400
    title = "The cursor is not one this service gave"


class DeliveryNotFound(DomainError):
    slug = "delivery-not-found"
    status = 404
    title = "No such webhook delivery"


class DeliveryNotDead(DomainError):
    """Only a dead-lettered delivery is replayed; a pending one is still being tried."""

    slug = "delivery-not-dead"
    status = 409
    title = "The webhook delivery is not dead-lettered"


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


class KeyNotFound(DomainError):
    slug = "key-not-found"
    status = 404
    title = "No such key"


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


class HoldExceeded(DomainError):
    slug = "hold-exceeded"
    title = "A capture cannot take more than the hold reserved"

    def __init__(self, held: int, requested: int) -> None:
        super().__init__(
            f"cannot capture {requested} points of a {held}-point hold",
            field="points",
            held=held,
            requested=requested,
        )


class TransactionNotFound(DomainError):
    slug = "transaction-not-found"
    status = 404
    title = "No such transaction"


class NotReversible(DomainError):
    slug = "not-reversible"
    title = "This transaction cannot be reversed"


class NotReversibleByYou(DomainError):
    """A brand the transaction touched (the destination of a conversion) asked to reverse it.
    Said only to a brand whose own accounts the transaction moved, so it reveals nothing of
    transactions a partner had no part in (those stay a 404)."""

    slug = "not-reversible-by-you"
    status = 403
    title = "Only the partner that made a transaction may reverse it"


class ReversalExceedsOriginal(DomainError):
    slug = "reversal-exceeds-original"
    title = "Reversals would exceed the original amount"


class LimitExceeded(DomainError):
    slug = "limit-exceeded"
    title = "A balance would leave the range the ledger keeps"


class UnbalancedTransaction(Exception):
    """A programming error: an operation built postings that do not sum to zero per ledger."""


# --- pricing, conversions and donations ---------------------------------------------------------


class UnknownCurrency(DomainError):
    slug = "unknown-currency"
    title = "No brand has this points currency"


class SameBrand(DomainError):
    slug = "same-brand"
    title = "A conversion or a rate needs two different brands"


class MemberNotEnrolled(DomainError):
    """The destination member of a conversion is not enrolled at the destination brand. A 422,
    not a 404: the request is well formed and addresses an existing resource; a fact in its body
    does not hold."""

    slug = "member-not-enrolled"
    title = "The member is not enrolled at that brand"

    def __init__(self, member_ref: str, currency: str) -> None:
        super().__init__(
            f"no member {member_ref!r} is enrolled at the {currency} brand",
            member_ref=member_ref,
            currency=currency,
        )


class RateNotFound(DomainError):
    slug = "rate-not-found"
    title = "No rate is in force for this pair of brands"


class PointValueNotFound(DomainError):
    slug = "point-value-not-found"
    title = "No point value is in force for this brand"


class BelowMinimum(DomainError):
    slug = "below-minimum"
    title = "The points are below the rate's minimum"


class ZeroOutput(DomainError):
    slug = "zero-output"
    title = "The conversion would give no points"


class OperatorNotConfigured(DomainError):
    slug = "operator-not-configured"
    status = 503
    title = "The exchange has no operator to book a fee to"


class QuoteNotFound(DomainError):
    slug = "quote-not-found"
    status = 404
    title = "No such quote"


class QuoteExpired(DomainError):
    slug = "quote-expired"
    title = "The quote has expired"


class QuoteUsed(DomainError):
    slug = "quote-used"
    status = 409
    title = "The quote has been used"


class QuoteMismatch(DomainError):
    slug = "quote-mismatch"
    title = "The request does not match its quote"


class NotACharity(DomainError):
    slug = "not-a-charity"
    title = "Donations go to a registered charity"


class BelowCharityMinimum(DomainError):
    slug = "below-charity-minimum"
    title = "The donation is below the charity's minimum"


class VersionConflict(DomainError):
    slug = "version-conflict"
    status = 409
    title = "A version with this effective time exists already"


class EffectiveInPast(DomainError):
    slug = "effective-in-past"
    title = "A new version cannot take effect in the past"


class SettlementNotFound(DomainError):
    slug = "settlement-not-found"
    status = 404
    title = "No settlement for that business date"

    def __init__(self, business_date: object) -> None:
        super().__init__(
            f"no settlement for business date {business_date}", business_date=str(business_date)
        )


class StatementNotFound(DomainError):
    """Also what a partner gets for another partner's statement: it learns nothing of it."""

    slug = "statement-not-found"
    status = 404
    title = "No statement for that business date"

    def __init__(self, business_date: object) -> None:
        super().__init__(
            f"no statement for business date {business_date}", business_date=str(business_date)
        )


class SettlementNotDue(DomainError):
    slug = "settlement-not-due"
    status = 409
    title = "The business day has not ended yet"


class SettlementOutOfOrder(DomainError):
    slug = "settlement-out-of-order"
    status = 409
    title = "Business days settle in order, each once"


class SettlementCalendarChanged(DomainError):
    """The run's cutoff or zone is not the one the batches before were cut with: settling with
    it would cut a day in the wrong place."""

    slug = "settlement-calendar-changed"
    status = 409
    title = "Business days are cut with the zone and cutoff recorded on the batches before"


class EarlyCutoffRefused(DomainError):
    slug = "early-cutoff-refused"
    status = 409
    title = "A business day can be cut early only on a test database, and only the current day"


class SettlementAlreadyPaid(DomainError):
    slug = "settlement-already-paid"
    status = 409
    title = "The settlement is paid and can no longer change"


class OperatorOnly(DomainError):
    slug = "operator-only"
    status = 403
    title = "Only the operator can do this"


class ConcurrentUse(DomainError):
    slug = "concurrent-use"
    status = 409
    title = "Another request being posted at this moment uses the same resource; retry"


# --- earn rules and purchases -------------------------------------------------------------------


class EarnRulesNotFound(DomainError):
    slug = "earn-rules-not-found"
    title = "The brand has no earn rules in force"


class CurrencyNotEarning(DomainError):
    """The rule version in force has no rate for the order's money currency."""

    slug = "currency-not-earning"
    title = "The earn rules have no rate for this currency"


class NothingEarned(DomainError):
    slug = "nothing-earned"
    title = "The order earns no points"


class PurchaseNotFound(DomainError):
    slug = "purchase-not-found"
    status = 404
    title = "No such purchase"


class OrderExists(DomainError):
    slug = "order-exists"
    status = 409
    title = "This order has earned its points already"


class ReturnExceedsPurchase(DomainError):
    slug = "return-exceeds-purchase"
    title = "More would be returned than the order bought"
