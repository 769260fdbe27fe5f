"""A known world for the console's browser tests, built the way partners and the operator
build one: partners, keys, values and rates through the services (as the CLI does), members'
points through the signed API of a live server (the SDK), a day settled as the CLI settles it.

Sky Air (SKY, 12 000 micros a point) and Hotel Co (HTL, 8 000), a rate SKY to HTL of
1 000 : 750 with a 1 % fee, the charity Clean Water (AID). Sky Air issues 10 000 to alice and
2 500 to bob, bob redeems 500, alice converts 5 000 to Hotel Co's alice-h (fee 50, out 3 712)
and gives 1 000 to Clean Water (12 000 000 micros). Outstanding: SKY 6 000 (72 000 000 micros),
HTL 3 712 (29 696 000 micros). Two console users: an operator and a viewer."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.base import utcnow
from exchange.console.users import create_user
from exchange.contract.schemas import MemberBalanceOut
from exchange.db import create_engine, session_maker
from exchange.ledger.models import Account
from exchange.ledger.parties import PartnerInfo
from exchange.pricing.service import set_point_value, set_rate
from exchange.settings import Settings
from exchange.signing import load_exchange_keys
from partners.client import AsyncExchangeClient
from partners.service import create_partner
from settlement.calendar import BusinessCalendar
from settlement.runs import settle_day
from tests.conftest import make_partner
from tests.integration.conftest import Credentials, register_key
from tests.integration.live_server import LiveServer

CHROMIUM = os.environ.get("EXCHANGE_TEST_CHROMIUM", "/usr/bin/chromium")
PASSWORD = "a long console password"


@dataclass(frozen=True)
class ConsoleUser:
    name: str
    secret: str

    def code(self, steps_ahead: int = 0) -> str:
        """The TOTP code of this 30-second step (or one ahead: a code is good once)."""
        totp = pyotp.TOTP(self.secret)
        return totp.at(utcnow() + dt.timedelta(seconds=totp.interval * steps_ahead))


@dataclass(frozen=True)
class World:
    sky: PartnerInfo
    htl: PartnerInfo
    charity: PartnerInfo
    operator: ConsoleUser
    viewer: ConsoleUser
    conversion_out: int
    donation_micros: int
    members: dict[str, list[str]]
    """Each brand's members, by currency."""
    keys: dict[str, Credentials]
    """Each brand's key, by currency."""
    business_date: dt.date


async def build_world(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    server: LiveServer,
    sky: PartnerInfo,
    htl: PartnerInfo,
) -> World:
    master_key = server.master_key
    operator = await make_partner(sessions, settings, "operator", "Coalition")
    async with sessions() as session, session.begin():
        charity = await create_partner(
            session, kind="charity", name="Clean Water", currency=None,
            settlement_currency=settings.settlement_currency,
            shards=settings.issuance_shards, code="AID",
        )  # fmt: skip
        await set_point_value(session, "SKY", 12_000)
        await set_point_value(session, "HTL", 8_000)
        await set_rate(session, "SKY", "HTL", from_points=1_000, to_points=750, fee_bps=100)
        olivia = await create_user(
            session, name="olivia", role="operator", password=PASSWORD, master_key=master_key
        )
        victor = await create_user(
            session, name="victor", role="viewer", password=PASSWORD, master_key=master_key
        )
    await register_key(sessions, master_key, operator)
    sky_key = await register_key(sessions, master_key, sky)
    htl_key = await register_key(sessions, master_key, htl)
    async with _client(server, htl_key) as hotel:
        await hotel.enrol("alice-h")
    async with _client(server, sky_key) as airline:
        for member in ("alice", "bob"):
            await airline.enrol(member)
        await airline.issue("alice", 10_000)
        await airline.issue("bob", 2_500)
        await airline.redeem("bob", 500)
        converted = await airline.convert(
            "alice", to_partner="HTL", to_member_ref="alice-h", points=5_000
        )
        given = await airline.donate("alice", "AID", 1_000)
    today = BusinessCalendar.from_settings(settings).business_date_of(utcnow())
    return World(
        sky, htl, charity,
        ConsoleUser("olivia", olivia.totp_secret), ConsoleUser("victor", victor.totp_secret),
        converted.conversion.out, given.donation_receipt.amount_micros,
        {"SKY": ["alice", "bob"], "HTL": ["alice-h"]}, {"SKY": sky_key, "HTL": htl_key}, today,
    )  # fmt: skip


def _client(server: LiveServer, credentials: Credentials) -> AsyncExchangeClient:
    return AsyncExchangeClient(
        server.base_url, key_id=credentials.key_id, alg=credentials.alg, key=credentials.key
    )


async def members_balance(server: LiveServer, credentials: Credentials, refs: list[str]) -> int:
    """What the API says a brand's members hold."""
    async with _client(server, credentials) as client:
        balances: list[MemberBalanceOut] = [await client.member(ref) for ref in refs]
    return sum(b.balance for b in balances)


async def issuance_balance(session: AsyncSession, brand: uuid.UUID) -> int:
    """What the ledger says: minus the sum of the brand's issuance accounts."""
    total = await session.scalar(
        select(func.sum(Account.balance)).where(
            Account.partner_id == brand, Account.kind == "issuance"
        )
    )
    return -int(total or 0)


async def settle_today(settings: Settings, day: dt.date) -> None:
    """As ``litestar settlement run --date TODAY --cutoff-now`` does."""
    engine = create_engine(settings)
    try:
        await settle_day(
            session_maker(engine), day, settings=settings, keys=load_exchange_keys(settings),
            cutoff_now=True,
        )  # fmt: skip
    finally:
        await engine.dispose()


def chromium_or_skip() -> str:
    """Debian's chromium (``make test`` installs it as root). Missing, the tests skip, except in
    CI (``CI`` set), where that is a failure."""
    if Path(CHROMIUM).exists() or shutil.which(CHROMIUM):
        return CHROMIUM
    reason = f"no Chromium at {CHROMIUM}: `apt-get install -y chromium` (make test does it as root)"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)
