"""Issue 15, finding 4: a counterparty named like a formula reaches the CSV statement as text."""

from __future__ import annotations

import csv
import io

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from exchange.signing import ExchangeKeys
from settlement.statements import SIGNATURE_PREFIX, statement_csv, verify_statement_csv

NAMES = {
    '=HYPERLINK("https://evil.example","click")': '\'=HYPERLINK("https://evil.example","click")',
    "@SUM(1+1)": "'@SUM(1+1)",
    "+1+1": "'+1+1",
    "-2+3": "'-2+3",
    "\tTab Air": "'\tTab Air",
    "\rCR Air": "'\rCR Air",
    "Sky Air": "Sky Air",
    "Air = Sea": "Air = Sea",
}


def _document() -> dict[str, object]:
    return {
        "business_date": "2026-11-21",
        "currency": "EUR",
        "participant": {"id": "p-1"},
        "gross_owed_micros": 0,
        "gross_owing_micros": 5,
        "net_micros": -5,
        "carry_in_micros": 0,
        "payout_minor": 0,
        "carry_out_micros": -5,
        "counterparties": [
            {"partner_id": f"c-{n}", "kind": "brand", "name": name, "owed_micros": 0,
             "owing_micros": 1}
            for n, name in enumerate(NAMES)
        ],
        "instructions": [],
    }  # fmt: skip


def test_formula_cells_are_neutralised_numbers_kept() -> None:
    private = Ed25519PrivateKey.generate()
    keys = ExchangeKeys(private, "ex-1", {"ex-1": private.public_key()})
    text = statement_csv(_document(), keys)
    assert verify_statement_csv(text, keys.published)
    rows = list(csv.DictReader(io.StringIO(text.rpartition(SIGNATURE_PREFIX)[0])))
    named = {row["counterparty_id"]: row for row in rows if row["record"] == "counterparty"}
    assert [named[f"c-{n}"]["counterparty_name"] for n in range(len(NAMES))] == list(NAMES.values())
    [position] = [row for row in rows if row["record"] == "position"]
    assert (position["net_micros"], position["carry_out_micros"]) == ("-5", "-5")
    assert all(named[f"c-{n}"]["net_micros"] == "-1" for n in range(len(NAMES)))
