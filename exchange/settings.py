"""One place for configuration: every knob is an ``EXCHANGE_*`` environment variable.

``get_settings()`` reads the environment once and caches the result; tests call
``get_settings.cache_clear()`` after changing the environment.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

# ISO 4217 minor-unit exponents for the settlement currencies we expect; any other code
# must be given with EXCHANGE_SETTLEMENT_MINOR_EXPONENT.
_MINOR_EXPONENTS = {"EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "JPY": 0, "KWD": 3, "BHD": 3}


class SettingsError(ValueError):
    """A setting that cannot be right, said in one line that names its variable."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"EXCHANGE_{name}: {why}")


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(f"EXCHANGE_{name}")
    return value if value not in (None, "") else default


def _env_bool(name: str, default: bool) -> bool:
    value = _env(name)
    if value is None:
        return default
    return value.strip().lower() not in {"0", "false", "no", "off"}


def _env_int(name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
    value = _env(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise SettingsError(name, f"{value!r} is not a whole number") from None
    if number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
        raise SettingsError(name, f"{number} is out of range (must be {bounds})")
    return number


def _timezone(name: str) -> str:
    zone = _env(name, "UTC") or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise SettingsError(name, f"{zone!r} is not an IANA time zone (e.g. UTC)") from None
    return zone


def _cutoff(name: str) -> str:
    cutoff = _env(name, "00:00") or "00:00"
    if re.fullmatch(r"\d\d:\d\d(:\d\d)?", cutoff) is None:
        raise SettingsError(name, f"{cutoff!r} is not a time HH:MM or HH:MM:SS")
    try:
        dt.time.fromisoformat(cutoff)
    except ValueError:
        raise SettingsError(name, f"{cutoff!r} is not a time of day") from None
    return cutoff


def _currency(name: str) -> str:
    currency = (_env(name, "EUR") or "EUR").upper()
    if re.fullmatch(r"[A-Z]{3}", currency) is None:
        raise SettingsError(name, f"{currency!r} is not an ISO 4217 code (three letters)")
    return currency


def _signing_key(name: str) -> tuple[Path | None, bytes | None]:
    """A path to a PEM file, or the PEM itself (it starts with ``-----BEGIN``)."""
    value = _env(name)
    if value is None:
        return None, None
    if value.lstrip().startswith("-----BEGIN"):
        return None, value.strip().encode() + b"\n"
    path = Path(value)
    if not path.is_file():
        raise SettingsError(name, f"{value!r} is neither a PEM nor the path of a readable file")
    return path, None


@dataclass(frozen=True)
class Settings:
    """The service's configuration, read from ``EXCHANGE_*`` variables."""

    data_dir: Path = Path("var")
    """EXCHANGE_DATA_DIR: where the SQLite database and development keys live (``./var``)."""

    database_url: str | None = None
    """EXCHANGE_DATABASE_URL: a SQLAlchemy URL. ``postgresql://`` is served through asyncpg.
    Unset means SQLite in the data directory."""

    auto_migrate: bool = True
    """EXCHANGE_AUTO_MIGRATE: apply Alembic migrations at start (``0``: leave the schema alone)."""

    signing_key: Path | None = None
    """EXCHANGE_SIGNING_KEY: the exchange's Ed25519 signing key, as the path of a PEM file or the
    PEM itself (``-----BEGIN PRIVATE KEY-----...``; then held in ``signing_key_pem``). Unset: a
    development key is created in ``<data_dir>/keys/`` on first run."""

    signing_key_pem: bytes | None = None
    """The PEM of EXCHANGE_SIGNING_KEY when the variable holds the PEM rather than a path."""

    verify_keys: tuple[Path, ...] = ()
    """EXCHANGE_VERIFY_KEYS: further PEM files (``:``-separated) of retired signing keys whose
    public halves stay published at ``/v1/keys`` so that old signatures still verify."""

    master_key: str | None = None
    """EXCHANGE_MASTER_KEY: base64 of 32 random bytes; the AES-GCM key for secrets at rest.
    Unset: a development master key is created in ``<data_dir>/keys/`` on first run."""

    settlement_currency: str = "EUR"
    """EXCHANGE_SETTLEMENT_CURRENCY: the ISO 4217 code money is settled in."""

    settlement_minor_exponent: int = 2
    """EXCHANGE_SETTLEMENT_MINOR_EXPONENT: decimals of the currency's minor unit (derived for
    common codes)."""

    issuance_shards: int = 8
    """EXCHANGE_ISSUANCE_SHARDS: how many accounts a brand's issuance (and each participant's
    settlement) account is split into, so that one brand's traffic is not serialised on one row.
    Applies to partners created afterwards."""

    hold_ttl_seconds: int = 7 * 24 * 3600
    """EXCHANGE_HOLD_TTL_SECONDS: default lifetime of a hold when the caller gives none."""

    log_json: bool = False
    """EXCHANGE_LOG_JSON: structured logs as JSON lines (default: human-readable console)."""

    scheduler: bool = True
    """EXCHANGE_SCHEDULER: settle each business day after its cutoff and deliver webhooks by
    itself (``0``: leave both to the CLI, as the test suite does)."""

    settlement_timezone: str = "UTC"
    """EXCHANGE_SETTLEMENT_TIMEZONE: the IANA zone business days are counted in."""

    settlement_cutoff: str = "00:00"
    """EXCHANGE_SETTLEMENT_CUTOFF: the local time (``HH:MM`` or ``HH:MM:SS``) a business day ends;
    ``00:00`` is the midnight that closes the day (see ``settlement.calendar``)."""

    settlement_grace_seconds: int = 5
    """EXCHANGE_SETTLEMENT_GRACE_SECONDS: how long after a cutoff the scheduler waits before
    settling, so that transactions in flight at the cutoff are in the day they were made."""

    log_origin: str = "exchange.example/transactions"
    """EXCHANGE_LOG_ORIGIN: the first line of every checkpoint of the transaction log (its name)."""
    log_checkpoint_seconds: int = 60
    """EXCHANGE_LOG_CHECKPOINT_SECONDS: how often the log is extended and a checkpoint signed."""
    log_late_seconds: int = 600
    """EXCHANGE_LOG_LATE_SECONDS: how far behind the newest logged transaction (by its time-ordered
    id) the sequencer looks for transactions that committed late."""
    settlement_poll_seconds: int = 60
    """EXCHANGE_SETTLEMENT_POLL_SECONDS: the longest the scheduler sleeps between looks for a day
    to settle (it also wakes at each cutoff)."""

    settlement_work_mem: str = "256MB"
    """EXCHANGE_SETTLEMENT_WORK_MEM: PostgreSQL ``work_mem`` for a settlement run's sorts and
    hashes (its own transaction only); beyond it they spill to disk, whatever the day's size."""

    webhook_poll_seconds: int = 5
    """EXCHANGE_WEBHOOK_POLL_SECONDS: how often due webhooks are sent."""

    webhook_timeout_seconds: int = 10
    """EXCHANGE_WEBHOOK_TIMEOUT_SECONDS: how long one delivery may take."""

    webhook_retry_base_seconds: int = 10
    """EXCHANGE_WEBHOOK_RETRY_BASE_SECONDS: the wait after a first failed delivery; it doubles with
    each further failure."""

    webhook_retry_max_seconds: int = 3600
    """EXCHANGE_WEBHOOK_RETRY_MAX_SECONDS: the longest wait between two delivery attempts."""

    webhook_batch_size: int = 100
    """EXCHANGE_WEBHOOK_BATCH_SIZE: events one worker claims at a time."""

    webhook_allow_http: bool = False
    """EXCHANGE_WEBHOOK_ALLOW_HTTP: accept plain ``http://`` webhook URLs (development only)."""

    webhook_allow_private_addresses: bool = False
    """EXCHANGE_WEBHOOK_ALLOW_PRIVATE_ADDRESSES: let webhooks reach loopback, private and other
    non-public addresses (development only: a receiver on 127.0.0.1)."""

    webhook_ports: tuple[int, ...] = (443, 8443)
    """EXCHANGE_WEBHOOK_PORTS: comma-separated ports a webhook URL may use (``443,8443``)."""

    webhook_max_attempts: int = 15
    """EXCHANGE_WEBHOOK_MAX_ATTEMPTS: attempts at one event before it is dead-lettered (the
    partner sees it in its deliveries, with the last error, and may replay it)."""

    quote_ttl_seconds: int = 120
    """EXCHANGE_QUOTE_TTL_SECONDS: how long a conversion quote holds its rate and point values
    (1 to 900 seconds)."""

    expiry_notice_days: int = 30
    """EXCHANGE_EXPIRY_NOTICE_DAYS: how many days before its points expire a brand is sent
    ``points.expiring`` for a member (0: never; at most 366)."""

    group_commit_flushers: int = 2
    """EXCHANGE_GROUP_COMMIT_FLUSHERS: groups of single operations a service process writes at
    once (README, group commit); one is prepared while another waits on the database."""

    console_secure_cookies: bool = True
    """EXCHANGE_CONSOLE_SECURE_COOKIES: mark the operator console's cookies ``Secure`` (sent over
    HTTPS only). ``0`` for a console on plain ``http://127.0.0.1`` in development and tests."""

    console_session_minutes: int = 480
    """EXCHANGE_CONSOLE_SESSION_MINUTES: how long a console login lasts (5 to 1440 minutes)."""

    console_max_failures: int = 5
    """EXCHANGE_CONSOLE_MAX_FAILURES: failed console logins, per user name and per client
    address, after which further attempts are refused for the lockout (1 to 100)."""

    console_lockout_minutes: int = 15
    """EXCHANGE_CONSOLE_LOCKOUT_MINUTES: how long a locked-out name or address waits, and the
    window in which failures are counted (1 to 1440 minutes)."""

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL to connect to."""
        url = self.database_url
        if url is None:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'exchange.sqlite3').resolve()}"
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        return url

    @property
    def is_postgres(self) -> bool:
        return self.sqlalchemy_url.startswith("postgresql")

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read the environment once."""
    currency = _currency("SETTLEMENT_CURRENCY")
    verify = _env("VERIFY_KEYS")
    signing, signing_pem = _signing_key("SIGNING_KEY")
    return Settings(
        data_dir=Path(_env("DATA_DIR", "var") or "var"),
        database_url=_env("DATABASE_URL"),
        auto_migrate=_env_bool("AUTO_MIGRATE", True),
        signing_key=signing,
        signing_key_pem=signing_pem,
        verify_keys=tuple(Path(p) for p in verify.split(os.pathsep) if p) if verify else (),
        master_key=_env("MASTER_KEY"),
        settlement_currency=currency,
        settlement_minor_exponent=_env_int(
            "SETTLEMENT_MINOR_EXPONENT", _MINOR_EXPONENTS.get(currency, 2), high=6
        ),
        issuance_shards=max(1, _env_int("ISSUANCE_SHARDS", 8)),
        hold_ttl_seconds=_env_int("HOLD_TTL_SECONDS", 7 * 24 * 3600, low=1),
        log_json=_env_bool("LOG_JSON", False),
        scheduler=_env_bool("SCHEDULER", True),
        settlement_timezone=_timezone("SETTLEMENT_TIMEZONE"),
        settlement_cutoff=_cutoff("SETTLEMENT_CUTOFF"),
        settlement_grace_seconds=_env_int("SETTLEMENT_GRACE_SECONDS", 5),
        settlement_poll_seconds=_env_int("SETTLEMENT_POLL_SECONDS", 60),
        log_origin=_env("LOG_ORIGIN", "exchange.example/transactions") or "",
        log_checkpoint_seconds=_env_int("LOG_CHECKPOINT_SECONDS", 60),
        log_late_seconds=_env_int("LOG_LATE_SECONDS", 600),
        settlement_work_mem=_env("SETTLEMENT_WORK_MEM", "256MB") or "256MB",
        webhook_poll_seconds=_env_int("WEBHOOK_POLL_SECONDS", 5),
        webhook_timeout_seconds=_env_int("WEBHOOK_TIMEOUT_SECONDS", 10),
        webhook_retry_base_seconds=_env_int("WEBHOOK_RETRY_BASE_SECONDS", 10),
        webhook_retry_max_seconds=_env_int("WEBHOOK_RETRY_MAX_SECONDS", 3600),
        webhook_batch_size=_env_int("WEBHOOK_BATCH_SIZE", 100, low=1),
        webhook_allow_http=_env_bool("WEBHOOK_ALLOW_HTTP", False),
        webhook_allow_private_addresses=_env_bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", False),
        webhook_ports=tuple(
            int(port) for port in (_env("WEBHOOK_PORTS", "443,8443") or "").split(",") if port
        ),
        webhook_max_attempts=max(1, _env_int("WEBHOOK_MAX_ATTEMPTS", 15)),
        quote_ttl_seconds=_env_int("QUOTE_TTL_SECONDS", 120, low=1, high=900),
        group_commit_flushers=max(1, _env_int("GROUP_COMMIT_FLUSHERS", 2)),
        console_secure_cookies=_env_bool("CONSOLE_SECURE_COOKIES", True),
        console_session_minutes=_env_int("CONSOLE_SESSION_MINUTES", 480, low=5, high=1440),
        console_max_failures=_env_int("CONSOLE_MAX_FAILURES", 5, low=1, high=100),
        console_lockout_minutes=_env_int("CONSOLE_LOCKOUT_MINUTES", 15, low=1, high=1440),
        expiry_notice_days=_env_int("EXPIRY_NOTICE_DAYS", 30, low=0, high=366),
    )
