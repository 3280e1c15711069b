"""Settings read from the environment (prefix CLINICSYNC_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLINICSYNC_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./var/clinicsync.sqlite3",
        description="sqlite:///PATH or postgresql://...; the async driver is chosen by the app.",
    )
    secret_key: str | None = Field(
        default=None,
        description="Key for encrypting secrets at rest; a 0600 key file under var_dir is used if unset.",
    )
    var_dir: Path = Path("./var")
    host: str = "127.0.0.1"
    port: int = 8000
    environment: Literal["development", "production", "test"] = "development"
    log_level: str = "INFO"
    log_json: bool | None = Field(default=None, description="JSON logs; defaults to on in production.")
    migrate_on_start: bool = True
    default_phone_region: str = Field(
        default="US", description="ISO country used to read phone numbers given without a + prefix"
    )
    idempotency_ttl_hours: int = 24
    events_heartbeat_seconds: float = Field(default=15.0, gt=0, description="SSE keep-alive interval")
    events_retention_hours: float = Field(
        default=168.0, gt=0, description="how long change events stay replayable for Last-Event-ID"
    )
    events_poll_seconds: float = Field(
        default=5.0, gt=0, description="fallback re-read of change events when no wake-up arrives"
    )
    login_token_hours: int = Field(default=12, ge=1, le=24 * 31, description="Lifetime of a login's token")
    token_days: int = Field(default=30, ge=1, description="Default lifetime of a token a person issues")
    max_token_days: int = Field(default=90, ge=1, description="Longest lifetime of a person's token")
    service_token_days: int = Field(default=365, ge=1, description="Default lifetime of a service token")
    max_service_token_days: int = Field(default=730, ge=1, description="Longest lifetime of a service token")
    login_failures_per_account: int = Field(default=10, ge=1, description="Failed logins before 429")
    login_failures_per_address: int = Field(default=50, ge=1, description="Failed logins from one address")
    login_failure_window_seconds: int = Field(default=900, ge=1, description="How long a failure counts")
    outbound_allowlist: list[str] = Field(
        default_factory=list,
        description="Non-public addresses (CIDR) or host names integrations may call, e.g. a local PMS",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="Largest request body accepted; larger ones answer 413"
    )
    # Sync delivery (see docs/architecture.md, "Sync").
    sync_jobs: Literal["auto", "in_process", "procrastinate", "off"] = Field(
        default="auto",
        description="auto: in the server's process on SQLite, Procrastinate workers on PostgreSQL",
    )
    sync_embedded_worker: bool = Field(
        default=False, description="on PostgreSQL, also run a Procrastinate worker inside the server"
    )
    sync_worker_concurrency: int = Field(default=8, ge=1, le=200)
    sync_lease_seconds: float = Field(default=120.0, gt=0)
    sync_retry_base_seconds: float = Field(default=2.0, gt=0)
    sync_retry_max_seconds: float = Field(default=600.0, gt=0)
    sync_sweep_interval_seconds: float = Field(default=5.0, gt=0)
    sync_read_back_delay_seconds: float = Field(default=1.0, ge=0)
    # Sync runs (docs/architecture.md, "Sync runs"). The scheduler's two switches keep the
    # reference's names, with or without the prefix.
    enable_sync_scheduler: bool = Field(
        default=False,
        validation_alias=AliasChoices(
            "enable_sync_scheduler", "CLINICSYNC_ENABLE_SYNC_SCHEDULER", "ENABLE_SYNC_SCHEDULER"
        ),
    )
    sync_interval_minutes: float = Field(
        default=60.0,
        gt=0,
        validation_alias=AliasChoices(
            "sync_interval_minutes", "CLINICSYNC_SYNC_INTERVAL_MINUTES", "SYNC_INTERVAL_MINUTES"
        ),
    )
    sync_run_stale_seconds: float = Field(
        default=300.0, gt=0, description="a run without a heartbeat for this long is failed as stale"
    )
    sync_backward_days: int = Field(default=14, ge=0, le=366)
    sync_forward_days: int = Field(default=14, ge=0, le=366)
    sync_reconcile_days: int = Field(default=7, ge=0, le=366)
    sync_enrichment_concurrency: int = Field(default=5, ge=1, le=50)
    sync_max_delete_share: float = Field(default=0.2, ge=0, le=1)

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else self.environment == "production"


@lru_cache
def get_settings() -> Settings:
    return Settings()
