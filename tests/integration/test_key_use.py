"""A key's last use: read from the nonces still kept, and folded into ``partner_key`` by the
sweep before they are purged, so it outlives them."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.ledger.parties import PartnerInfo
from exchange.settings import Settings
from exchange.signing import load_master_key
from partners.key_use import fold_last_use, keys_last_used
from partners.models import SignatureNonce
from tests.integration.conftest import register_key


async def test_the_last_use_outlives_the_nonces(
    sessions: async_sessionmaker[AsyncSession],
    engine: AsyncEngine,
    settings: Settings,
    sky: PartnerInfo,
) -> None:
    key = await register_key(sessions, load_master_key(settings), sky)
    signed_at = utcnow().replace(microsecond=0) - dt.timedelta(minutes=10)
    expires = signed_at + dt.timedelta(seconds=330)  # created + the window + the margin
    async with sessions() as session, session.begin():
        assert key.key_id not in await keys_last_used(session)
        await session.execute(
            insert(SignatureNonce).values(key_id=key.key_id, nonce="n1", expires_at=expires)
        )
        assert (await keys_last_used(session))[key.key_id] == signed_at
    async with engine.begin() as conn:
        await fold_last_use(conn, utcnow())
        await conn.execute(delete(SignatureNonce))
    async with sessions() as session:
        assert (await keys_last_used(session))[key.key_id] == signed_at
