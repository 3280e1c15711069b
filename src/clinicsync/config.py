"""Settings read from the environment (prefix CLINICSYNC_)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
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

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else self.environment == "production"


@lru_cache
def get_settings() -> Settings:
    return Settings()
