"""``litestar console ...``: the operator console's users.

``add-user`` asks for the password twice (or reads it from ``--password-file``) and prints the
TOTP secret and its ``otpauth://`` URI once: scan it into an authenticator app now."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.commands import TABLE_OPTION, emit, emit_rows, run_with_session
from exchange.console.models import ROLES
from exchange.settings import Settings


@click.group(name="console", help="Users of the operator console at /console.")
def console_group() -> None:
    pass


@console_group.command(name="add-user", help="Make a console user; prints the TOTP secret once.")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Read the password from this file (its first line) instead of asking for it.",
)
def add_user_command(name: str, role: str, password_file: Path | None) -> None:
    from exchange.console.users import create_user
    from exchange.signing import load_master_key

    if password_file is not None:
        lines = password_file.read_text().splitlines()
        password = lines[0] if lines else ""
    else:
        password = click.prompt(
            "Password", hide_input=True, confirmation_prompt=True, err=True, type=str
        )

    async def work(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        user = await create_user(
            session,
            name=name,
            role=role,
            password=password,
            master_key=load_master_key(settings),
        )
        return {
            "id": str(user.id),
            "name": user.name,
            "role": user.role,
            "totp_secret": user.totp_secret,
            "otpauth_uri": user.otpauth_uri,
            "note": "the TOTP secret is shown this once: add it to an authenticator app now",
        }

    emit(run_with_session(work))


@console_group.command(name="disable-user", help="Disable a console user and end their sessions.")
@click.argument("name")
def disable_user_command(name: str) -> None:
    from exchange.console.users import disable_user

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, Any]:
        user = await disable_user(session, name)
        return {"name": user.name, "role": user.role, "disabled_at": user.disabled_at}

    emit(run_with_session(work))


@console_group.command(name="list-users", help="Every console user (no secrets).")
@TABLE_OPTION
def list_users_command(table: bool) -> None:
    from exchange.console.users import list_users

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, Any]]:
        return [
            {
                "name": user.name,
                "role": user.role,
                "created_at": user.created_at,
                "disabled_at": user.disabled_at,
            }
            for user in await list_users(session)
        ]

    emit_rows(run_with_session(work), table=table, title="console users")
