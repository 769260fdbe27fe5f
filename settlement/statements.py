"""Statements: each participant's signed account of a settled business day.

A statement is issued once, when its batch is written: a JSON document (below), its SHA-256 and
the exchange's detached Ed25519 signature over its canonical JSON (``exchange.signing``), all
stored in ``settlement_statement``. Ed25519 signatures are deterministic, but storing them keeps
a statement exactly as issued across key rotations (a retired key stays published at
``/v1/keys``).

The document (``"document": "settlement-statement/v1"``), money in integer micros, payouts and
payments in integer minor units:

- ``batch_id``, ``business_date``, ``cutoff_at``, ``currency``, ``minor_exponent``;
- ``participant``: ``id``, ``kind``, ``name``, ``currency`` (a brand's points currency);
- ``counterparties``: per other participant, ``owed_micros`` (it owes this participant) and
  ``owing_micros`` (this participant owes it), the gross matrix's row and column;
- ``gross_owed_micros``, ``gross_owing_micros``, ``net_micros`` (owed - owing),
  ``carry_in_micros``, ``payout_minor`` (positive: received, negative: paid),
  ``carry_out_micros``, with ``payout_minor * unit + carry_out == net + carry_in``;
- ``instructions``: the day's payments this participant makes or receives;
- a charity's ``donations_by_brand``: per brand, donations and reversals (count and points) and
  the money (``donated_micros``, ``refunded_micros``, ``net_micros``);
- a brand's ``owed_to_charities``: per charity, the same money from the brand's side.

CSV (:func:`statement_csv`) is for finance teams: one header row and fixed columns
(:data:`CSV_COLUMNS`), amounts as integers, a ``record`` column saying what a row is
(``position``, then ``counterparty`` rows, then ``instruction`` rows). Its last line is
``#signature,<key_id>,ed25519,<base64>``: the exchange's signature over the exact bytes of
every line before it, so the file proves itself without the JSON (spreadsheet tools read the
comment as one more row; ``pandas.read_csv(..., comment="#")`` skips it). A signature line
rather than a header: the CSV stays self-contained when saved, mailed or archived.
"""

from __future__ import annotations

import base64
import csv
import datetime as dt
import hashlib
import io
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Table, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.errors import StatementNotFound
from exchange.signing import ExchangeKeys, canonical_json
from exchange.spreadsheet import safe_row
from settlement.models import SettlementBatch, SettlementPosition, SettlementStatement

DOCUMENT_TYPE = "settlement-statement/v1"
CSV_COLUMNS = (
    "record",
    "business_date",
    "currency",
    "participant_id",
    "counterparty_id",
    "counterparty_kind",
    "counterparty_name",
    "owed_micros",
    "owing_micros",
    "net_micros",
    "carry_in_micros",
    "payout_minor",
    "carry_out_micros",
    "instruction_seq",
    "payer_id",
    "payee_id",
    "amount_minor",
    "donations",
    "donated_points",
    "reversals",
    "reversed_points",
)
SIGNATURE_PREFIX = "#signature,"

statement_t = cast(Table, SettlementStatement.__table__)
batch_t = cast(Table, SettlementBatch.__table__)
position_t = cast(Table, SettlementPosition.__table__)


def iso_utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class Participant:
    id: uuid.UUID
    kind: str
    name: str
    currency: str | None


@dataclass(frozen=True)
class DonationStats:
    """Donations of one brand to one charity in a batch (and their reversals)."""

    donations: int = 0
    donated_points: int = 0
    reversals: int = 0
    reversed_points: int = 0


@dataclass(frozen=True)
class DayFacts:
    """Everything a batch concluded, from which every participant's statement is cut."""

    batch_id: int
    business_date: dt.date
    cutoff_at: dt.datetime
    currency: str
    minor_exponent: int
    participants: Mapping[uuid.UUID, Participant]
    matrix: Mapping[tuple[uuid.UUID, uuid.UUID], int]
    """(debtor, creditor) -> micros."""
    positions: Mapping[uuid.UUID, Mapping[str, int]]
    """partner -> the position's amounts, named as in the document."""
    instructions: Sequence[tuple[int, uuid.UUID, uuid.UUID, int]]
    """(seq, payer, payee, amount_minor)."""
    donations: Mapping[tuple[uuid.UUID, uuid.UUID], DonationStats]
    """(charity, brand) -> counts."""


def statement_document(facts: DayFacts, partner_id: uuid.UUID) -> dict[str, Any]:
    """One participant's statement document (a pure function of the day's facts)."""
    me = facts.participants[partner_id]
    others = sorted(
        {q for pair in facts.matrix for q in pair if partner_id in pair} - {partner_id}, key=str
    )
    lines = [
        (
            facts.participants[other],
            facts.matrix.get((other, partner_id), 0),
            facts.matrix.get((partner_id, other), 0),
        )
        for other in others
    ]
    counterparties = [
        {
            "partner_id": str(who.id),
            "kind": who.kind,
            "name": who.name,
            "owed_micros": owed,
            "owing_micros": owing,
        }
        for who, owed, owing in lines
    ]
    document: dict[str, Any] = {
        "document": DOCUMENT_TYPE,
        "batch_id": facts.batch_id,
        "business_date": facts.business_date.isoformat(),
        "cutoff_at": iso_utc(facts.cutoff_at),
        "currency": facts.currency,
        "minor_exponent": facts.minor_exponent,
        "participant": {
            "id": str(me.id),
            "kind": me.kind,
            "name": me.name,
            "currency": me.currency,
        },
        "counterparties": counterparties,
        **facts.positions[partner_id],
        "instructions": [
            {"seq": seq, "payer_id": str(payer), "payee_id": str(payee), "amount_minor": amount}
            for seq, payer, payee, amount in facts.instructions
            if partner_id in (payer, payee)
        ],
    }
    if me.kind == "charity":
        document["donations_by_brand"] = [
            {
                "brand_id": str(brand.id),
                "brand_name": brand.name,
                "currency": brand.currency,
                **_stats(facts.donations.get((partner_id, brand.id))),
                "donated_micros": owed,
                "refunded_micros": owing,
                "net_micros": owed - owing,
            }
            for brand, owed, owing in lines
            if brand.kind == "brand"
        ]
    elif me.kind == "brand":
        document["owed_to_charities"] = [
            {
                "charity_id": str(charity.id),
                "charity_name": charity.name,
                "donated_micros": owing,
                "refunded_micros": owed,
                "net_micros": owing - owed,
            }
            for charity, owed, owing in lines
            if charity.kind == "charity"
        ]
    return document


def _stats(stats: DonationStats | None) -> dict[str, int]:
    stats = stats or DonationStats()
    return {
        "donations": stats.donations,
        "donated_points": stats.donated_points,
        "reversals": stats.reversals,
        "reversed_points": stats.reversed_points,
    }


async def issue_statements(
    session: AsyncSession, facts: DayFacts, keys: ExchangeKeys
) -> dict[uuid.UUID, str]:
    """Sign and store every participant's statement; returns each one's SHA-256 (hex)."""
    rows = []
    hashes: dict[uuid.UUID, str] = {}
    for partner_id in sorted(facts.positions, key=str):
        document = statement_document(facts, partner_id)
        body = canonical_json(document)
        hashes[partner_id] = hashlib.sha256(body).hexdigest()
        rows.append(
            {
                "batch_id": facts.batch_id,
                "partner_id": partner_id,
                "business_date": facts.business_date,
                "document": body.decode(),
                "sha256": hashes[partner_id],
                "signature": json.dumps(keys.sign_document(document), sort_keys=True),
                "created_at": dt.datetime.now(dt.UTC),
            }
        )
    if rows:
        await session.execute(insert(statement_t), rows)
    return hashes


async def get_statement(
    session: AsyncSession, partner_id: uuid.UUID, business_date: dt.date
) -> tuple[dict[str, Any], dict[str, str]]:
    """A participant's statement for a day: ``(document, signature)``. Another participant's
    statement, a day not settled and a day the partner had no part in are all the same
    :class:`StatementNotFound`."""
    row = (
        await session.execute(
            select(statement_t.c.document, statement_t.c.signature).where(
                statement_t.c.partner_id == partner_id,
                statement_t.c.business_date == business_date,
            )
        )
    ).first()
    if row is None:
        raise StatementNotFound(business_date)
    return json.loads(row.document), json.loads(row.signature)


@dataclass(frozen=True)
class StatementSummary:
    business_date: dt.date
    batch_id: int
    status: str
    """The batch's: ``complete`` (payments due) or ``paid``."""
    net_micros: int
    payout_minor: int
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "business_date": self.business_date.isoformat(),
            "batch_id": self.batch_id,
            "status": self.status,
            "net_micros": self.net_micros,
            "payout_minor": self.payout_minor,
            "sha256": self.sha256,
        }


async def list_statements(
    session: AsyncSession,
    partner_id: uuid.UUID,
    *,
    limit: int = 30,
    before: dt.date | None = None,
) -> list[StatementSummary]:
    """A participant's statements, newest first; ``before`` pages back (exclusive)."""
    query = (
        select(
            statement_t.c.business_date,
            statement_t.c.batch_id,
            statement_t.c.sha256,
            batch_t.c.status,
            position_t.c.net_micros,
            position_t.c.payout_minor,
        )
        .join(batch_t, batch_t.c.id == statement_t.c.batch_id)
        .join(
            position_t,
            (position_t.c.batch_id == statement_t.c.batch_id)
            & (position_t.c.partner_id == statement_t.c.partner_id),
        )
        .where(statement_t.c.partner_id == partner_id)
        .order_by(statement_t.c.business_date.desc())
        .limit(max(1, min(limit, 366)))
    )
    if before is not None:
        query = query.where(statement_t.c.business_date < before)
    return [
        StatementSummary(
            row.business_date, row.batch_id, row.status, row.net_micros, row.payout_minor,
            row.sha256,
        )
        for row in await session.execute(query)
    ]  # fmt: skip


class _SafeWriter(csv.DictWriter):  # type: ignore[type-arg]
    """A DictWriter whose text cells cannot be run as formulas (names are partners' own)."""

    def writerow(self, rowdict: Mapping[str, Any]) -> Any:
        return super().writerow(safe_row(rowdict))


def statement_csv(document: Mapping[str, Any], keys: ExchangeKeys) -> str:
    """The statement as CSV with its trailing signature line (see the module's note)."""
    out = io.StringIO()
    writer = _SafeWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    common = {
        "business_date": document["business_date"],
        "currency": document["currency"],
        "participant_id": document["participant"]["id"],
    }
    writer.writerow(
        {
            **common,
            "record": "position",
            "owed_micros": document["gross_owed_micros"],
            "owing_micros": document["gross_owing_micros"],
            "net_micros": document["net_micros"],
            "carry_in_micros": document["carry_in_micros"],
            "payout_minor": document["payout_minor"],
            "carry_out_micros": document["carry_out_micros"],
        }
    )
    donations = {line["brand_id"]: line for line in document.get("donations_by_brand", [])}
    for line in document["counterparties"]:
        stats = donations.get(line["partner_id"], {})
        writer.writerow(
            {
                **common,
                "record": "counterparty",
                "counterparty_id": line["partner_id"],
                "counterparty_kind": line["kind"],
                "counterparty_name": line["name"],
                "owed_micros": line["owed_micros"],
                "owing_micros": line["owing_micros"],
                "net_micros": line["owed_micros"] - line["owing_micros"],
                **{key: stats[key] for key in CSV_COLUMNS[-4:] if key in stats},
            }
        )
    for line in document["instructions"]:
        writer.writerow(
            {
                **common,
                "record": "instruction",
                "instruction_seq": line["seq"],
                "payer_id": line["payer_id"],
                "payee_id": line["payee_id"],
                "amount_minor": line["amount_minor"],
            }
        )
    body = out.getvalue()
    signature = base64.b64encode(keys.sign(body.encode())).decode()
    return f"{body}{SIGNATURE_PREFIX}{keys.key_id},ed25519,{signature}\r\n"


def verify_statement_csv(text: str, public_keys: Mapping[str, Ed25519PublicKey]) -> bool:
    """Whether a CSV statement's signature line holds for the lines before it."""
    body, _, last = text.removesuffix("\r\n").rpartition("\r\n")
    if not last.startswith(SIGNATURE_PREFIX):
        return False
    fields = last[len(SIGNATURE_PREFIX) :].split(",")
    if len(fields) != 3 or fields[1] != "ed25519" or fields[0] not in public_keys:
        return False
    try:
        public_keys[fields[0]].verify(base64.b64decode(fields[2]), (body + "\r\n").encode())
    except (InvalidSignature, ValueError):
        return False
    return True
