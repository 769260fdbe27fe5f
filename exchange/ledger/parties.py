"""Who acts on the ledger: what the core knows of a partner, without the partner domain."""

from __future__ import annotations

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class PartnerInfo:
    """What the ledger needs to know about a partner."""

    id: uuid.UUID
    kind: str
    name: str
    currency: str | None
    shards: int
    min_donation_points: int | None = None
