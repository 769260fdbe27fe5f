"""When each key last signed a request, without writing on the request's path.

A verified request leaves its nonce in ``signature_nonce`` until the signature window has
passed (``expires_at`` = the signature's ``created`` + the window + a margin). The periodic
sweep folds what it is about to purge into ``partner_key.last_used_at``
(:func:`fold_last_use`), and a reader takes the later of that and the nonces still kept
(:func:`keys_last_used`). The time is the signature's ``created``, as the partner stated it."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from exchange.http.signatures import MAX_AGE_SECONDS, NONCE_MARGIN_SECONDS
from partners.models import PartnerKey, SignatureNonce

_KEPT = dt.timedelta(seconds=MAX_AGE_SECONDS + NONCE_MARGIN_SECONDS)


def _latest_nonces(until: dt.datetime | None = None) -> object:
    query = select(SignatureNonce.key_id, func.max(SignatureNonce.expires_at).label("latest"))
    if until is not None:
        query = query.where(SignatureNonce.expires_at <= until)
    return query.group_by(SignatureNonce.key_id)


async def fold_last_use(conn: AsyncConnection, now: dt.datetime) -> None:
    """Record, for each key, the newest use among the nonces that expire by ``now``."""
    for key_id, latest in (await conn.execute(_latest_nonces(now))).all():  # type: ignore[call-overload]
        used = latest - _KEPT
        await conn.execute(
            update(PartnerKey)
            .where(
                PartnerKey.id == key_id,
                PartnerKey.last_used_at.is_(None) | (PartnerKey.last_used_at < used),
            )
            .values(last_used_at=used)
        )


async def keys_last_used(session: AsyncSession) -> dict[str, dt.datetime]:
    """Each key that has been used, and when it last was."""
    found: dict[str, dt.datetime] = {
        key_id: used
        for key_id, used in await session.execute(
            select(PartnerKey.id, PartnerKey.last_used_at).where(
                PartnerKey.last_used_at.is_not(None)
            )
        )
        if used is not None
    }
    for key_id, latest in (await session.execute(_latest_nonces())).all():  # type: ignore[call-overload]
        used = latest - _KEPT
        if key_id not in found or found[key_id] < used:
            found[key_id] = used
    return found
