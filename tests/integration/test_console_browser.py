"""The operator console in a real browser: Debian's Chromium, headless, driven by Playwright
against a live server on the test's database (SQLite and PostgreSQL). Each test saves a
screenshot in its output directory (``EXCHANGE_TEST_SCREENSHOTS``, else pytest's tmp path)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import re
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from exchange.console.models import AuditEntry
from exchange.db import create_engine
from exchange.ledger.models import Posting
from exchange.ledger.parties import PartnerInfo
from exchange.pricing.models import RateVersion
from exchange.settings import Settings
from settlement.views import get_batch
from tests.conftest import base_settings
from tests.integration.console_world import (
    PASSWORD,
    ConsoleUser,
    World,
    build_world,
    chromium_or_skip,
    issuance_balance,
    members_balance,
    settle_today,
)
from tests.integration.live_server import LiveServer, live_server  # noqa: F401

MAX_FAILURES = 3
T = TypeVar("T")
OVERVIEW = re.compile(r"/console/?$")


@pytest.fixture
def settings(database_url: str | None, tmp_path: Path) -> Settings:
    """Plain http on 127.0.0.1: cookies without ``Secure``; a lockout after three failures."""
    return replace(
        base_settings(tmp_path, database_url),
        console_secure_cookies=False,
        console_max_failures=MAX_FAILURES,
    )


@pytest.fixture
async def world(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    live_server: LiveServer,  # noqa: F811
    sky: PartnerInfo,
    htl: PartnerInfo,
) -> World:
    return await build_world(sessions, settings, live_server, sky, htl)


@pytest.fixture
def browser() -> Iterator[Browser]:
    executable = chromium_or_skip()
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture
def page(
    browser: Browser,
    live_server: LiveServer,  # noqa: F811
    request: pytest.FixtureRequest,
    tmp_path: Path,
) -> Iterator[Page]:
    """A fresh browser context on the live server; its screenshot is saved when the test ends."""
    context = browser.new_context(
        base_url=live_server.base_url, viewport={"width": 1280, "height": 900}
    )
    opened = context.new_page()
    yield opened
    directory = Path(os.environ.get("EXCHANGE_TEST_SCREENSHOTS") or tmp_path)
    directory.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    opened.screenshot(path=str(directory / f"{name}.png"), full_page=True)
    context.close()


def log_in(
    page: Page, user: ConsoleUser, *, code: str | None = None, password: str = PASSWORD
) -> None:
    page.goto("/console/login")
    page.fill("input[name=name]", user.name)
    page.fill("input[name=password]", password)
    page.fill("input[name=code]", code if code is not None else user.code())
    page.click("button[type=submit]")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Await ``coroutine`` on a loop of its own thread: Playwright's sync API owns this one's."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, coroutine).result()


def read(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """``work`` in a session of its own (on the helper thread's loop, with its own engine)."""

    async def opened() -> T:
        engine = create_engine(settings)
        try:
            async with AsyncSession(engine) as session:
                return await work(session)
        finally:
            await engine.dispose()

    return run(opened())


def count(settings: Settings, model: type) -> int:
    async def counted(session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)

    return read(settings, counted)


def batch_status(settings: Settings, day: dt.date) -> str:
    async def status(session: AsyncSession) -> str:
        return (await get_batch(session, day)).status

    return read(settings, status)


def test_the_overview_shows_what_the_api_and_the_ledger_say(
    world: World,
    page: Page,
    live_server: LiveServer,  # noqa: F811
    settings: Settings,
) -> None:
    log_in(page, world.operator)
    page.wait_for_url(OVERVIEW)
    assert page.locator("h1").inner_text() == "The coalition at a glance"
    for brand, value in ((world.sky, 12_000), (world.htl, 8_000)):
        currency = brand.currency or ""
        row = page.locator(f"#outstanding tr[data-currency={currency}]")
        shown = int(row.locator("td[data-points]").get_attribute("data-points") or "")
        api = run(members_balance(live_server, world.keys[currency], world.members[currency]))
        ledger = read(settings, partial(issuance_balance, brand=brand.id))
        assert shown == api == ledger
        assert (
            int(row.locator("td[data-micros]").get_attribute("data-micros") or "") == shown * value
        )
    assert (
        page.locator("#outstanding tr[data-currency=SKY] td[data-points]").inner_text() == "6,000"
    )
    assert (
        page.locator("#outstanding tr[data-currency=SKY] td[data-micros]").inner_text() == "72.00"
    )
    assert (
        page.locator("#outstanding tr[data-currency=HTL] td[data-micros]").inner_text() == "29.696"
    )
    issued = page.locator("#today tr[data-currency=SKY] td[data-field=issued]")
    assert issued.get_attribute("data-value") == "12500"
    flow = page.locator("#flows td[data-from=SKY][data-to=HTL]")
    assert (flow.get_attribute("data-out"), flow.get_attribute("data-in")) == (
        "5000",
        str(world.conversion_out),
    )
    donation = page.locator("#donations td[data-micros]").first
    assert donation.get_attribute("data-micros") == str(world.donation_micros)
    assert page.locator("svg.chart").count() >= 3
    # On a phone the page fits its width (wide tables scroll inside their own box).
    page.set_viewport_size({"width": 390, "height": 844})
    page.reload()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390


def test_an_operator_sets_a_rate_version_after_confirming_it(
    world: World, page: Page, settings: Settings
) -> None:
    log_in(page, world.operator)
    page.wait_for_url(OVERVIEW)
    page.goto("/console/pricing")
    form = page.locator("#new-rate")
    for name, value in (
        ("from", "SKY"),
        ("to", "HTL"),
        ("from_points", "1000"),
        ("to_points", "800"),
        ("fee_bps", "50"),
    ):
        form.locator(f"input[name={name}]").fill(value)
    before = count(settings, RateVersion)
    form.locator("button[type=submit]").click()
    assert "1,000 : 800" in page.locator("#confirm").inner_text()
    assert count(settings, RateVersion) == before  # nothing written before the confirmation
    page.locator("#confirm button[type=submit]").click()
    page.wait_for_url("**/console/pricing?done=*")
    assert count(settings, RateVersion) == before + 1
    row = page.locator("#rates tr[data-pair=SKY-HTL]")
    assert "800" in row.inner_text() and "50" in row.inner_text()
    page.goto("/console/audit")
    assert "set-pricing" in page.locator("#audit tbody tr").first.inner_text()


def test_an_operator_marks_a_batch_paid(world: World, page: Page, settings: Settings) -> None:
    run(settle_today(settings, world.business_date))
    log_in(page, world.operator)
    page.wait_for_url(OVERVIEW)
    page.goto(f"/console/settlement?date={world.business_date}")
    assert page.locator("#batch-status").inner_text() == "complete"
    assert page.locator("#instructions li").count() >= 1
    with page.expect_download() as download:
        page.locator("#positions a", has_text="CSV").first.click()
    assert download.value.suggested_filename.endswith(".csv")
    postings = count(settings, Posting)
    page.locator("#mark-paid button").click()
    page.wait_for_url("**/console/settlement?date=*")
    assert page.locator("#batch-status").inner_text() == "paid"
    assert count(settings, Posting) > postings  # the payouts were booked
    assert batch_status(settings, world.business_date) == "paid"


def test_a_form_without_its_csrf_token_is_refused(
    world: World, page: Page, settings: Settings
) -> None:
    log_in(page, world.operator)
    page.wait_for_url(OVERVIEW)
    page.goto("/console/pricing")
    form = page.locator("#new-value")
    form.locator("input[name=currency]").fill("SKY")
    form.locator("input[name=micros]").fill("13000")
    page.evaluate("document.querySelectorAll('input[name=csrf_token]').forEach(e => e.remove())")
    before = count(settings, RateVersion), count(settings, AuditEntry)
    with page.expect_response("**/console/pricing/confirm") as answer:
        form.locator("button[type=submit]").click()
    assert answer.value.status == 403
    assert "CSRF" in page.locator("main").inner_text()
    # Posted straight at the action, with the session's cookie but no token: refused too.
    refused = page.request.post(
        "/console/pricing/apply",
        form={"kind": "value", "currency": "SKY", "micros": "13000"},
    )
    assert refused.status == 403
    assert (count(settings, RateVersion), count(settings, AuditEntry)) == before


def test_a_viewer_sees_but_is_refused_an_operator_action(
    world: World, page: Page, settings: Settings
) -> None:
    run(settle_today(settings, world.business_date))
    log_in(page, world.viewer)
    page.wait_for_url(OVERVIEW)
    page.goto(f"/console/settlement?date={world.business_date}")
    assert page.locator("#mark-paid").count() == 0  # no button for a viewer
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value") or ""
    answer = page.request.post(
        f"/console/settlement/{world.business_date}/paid", form={"csrf_token": csrf}
    )
    assert answer.status == 403
    assert "operator role" in answer.text()
    page.goto("/console/pricing")
    assert page.locator("#new-rate").count() == 0
    assert batch_status(settings, world.business_date) == "complete"


def test_too_many_failed_logins_lock_the_name_out(
    world: World,
    page: Page,
    live_server: LiveServer,  # noqa: F811
) -> None:
    for attempt in range(1, MAX_FAILURES + 1):
        log_in(page, world.operator, password="not the password at all")
        said = page.locator(".error").inner_text()
        assert ("Too many failed logins" if attempt == MAX_FAILURES else "not right") in said
    # Locked: even the right password and code are refused, and no session is opened.
    log_in(page, world.operator, code=world.operator.code(1))
    assert "Too many failed logins" in page.locator(".error").inner_text()
    assert page.url.endswith("/console/login")
    answer = httpx.get(f"{live_server.base_url}/console/", follow_redirects=False)
    assert answer.status_code == 303 or answer.status_code == 302


def test_a_page_without_a_session_sends_to_the_login(live_server: LiveServer) -> None:  # noqa: F811
    answer = httpx.get(f"{live_server.base_url}/console/partners", follow_redirects=False)
    assert answer.status_code in (302, 303)
    assert answer.headers["location"].startswith("/console/login")


def test_an_operator_runs_verify_and_the_page_follows_it(world: World, page: Page) -> None:
    log_in(page, world.operator)
    page.wait_for_url(OVERVIEW)
    page.goto("/console/partners")
    assert page.locator("#keys tbody tr").count() == 3  # the operator's, Sky Air's, Hotel Co's
    # Sky Air's key signed the world's requests; the operator's signed none.
    used = page.locator("#keys tr", has_text="Sky Air").locator("td").nth(4).inner_text()
    unused = page.locator("#keys tr", has_text="Coalition").locator("td").nth(4).inner_text()
    assert (used != "never", unused) == (True, "never")
    page.goto("/console/ledger")
    page.locator("#verify button").click()
    page.wait_for_url("**/console/ledger")
    # The page reloads itself every two seconds while the job runs.
    page.wait_for_selector("#verify-state:text-is('ok')", timeout=60_000)
    assert "verified" in page.locator("#verify-message").inner_text()
    assert page.locator("#verify-progress").get_attribute("value") == "2"
