"""Applying the Alembic migrations from inside the service and its commands."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory

from exchange.db import prepare_sqlite_file
from exchange.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def alembic_config(settings: Settings) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["url"] = settings.sqlalchemy_url
    return config


def head_revision(settings: Settings) -> str | None:
    return ScriptDirectory.from_config(alembic_config(settings)).get_current_head()


def upgrade(settings: Settings) -> None:
    """Migrate to head. On PostgreSQL, replicas starting together queue on an advisory lock
    (see ``migrations/env.py``) and the later ones find nothing left to do."""
    if settings.sqlalchemy_url.startswith("sqlite"):
        prepare_sqlite_file(settings)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    command.upgrade(alembic_config(settings), "head")


async def upgrade_async(settings: Settings) -> None:
    # Alembic's env.py runs its own event loop, so it gets a thread of its own.
    await asyncio.to_thread(upgrade, settings)
