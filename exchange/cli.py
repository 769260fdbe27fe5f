"""Operator commands on Litestar's CLI: ``litestar partners ...``, ``litestar ledger verify``.

Each prints JSON on stdout; refusals print a JSON problem on stderr and exit 1."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import click
from litestar.plugins import CLIPluginProtocol
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.commands import TABLE_OPTION, emit, emit_rows, run_with_session
from exchange.settings import Settings


@click.group(name="partners", help="Onboard partners and manage their keys.")
def partners_group() -> None:
    pass


@partners_group.command(name="create", help="Register a brand, a charity or the operator.")
@click.option("--kind", type=click.Choice(["brand", "charity", "operator"]), required=True)
@click.option("--name", required=True)
@click.option("--currency", default=None, help="A brand's points currency code, such as SKY.")
@click.option("--min-donation-points", type=int, default=None, help="A charity's minimum.")
@click.option("--code", default=None, help="A charity's stable code, such as AID.")
def create_partner_command(
    kind: str, name: str, currency: str | None, min_donation_points: int | None, code: str | None
) -> None:
    from partners.service import create_partner

    async def work(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        partner = await create_partner(
            session,
            kind=kind,
            name=name,
            currency=currency.upper() if currency else None,
            settlement_currency=settings.settlement_currency,
            shards=settings.issuance_shards,
            min_donation_points=min_donation_points,
            code=code.upper() if code else None,
        )
        out = {
            "id": str(partner.id),
            "kind": partner.kind,
            "name": partner.name,
            "currency": partner.currency,
            "min_donation_points": partner.min_donation_points,
        }
        if code:
            out["code"] = code.upper()
        return out

    emit(run_with_session(work))


@partners_group.command(name="list", help="Every partner, oldest first.")
@click.option("--kind", type=click.Choice(["brand", "charity", "operator"]), default=None)
@TABLE_OPTION
def list_partners_command(kind: str | None, table: bool) -> None:
    from partners.service import list_partners

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, Any]]:
        return [
            {
                "id": str(partner.id),
                "kind": partner.kind,
                "name": partner.name,
                "currency": partner.currency,
                "min_donation_points": partner.min_donation_points,
            }
            for partner in await list_partners(session)
            if kind is None or partner.kind == kind
        ]

    emit_rows(run_with_session(work), table=table, title="partners")


@partners_group.command(name="keys", help="A partner's keys, active and revoked (no secrets).")
@click.argument("partner_id", type=click.UUID)
@TABLE_OPTION
def list_keys_command(partner_id: uuid.UUID, table: bool) -> None:
    from partners.service import list_keys

    async def work(session: AsyncSession, _settings: Settings) -> list[dict[str, Any]]:
        return await list_keys(session, partner_id)

    emit_rows(run_with_session(work), table=table, title=f"keys of {partner_id}")


@partners_group.command(name="add-key", help="Register a key the partner signs requests with.")
@click.argument("partner_id", type=click.UUID)
@click.option("--alg", type=click.Choice(["ed25519", "hmac-sha256"]), required=True)
@click.option(
    "--public-key",
    "public_key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="PEM file of the partner's Ed25519 public key.",
)
def add_key_command(partner_id: uuid.UUID, alg: str, public_key: Path | None) -> None:
    from exchange.signing import load_master_key
    from partners.service import add_key

    async def work(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        key = await add_key(
            session,
            partner_id=partner_id,
            alg=alg,
            master_key=load_master_key(settings),
            public_key_pem=public_key.read_bytes() if public_key else None,
        )
        out: dict[str, Any] = {"key_id": key.key_id, "partner_id": str(key.partner_id), "alg": alg}
        if key.secret is not None:
            out["secret"] = key.secret
            out["note"] = "the secret is shown this once; store it now"
        return out

    emit(run_with_session(work))


@partners_group.command(name="revoke-key", help="Revoke a key: requests signed with it fail.")
@click.argument("key_id")
def revoke_key_command(key_id: str) -> None:
    from partners.service import revoke_key

    async def work(session: AsyncSession, _settings: Settings) -> dict[str, Any]:
        row = await revoke_key(session, key_id)
        return {"key_id": row.id, "partner_id": str(row.partner_id), "revoked_at": row.revoked_at}

    emit(run_with_session(work))


@partners_group.command(
    name="reencrypt-secrets",
    help="Re-encrypt every HMAC secret under a new master key, then set EXCHANGE_MASTER_KEY to it.",
)
@click.option(
    "--new-master-key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="A file holding the new key: base64 of 32 random bytes.",
)
def reencrypt_command(new_master_key_file: Path) -> None:
    import base64

    from exchange.signing import load_master_key
    from partners.service import reencrypt_secrets

    new_key = base64.b64decode(new_master_key_file.read_bytes().strip(), validate=True)
    if len(new_key) != 32:
        raise click.BadParameter("the new master key must be base64 of exactly 32 bytes")

    async def work(session: AsyncSession, settings: Settings) -> dict[str, Any]:
        count = await reencrypt_secrets(session, load_master_key(settings), new_key)
        return {"reencrypted": count}

    emit(run_with_session(work))


@click.group(name="ledger", help="Audit the ledger.")
def ledger_group() -> None:
    pass


@ledger_group.command(
    name="verify",
    help="Recompute every chain, balance and zero-sum, and the log; name the first fault.",
)
def verify_command() -> None:
    from exchange.ledger.verify import verify_ledger
    from exchange.transparency.verify import verify_log

    async def work(session: AsyncSession, settings: Settings) -> Any:
        ledger = await verify_ledger(session)
        log = await verify_log(session, settings.log_origin, settings.log_late_seconds)
        return {**ledger.as_dict(), "ok": ledger.ok and log.ok, "log": log.as_dict()}

    report = run_with_session(work)
    emit(report)
    if not report["ok"]:
        sys.exit(1)


class ExchangeCLIPlugin(CLIPluginProtocol):
    """Adds the operator's command groups to ``litestar``."""

    def on_cli_init(self, cli: click.Group) -> None:
        from exchange.console.cli import console_group
        from exchange.lots.cli import lots_group
        from exchange.pricing.cli import rates_group
        from settlement.cli import settlement_group

        cli.add_command(partners_group)
        cli.add_command(ledger_group)
        cli.add_command(rates_group)
        cli.add_command(settlement_group)
        cli.add_command(console_group)
        cli.add_command(lots_group)
