"""API shapes for integrations, their functions, parameter maps and credentials."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from clinicsync.integrations.definitions import (
    MAX_TIMEOUT_SECONDS,
    PROVIDER_KEY_PATTERN,
    AuthSpec,
    EndpointSpec,
    PaginationSpec,
    RateLimitSpec,
    RetrySpec,
)
from clinicsync.integrations.sync_spec import SyncOperation, SyncOperationSpec
from clinicsync.integrations.transforms import TRANSFORMS

# A parameter map's place in its list; an Integer column, so bounded well inside it.
MAX_POSITION = 10_000


class _Input(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class IntegrationCreate(_Input):
    """A tenant's integration: of a catalogue provider (inherits its functions) or a new provider."""

    provider_key: str = Field(pattern=PROVIDER_KEY_PATTERN)
    display_name: str | None = None
    location_label: str = Field(default="", max_length=120)
    enabled: bool = True
    base_url: str | None = Field(default=None, pattern=r"^https?://")
    settings: dict[str, Any] = Field(default_factory=dict)
    category: Literal["pms", "calendar", "sms", "llm", "other"] | None = None
    description: str | None = None
    auth: AuthSpec | None = None
    rate_limit: RateLimitSpec | None = None
    pagination: PaginationSpec | None = None
    headers: dict[str, str] | None = None
    retry: RetrySpec | None = None
    timeout_seconds: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_SECONDS)
    test_function: str | None = None
    sync: dict[SyncOperation, SyncOperationSpec] | None = Field(
        default=None, description="which function serves each sync operation (see docs/providers.md)"
    )


class IntegrationUpdate(_Input):
    display_name: str | None = None
    location_label: str | None = Field(default=None, max_length=120)
    enabled: bool | None = None
    base_url: str | None = Field(default=None, pattern=r"^https?://")
    settings: dict[str, Any] | None = None
    description: str | None = None
    auth: AuthSpec | None = None
    rate_limit: RateLimitSpec | None = None
    pagination: PaginationSpec | None = None
    headers: dict[str, str] | None = None
    retry: RetrySpec | None = None
    timeout_seconds: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT_SECONDS)
    test_function: str | None = None
    sync: dict[SyncOperation, SyncOperationSpec] | None = Field(
        default=None, description="replaces this integration's own sync section"
    )


class IntegrationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    organization_id: uuid.UUID | None
    catalogue_id: uuid.UUID | None
    is_catalogue: bool
    provider_key: str
    display_name: str
    category: str
    description: str | None
    base_url: str | None
    auth_type: str | None
    auth_settings: dict[str, Any]
    rate_limit_requests: int | None
    rate_limit_period_seconds: float | None
    rate_limit_burst: int | None
    pagination_style: str | None
    pagination_settings: dict[str, Any]
    settings: dict[str, Any]
    options: dict[str, Any]
    location_label: str
    enabled: bool
    source: str
    revision: int
    created_at: datetime
    updated_at: datetime


class EndpointCreate(EndpointSpec):
    function_name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,99}$")


class EndpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    integration_id: uuid.UUID
    function_name: str
    method: str
    path_template: str
    description: str | None
    parameters: list[dict[str, Any]]
    pagination: dict[str, Any] | None
    response_selector: str | None
    response_single: bool
    response_field_map: dict[str, Any]
    retry_safe: bool | None
    options: dict[str, Any]
    mapping: dict[str, Any] | None = Field(
        default=None,
        description="the function as it runs: each parameter's provider name and transforms, and"
        " each returned field's source and transforms, provider-wide maps included",
    )


class ParameterMapCreate(_Input):
    endpoint_id: uuid.UUID | None = None
    direction: Literal["in", "out"] = "in"
    internal_name: str = Field(min_length=1, max_length=200)
    external_name: str = Field(min_length=1, max_length=200)
    transform: str | None = None
    transform_args: dict[str, Any] = Field(default_factory=dict)
    position: int = Field(default=0, ge=0, le=MAX_POSITION)

    @field_validator("transform")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in TRANSFORMS:
            raise ValueError(f"unknown transform {value!r}; known: {', '.join(sorted(TRANSFORMS))}")
        return value


class ParameterMapUpdate(_Input):
    internal_name: str | None = Field(default=None, min_length=1, max_length=200)
    external_name: str | None = Field(default=None, min_length=1, max_length=200)
    transform: str | None = None
    transform_args: dict[str, Any] | None = None
    position: int | None = Field(default=None, ge=0, le=MAX_POSITION)

    @field_validator("transform")
    @classmethod
    def _known(cls, value: str | None) -> str | None:
        if value is not None and value not in TRANSFORMS:
            raise ValueError(f"unknown transform {value!r}; known: {', '.join(sorted(TRANSFORMS))}")
        return value


class ParameterMapOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    integration_id: uuid.UUID
    endpoint_id: uuid.UUID | None
    direction: str
    internal_name: str
    external_name: str
    transform: str | None
    transform_args: dict[str, Any]
    position: int


class CredentialCreate(_Input):
    provider_key: str = Field(pattern=PROVIDER_KEY_PATTERN)
    label: str = Field(default="", max_length=120)
    integration_id: uuid.UUID | None = None
    secrets: dict[str, str] = Field(min_length=1)

    @field_validator("secrets")
    @classmethod
    def _not_blank(cls, value: dict[str, str]) -> dict[str, str]:
        blank = [name for name, secret in value.items() if not secret]
        if blank:
            raise ValueError(f"empty secret for {', '.join(blank)}")
        return value


class CredentialUpdate(_Input):
    label: str | None = Field(default=None, max_length=120)
    integration_id: uuid.UUID | None = None
    secrets: dict[str, str] | None = Field(default=None, min_length=1)


class CredentialOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    provider_key: str
    label: str
    integration_id: uuid.UUID | None
    secrets: dict[str, str] = Field(validation_alias="secret_hints", description="masked: last 4 characters")
    secret_version: int
    last_used_at: datetime | None
    last_test_at: datetime | None
    last_test_ok: bool | None
    last_test_latency_ms: int | None
    last_test_error: str | None
    grant_status: str | None = Field(
        default=None, description="OAuth: connected, or reconnect_required once the provider revoked it"
    )
    grant_error: str | None = None
    refreshed_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class CredentialTestResult(BaseModel):
    success: bool
    latency_ms: int
    error: str | None = None
    code: str | None = None
    function: str


class ExecuteRequest(_Input):
    function: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    location: str | None = None
    max_records: int | None = Field(default=None, ge=1, le=100_000)


class ExecuteResponse(BaseModel):
    """The shape of the streamed body: `records` comes before `count` and `pages`."""

    provider: str
    function: str
    integration_id: uuid.UUID
    records: list[dict[str, Any]]
    count: int = Field(description="records sent")
    pages: int = Field(description="provider pages fetched")
    error: dict[str, Any] | None = Field(
        default=None,
        description="only when a page after the first failed: {code, message, details}; `records`"
        " then holds what came before it",
    )


class IntegrationStatus(BaseModel):
    provider: str
    integration_id: uuid.UUID
    display_name: str
    location_label: str
    configured: bool
    enabled: bool
    functions: list[str]
    credential_present: bool
    credential_valid: bool | None
    credential_last_test_at: datetime | None
    last_call_at: datetime | None
    last_error: str | None
    connection: str | None = Field(
        default=None,
        description="for providers connected through a consent page: not_connected, connected or"
        " reconnect_required",
    )
    recent_calls: int
    recent_error_rate: float
    rate_limit: dict[str, Any] | None
