"""The operator console's query layer: every figure its pages show, as contract Structs
(:mod:`exchange.contract.reporting`). Each function works in the caller's session and writes
nothing; the daily rollup that keeps the reports fast is :mod:`exchange.reporting.rollup`."""

from exchange.reporting.metrics import programme_metrics
from exchange.reporting.operations import (
    chain_heads,
    ledger_health,
    rate_history,
    settlement_positions_over_time,
    webhook_deliveries,
)
from exchange.reporting.overview import overview

__all__ = [
    "chain_heads",
    "ledger_health",
    "overview",
    "programme_metrics",
    "rate_history",
    "settlement_positions_over_time",
    "webhook_deliveries",
]
