"""The one Settings object: environment variables (and a `.env` file), bounds-checked, frozen.

Built once by the CLI and passed down; nothing else reads the environment.
Names of the SPEC §4 contract (`DATABASE_URL`, `PASSKIT_*`, `LOYALTYD_HTTP_PORT`,
`LOYALTYD_API_KEYS`) are field names, so pydantic-settings maps them one to one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_PASSKIT_BASE_URL = "https://api.pub1.passkit.io"
_WEBHOOK_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,200}")


def _split_commas(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", frozen=True, extra="ignore"
    )

    # --- database ---------------------------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None,
        description="Postgres DSN. Unset: an embedded Postgres in LOYALTYD_DATA_DIR.",
    )
    loyaltyd_data_dir: Path = Field(
        default=Path(".loyaltyd"),
        description="Where the embedded Postgres keeps its data when DATABASE_URL is unset.",
    )
    loyaltyd_pool_size: int = Field(default=10, ge=2, le=200)

    # --- PassKit ----------------------------------------------------------------------------
    passkit_api_key: SecretStr | None = None
    passkit_api_secret: SecretStr | None = None
    passkit_base_url: str = DEFAULT_PASSKIT_BASE_URL
    passkit_auth_scheme: Literal["jwt", "bearer"] = Field(
        default="jwt",
        description="'jwt' sends `Authorization: <jwt>` (PassKit docs); 'bearer' sends "
        "`Authorization: Bearer <jwt>` (unverified, widely used).",
    )
    passkit_max_concurrency: int = Field(default=20, ge=1, le=1000)
    passkit_rate_limit: float = Field(
        default=50.0,
        ge=0,
        description="Requests per second for the whole PassKit account, shared by every daemon "
        "using it; 0 = no limit.",
    )
    passkit_rate_burst: int = Field(default=5, ge=1, le=10_000)
    passkit_mock_latency_ms: float = Field(
        default=5.0,
        ge=0,
        le=10_000,
        description="Mock mode only: how long the in-process PassKit takes to answer.",
    )
    passkit_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    passkit_jwt_lifetime_seconds: int = Field(default=60, ge=10, le=3600)
    passkit_message_field: str = Field(
        default="loyaltydMessage",
        min_length=1,
        max_length=100,
        description="metaData key of the pass field whose template changeMessage is '%@'.",
    )
    passkit_metadata_mode: Literal["merge", "read_modify_write"] = Field(
        default="read_modify_write",
        description="'read_modify_write' (safe) reads the pass and sends its whole metaData map "
        "back with the new message: an extra GET per message. 'merge' sends only the message "
        "key: one request, safe only if PassKit merges a partial map; `loyaltyd check` finds "
        "out on your account.",
    )
    passkit_already_done_pattern: str = Field(
        default="",
        max_length=500,
        description="Regular expression: a refused redemption or check-in whose PassKit answer "
        "matches counts as already done. Empty (safe): the pass is read back and counts as "
        "done only if it is REDEEMED.",
    )
    passkit_campaign_delivery: Literal["field", "messages"] = Field(
        default="field",
        description="'field' writes each recipient's message field (lock-screen alert via the "
        "template's changeMessage). 'messages' sends a campaign with no per-recipient "
        "placeholder through PassKit's Messages API in chunks (alert behaviour unverified).",
    )
    passkit_message_chunk: int = Field(
        default=100,
        ge=1,
        le=350,
        description="Pass ids per Messages API send (350 x 25 bytes stays under PassKit's "
        "10,000-byte limit).",
    )
    passkit_ticket_max_validations: int = Field(
        default=1,
        ge=0,
        le=1000,
        description="maxNumberOfValidations sent when checking a ticket in: PassKit redeems the "
        "ticket once it is reached (1 = a check-in uses the ticket up); 0 = not sent, the "
        "ticket's own setting applies. PassKit's behaviour at the limit is unverified.",
    )

    # --- worker -----------------------------------------------------------------------------
    loyaltyd_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    loyaltyd_poll_interval_seconds: float = Field(default=5.0, gt=0, le=3600)
    loyaltyd_listener_probe_seconds: float = Field(default=2.0, gt=0, le=60)
    loyaltyd_shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=600)
    loyaltyd_worker_slots: int = Field(
        default=0,
        ge=0,
        le=10_000,
        description="Rows a worker may hold claimed at once; 0 = 2 x PASSKIT_MAX_CONCURRENCY. "
        "With a rate limit, never more than 2 seconds' worth of it.",
    )
    loyaltyd_retry_base_seconds: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="First wait after a transient PassKit failure (5xx, 429, timeout); it "
        "doubles, jittered, with each failure of the same work.",
    )
    loyaltyd_retry_cap_seconds: float = Field(
        default=600.0,
        gt=0,
        le=86_400,
        description="Longest wait between two tries (a longer Retry-After is still honoured).",
    )
    loyaltyd_retry_max_age_seconds: float = Field(
        default=86_400.0,
        ge=60,
        le=30 * 86_400,
        description="Work failing transiently is tried until it has been owed this long, then "
        "recorded as failed (pass syncs: dead). Both queues.",
    )
    loyaltyd_heartbeat_seconds: float = Field(
        default=1.0,
        ge=0.1,
        le=60,
        description="How often each daemon writes its heartbeat to loyaltyd.instances.",
    )
    loyaltyd_stale_seconds: float = Field(
        default=5.0,
        ge=1,
        le=3600,
        description="A daemon whose heartbeat is this old is dead: its rows are taken over "
        "at once. At least 3 x LOYALTYD_HEARTBEAT_SECONDS.",
    )
    loyaltyd_delivery_retention_days: int = Field(
        default=90,
        ge=0,
        le=36_500,
        description="Finished campaign deliveries are removed this many days after their "
        "campaign finished (the campaign row and its counters stay). 0 keeps them for ever; "
        "otherwise at least 2, beyond the frequency cap's day.",
    )
    loyaltyd_sync_retention_days: int = Field(
        default=30,
        ge=0,
        le=36_500,
        description="A pass sync with nothing owed is removed after this many days without "
        "a change (the next transaction makes it anew). 0 keeps them for ever.",
    )
    loyaltyd_status_dead_hours: float = Field(
        default=1.0,
        ge=0,
        le=24 * 30,
        description="`loyaltyd status` and the console list a dead daemon for this long after "
        "its last heartbeat.",
    )
    loyaltyd_birthday_interval_minutes: int = Field(default=30, ge=1, le=60)

    # --- campaigns --------------------------------------------------------------------------
    loyaltyd_csv_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    loyaltyd_csv_max_bytes: int = Field(default=20_000_000, ge=1)
    loyaltyd_csv_timeout_seconds: float = Field(default=30.0, gt=0, le=600)

    # --- wallet truth -----------------------------------------------------------------------
    loyaltyd_wallet_sweeps: bool = Field(
        default=True,
        description="Sweep PassKit's lists daily (and at start-up when due). Off: only "
        "webhooks and the reads loyaltyd makes anyway keep wallet status current.",
    )
    loyaltyd_wallet_sweep_hour: int = Field(
        default=4,
        ge=0,
        le=23,
        description="Local hour (each program's time zone) of the daily sweep of PassKit's "
        "lists; a program not swept in the last day is also swept at start-up.",
    )
    loyaltyd_wallet_repair_cap: int = Field(
        default=1000,
        ge=0,
        le=1_000_000,
        description="Balances one sweep may set again where PassKit's differs from the ledger; "
        "the rest wait for the next sweep (a bad day cannot flood the account).",
    )
    loyaltyd_wallet_delete_checks: int = Field(
        default=1000,
        ge=0,
        le=1_000_000,
        description="Passes missing from a sweep's list that one sweep reads back (a 404 marks "
        "the pass DELETED); the rest wait for the next sweep.",
    )
    loyaltyd_passkit_webhook_token: SecretStr | None = Field(
        default=None,
        description="Secret path segment of PassKit's webhook URL (/passkit/webhook/TOKEN): at "
        "least 32 letters, digits, '-' or '_'. Unset: no webhook is accepted.",
    )
    loyaltyd_passkit_probe_seconds: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="While PassKit is down, one cheap request this often tells when it is back; "
        "then everything held back by the outage is due at once.",
    )

    # --- HTTP -------------------------------------------------------------------------------
    loyaltyd_http_port: int | None = Field(default=None, ge=1, le=65535)
    loyaltyd_http_host: str = "127.0.0.1"
    loyaltyd_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    loyaltyd_http_max_body_bytes: int = Field(
        default=65_536,
        ge=1024,
        le=100_000_000,
        description="Largest request body the HTTP API reads; bigger ones get 413.",
    )

    loyaltyd_http_max_connections: int = Field(
        default=500, ge=1, le=100_000, description="Open connections; more are closed at once."
    )
    loyaltyd_http_header_timeout_seconds: float = Field(
        default=10.0, gt=0, le=300, description="A connection must send its headers this fast."
    )
    loyaltyd_http_body_timeout_seconds: float = Field(
        default=10.0, gt=0, le=600, description="A request body must arrive this fast."
    )
    loyaltyd_http_connection_seconds: float = Field(
        default=60.0,
        gt=0,
        le=3600,
        description="A kept-alive connection is closed after this long (once idle).",
    )

    # --- console ----------------------------------------------------------------------------
    loyaltyd_console: bool = Field(
        default=False,
        description="Serve the admins' console under /console/ on the HTTP server (needs "
        "LOYALTYD_HTTP_PORT and LOYALTYD_CONSOLE_SECRET).",
    )
    loyaltyd_console_secret: SecretStr | None = Field(
        default=None,
        description="The key that signs console sessions: at least 32 characters.",
    )
    loyaltyd_console_url: str | None = Field(
        default=None,
        description="The console's address as people reach it (https://loyalty.example.com), "
        "for invitation links; unset: the HTTP server's bound address.",
    )
    loyaltyd_console_session_hours: float = Field(
        default=12.0, gt=0, le=24 * 30, description="A console sign-in lasts this long."
    )
    loyaltyd_console_trust_proxy: bool = Field(
        default=False,
        description="Believe X-Forwarded-Proto and X-Forwarded-For from the proxy in front "
        "(https: cookies are Secure; sign-in limits count the real address).",
    )
    loyaltyd_console_confirm_above: int = Field(
        default=1000,
        ge=0,
        description="Sending to more phones than this asks the admin to type the number.",
    )
    loyaltyd_console_csv_max_bytes: int = Field(
        default=5_000_000, ge=1024, le=100_000_000, description="Largest CSV an admin uploads."
    )
    supabase_jwt_secret: SecretStr | None = Field(
        default=None,
        description="The Supabase project's JWT secret: console sign-in with a Supabase access "
        "token (HS256); reads and writes then run as `authenticated` under its claims.",
    )
    supabase_jwks_url: str | None = Field(
        default=None,
        description="The Supabase project's JWKS (https://PROJECT.supabase.co/auth/v1/.well-known/"
        "jwks.json), for access tokens signed with asymmetric keys.",
    )

    # --- logging ----------------------------------------------------------------------------
    loyaltyd_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    loyaltyd_log_format: Literal["auto", "json", "console"] = "auto"

    @field_validator("loyaltyd_csv_allowed_hosts", "loyaltyd_api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split_commas(value)

    @field_validator(
        "database_url",
        "passkit_api_key",
        "passkit_api_secret",
        "loyaltyd_passkit_webhook_token",
        "loyaltyd_console_secret",
        "supabase_jwt_secret",
        "supabase_jwks_url",
        "loyaltyd_console_url",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @model_validator(mode="after")
    def _stale_after_several_beats(self) -> Settings:
        if self.loyaltyd_stale_seconds < 3 * self.loyaltyd_heartbeat_seconds:
            raise ValueError(
                f"LOYALTYD_STALE_SECONDS ({self.loyaltyd_stale_seconds:g}) must be at least 3 x "
                f"LOYALTYD_HEARTBEAT_SECONDS ({self.loyaltyd_heartbeat_seconds:g}): a daemon "
                "stops sending 2 heartbeats before it may be declared dead"
            )
        return self

    @field_validator("loyaltyd_passkit_webhook_token")
    @classmethod
    def _long_random_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not _WEBHOOK_TOKEN.fullmatch(value.get_secret_value()):
            raise ValueError(
                "must be at least 32 letters, digits, '-' or '_' (for example the output of "
                "`python3 -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
            )
        return value

    @field_validator("loyaltyd_delivery_retention_days")
    @classmethod
    def _retention_beyond_the_cap(cls, value: int) -> int:
        if value == 1:
            raise ValueError(
                "must be 0 (keep for ever) or at least 2: the frequency cap reads the last 24 h"
            )
        return value

    @field_validator("loyaltyd_console_secret")
    @classmethod
    def _long_console_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters (e.g. `openssl rand -hex 32`)")
        return value

    @model_validator(mode="after")
    def _console_needs_a_secret(self) -> Settings:
        if self.loyaltyd_console and self.loyaltyd_console_secret is None:
            raise ValueError(
                "LOYALTYD_CONSOLE=1 needs LOYALTYD_CONSOLE_SECRET (at least 32 characters) to "
                "sign sessions"
            )
        if self.loyaltyd_console and self.loyaltyd_http_port is None:
            raise ValueError(
                "LOYALTYD_CONSOLE=1 needs LOYALTYD_HTTP_PORT: the console is served there"
            )
        return self

    @field_validator("passkit_already_done_pattern")
    @classmethod
    def _valid_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a regular expression: {exc}") from None
        return value

    @field_validator("passkit_base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("PASSKIT_BASE_URL must start with https:// (or http:// for a fake)")
        return value.rstrip("/")

    @property
    def worker_slots(self) -> int:
        """Rows a worker holds claimed. Under a rate limit, at most two seconds' worth: a
        claimed row waiting for its turn is what a cancel cannot take back any more, and what
        a crash can repeat."""
        slots = self.loyaltyd_worker_slots or 2 * self.passkit_max_concurrency
        if self.passkit_rate_limit > 0:
            per_second = self.passkit_rate_limit / self.requests_per_message
            slots = min(slots, max(1, int(2 * per_second)))
        return slots

    @property
    def reads_pass_before_message(self) -> bool:
        """A message write reads the pass first (read_modify_write mode; mock mode too)."""
        return self.passkit_metadata_mode == "read_modify_write"

    @property
    def requests_per_message(self) -> int:
        """PassKit requests one message write costs."""
        return 2 if self.reads_pass_before_message else 1

    @property
    def passkit_mock_mode(self) -> bool:
        """No key or secret: nothing leaves the machine (SPEC §3.4)."""
        return self.passkit_api_key is None or self.passkit_api_secret is None

    def secrets(self) -> list[str]:
        """Every configured secret value, for log redaction."""
        values = [
            self.passkit_api_secret,
            self.passkit_api_key,
            self.loyaltyd_passkit_webhook_token,
            self.loyaltyd_console_secret,
            self.supabase_jwt_secret,
            *self.loyaltyd_api_keys,
        ]
        found = [v.get_secret_value() for v in values if v is not None]
        if self.database_url is not None:
            found.extend(_dsn_password(self.database_url.get_secret_value()))
        return [s for s in found if len(s) >= 4]


def _dsn_password(dsn: str) -> list[str]:
    from urllib.parse import urlsplit

    try:
        password = urlsplit(dsn).password
    except ValueError:
        return []
    return [password] if password else []
