"""The report's figures for one stretch of time, read from the postings themselves.

Each function here builds one ``SELECT`` over the transactions created in ``[start, end)`` (a
business day's cutoffs): the daily rollup (:mod:`exchange.reporting.rollup`) stores what they
give for a closed day, and the reports run them live for the days not yet closed, so a figure
is computed by one piece of SQL whichever way it is read.

What moves a brand's points is what happens on its *member* accounts (the issuance side is
their mirror image): a posting on a member account of the brand's ledger, by the kind of its
transaction. Money is read from settlement accounts only for donations (what the brand owes the
charity).
"""

from __future__ import annotations

import datetime as dt
from typing import Any, cast

from sqlalchemy import Table, and_, case, func, literal, select
from sqlalchemy.sql import Select

from exchange.ledger.models import Account, LedgerTransaction, Posting

account_t = cast(Table, Account.__table__)
posting_t = cast(Table, Posting.__table__)
transaction_t = cast(Table, LedgerTransaction.__table__)

EARN_KINDS = ("issue",)
"""What a member *earns*: points its brand issues to it."""
BURN_KINDS = ("redeem", "capture")
"""What a member *burns*: points redeemed with its brand (a captured hold is a redemption)."""
NOT_ACTIVITY = ("reverse", "expire")
"""Postings that are not the member's doing: a reversal undoes, an expiry lapses."""


def _member_postings(start: dt.datetime, end: dt.datetime) -> Any:
    """Postings on member accounts of transactions created in ``[start, end)``."""
    return (
        transaction_t.join(posting_t, posting_t.c.transaction_id == transaction_t.c.id).join(
            account_t, account_t.c.id == posting_t.c.account_id
        )
    ), and_(
        transaction_t.c.created_at >= start,
        transaction_t.c.created_at < end,
        account_t.c.kind == "member",
    )


def _positive(amount: Any) -> Any:
    return func.coalesce(func.sum(case((amount > 0, amount), else_=0)), 0)


def _negative(amount: Any) -> Any:
    return func.coalesce(func.sum(case((amount < 0, -amount), else_=0)), 0)


def volumes(business_date: dt.date, start: dt.datetime, end: dt.datetime) -> Select[Any]:
    """Per brand and transaction kind: points credited to and debited from its members, and
    the postings that moved them. Columns as ``reporting_volume``'s."""
    joined, where = _member_postings(start, end)
    return (
        select(
            literal(business_date).label("business_date"),
            account_t.c.partner_id.label("brand_id"),
            transaction_t.c.kind.label("kind"),
            _positive(posting_t.c.amount).label("points_in"),
            _negative(posting_t.c.amount).label("points_out"),
            func.count().label("postings"),
        )
        .select_from(joined)
        .where(where)
        .group_by(account_t.c.partner_id, transaction_t.c.kind)
    )


def flows(business_date: dt.date, start: dt.datetime, end: dt.datetime) -> Select[Any]:
    """Per source and destination brand: conversions, their source points (the transaction's
    principal) and the destination points credited (its one positive member posting)."""
    joined, where = _member_postings(start, end)
    return (
        select(
            literal(business_date).label("business_date"),
            transaction_t.c.partner_id.label("from_brand_id"),
            account_t.c.partner_id.label("to_brand_id"),
            func.sum(transaction_t.c.points).label("points_out"),
            func.sum(posting_t.c.amount).label("points_in"),
            func.count().label("conversions"),
        )
        .select_from(joined)
        .where(where, transaction_t.c.kind == "convert", posting_t.c.amount > 0)
        .group_by(transaction_t.c.partner_id, account_t.c.partner_id)
    )


def donations(business_date: dt.date, start: dt.datetime, end: dt.datetime) -> Select[Any]:
    """Per charity and brand: donations, their points and the money the brand owes for them
    (the charity's settlement credit, which is the points at the value in force then)."""
    return (
        select(
            literal(business_date).label("business_date"),
            account_t.c.partner_id.label("charity_id"),
            transaction_t.c.partner_id.label("brand_id"),
            func.sum(transaction_t.c.points).label("points"),
            func.sum(posting_t.c.amount).label("value_micros"),
            func.count().label("donations"),
        )
        .select_from(
            transaction_t.join(posting_t, posting_t.c.transaction_id == transaction_t.c.id).join(
                account_t, account_t.c.id == posting_t.c.account_id
            )
        )
        .where(
            transaction_t.c.created_at >= start,
            transaction_t.c.created_at < end,
            transaction_t.c.kind == "donate",
            account_t.c.kind == "settlement",
            account_t.c.partner_id != transaction_t.c.partner_id,
            posting_t.c.amount > 0,
        )
        .group_by(account_t.c.partner_id, transaction_t.c.partner_id)
    )


MEMBER_DAY_COLUMNS = ("brand_id", "business_date", "account_id", "month", "earned", "burned")


def member_days(business_date: dt.date, start: dt.datetime, end: dt.datetime) -> Select[Any]:
    """Per member active that day (any posting on its account but a reversal or an expiry):
    the points it earned and burned. Columns :data:`MEMBER_DAY_COLUMNS`, in that order."""
    joined, where = _member_postings(start, end)
    kind, amount = transaction_t.c.kind, posting_t.c.amount
    return (
        select(
            account_t.c.partner_id.label("brand_id"),
            literal(business_date).label("business_date"),
            posting_t.c.account_id.label("account_id"),
            literal(business_date.replace(day=1)).label("month"),
            _positive(case((kind.in_(EARN_KINDS), amount), else_=0)).label("earned"),
            _negative(case((kind.in_(BURN_KINDS), amount), else_=0)).label("burned"),
        )
        .select_from(joined)
        .where(where, kind.not_in(NOT_ACTIVITY))
        .group_by(account_t.c.partner_id, posting_t.c.account_id)
    )
