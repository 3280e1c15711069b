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

    @property
    def json_logs(self) -> bool:
        return self.log_json if self.log_json is not None else self.environment == "production"


@lru_cache
def get_settings() -> Settings:
    return Settings()
