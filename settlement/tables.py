"""The tables settlement reads and writes, as SQLAlchemy Core tables: settlement works in
aggregates and bulk inserts, never loading ORM objects."""

from __future__ import annotations

import typing

from sqlalchemy import Table

from exchange.ledger.models import Account, LedgerTransaction, Posting
from partners.models import Partner
from settlement.models import (
    SettlementBatch,
    SettlementInstruction,
    SettlementObligation,
    SettlementPosition,
    SettlementRange,
)

account_t = typing.cast(Table, Account.__table__)
posting_t = typing.cast(Table, Posting.__table__)
transaction_t = typing.cast(Table, LedgerTransaction.__table__)
partner_t = typing.cast(Table, Partner.__table__)
batch_t = typing.cast(Table, SettlementBatch.__table__)
range_t = typing.cast(Table, SettlementRange.__table__)
obligation_t = typing.cast(Table, SettlementObligation.__table__)
position_t = typing.cast(Table, SettlementPosition.__table__)
instruction_t = typing.cast(Table, SettlementInstruction.__table__)
