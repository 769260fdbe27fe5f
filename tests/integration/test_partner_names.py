"""Partners of one kind have unique names, and a charity a unique code that donations name it
by (issue 16: two charities could share a name, and donating needed the charity's UUID)."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.errors import InvalidInput
from exchange.ledger.parties import PartnerInfo
from exchange.settings import Settings
from partners.service import create_partner, find_charity_by_code

Sessions = async_sessionmaker[AsyncSession]


async def _create(
    sessions: Sessions, kind: str, name: str, currency: str | None = None, code: str | None = None
) -> PartnerInfo:
    async with sessions() as s, s.begin():
        return await create_partner(
            s, kind=kind, name=name, currency=currency, settlement_currency="EUR", shards=1,
            code=code,
        )  # fmt: skip


async def test_names_are_unique_per_kind_and_codes_unique(
    sessions: Sessions, settings: Settings
) -> None:
    water = await _create(sessions, "charity", "Clean Water", code="AID")
    with pytest.raises(InvalidInput, match="exists already"):
        await _create(sessions, "charity", "Clean Water", code="AID2")
    with pytest.raises(InvalidInput, match="code AID is taken"):
        await _create(sessions, "charity", "Other Water", code="AID")
    with pytest.raises(InvalidInput, match="only a charity has a code"):
        await _create(sessions, "brand", "Sky Air", currency="SKY", code="SKYX")
    # Another kind may share the name.
    await _create(sessions, "brand", "Clean Water", currency="CW")
    async with sessions() as s:
        found = await find_charity_by_code(s, "aid")
    assert found is not None and found.id == water.id
