"""Integration tables: providers and functions as rows, and encrypted credentials.

An `external_integrations` row with no organization is a catalogue provider, loaded from
the shipped YAML files and read-only to tenants. A tenant's integration row belongs to an
organization; it either points at a catalogue provider (`catalogue_id`) and inherits its
functions, overriding what it sets, or defines a provider of its own from scratch.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from clinicsync.db.base import Base, Timestamps, UUIDPrimaryKey


def _organization_fk(nullable: bool) -> Mapped[Any]:
    return mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True, nullable=nullable)


class ExternalIntegration(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "external_integrations"
    __table_args__ = (
        UniqueConstraint(
            "organization_id", "provider_key", "location_label", name="uq_external_integrations_org_provider"
        ),
        Index(
            "uq_external_integrations_catalogue_key",
            "provider_key",
            unique=True,
            sqlite_where=text("organization_id IS NULL"),
            postgresql_where=text("organization_id IS NULL"),
        ),
    )

    organization_id: Mapped[uuid.UUID | None] = _organization_fk(nullable=True)
    catalogue_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("external_integrations.id"), index=True, default=None
    )
    provider_key: Mapped[str] = mapped_column(String(63))
    display_name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(20), default="pms")
    description: Mapped[str | None] = mapped_column(Text, default=None)
    # Null on a tenant row means "as the catalogue provider says".
    base_url: Mapped[str | None] = mapped_column(String(500), default=None)
    auth_type: Mapped[str | None] = mapped_column(String(40), default=None)
    auth_settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    rate_limit_requests: Mapped[int | None] = mapped_column(default=None)
    rate_limit_period_seconds: Mapped[float | None] = mapped_column(default=None)
    rate_limit_burst: Mapped[int | None] = mapped_column(default=None)
    pagination_style: Mapped[str | None] = mapped_column(String(20), default=None)
    pagination_settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # headers, retry, timeout_seconds, test_function, definition_hash
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    location_label: Mapped[str] = mapped_column(String(120), default="")
    enabled: Mapped[bool] = mapped_column(default=True)
    source: Mapped[str] = mapped_column(String(20), default="api")
    # Bumped on every change to this row, its functions or its maps; executors compare it
    # to their cached definition, so a change is seen at once, in every process.
    revision: Mapped[int] = mapped_column(default=1)

    @property
    def is_catalogue(self) -> bool:
        return self.organization_id is None


class IntegrationEndpoint(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "integration_endpoints"
    __table_args__ = (
        UniqueConstraint("integration_id", "function_name", name="uq_integration_endpoints_function"),
    )

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE"), index=True
    )
    organization_id: Mapped[uuid.UUID | None] = _organization_fk(nullable=True)
    function_name: Mapped[str] = mapped_column(String(100))
    method: Mapped[str] = mapped_column(String(10))
    path_template: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text, default=None)
    # [{name, in: path|query|body|header, required, default, constant, description}]
    parameters: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    pagination: Mapped[dict[str, Any] | None] = mapped_column(JSON, default=None)
    response_selector: Mapped[str | None] = mapped_column(String(200), default=None)
    response_single: Mapped[bool] = mapped_column(default=False)
    # {internal name: provider path} or {internal name: {from, default}}
    response_field_map: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    retry_safe: Mapped[bool | None] = mapped_column(default=None)
    # body_encoding, headers, include_unmapped, error_message_path, next_sync_token
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class IntegrationParameterMap(UUIDPrimaryKey, Timestamps, Base):
    """internal name <-> provider name with a transform; for one function, or provider-wide."""

    __tablename__ = "integration_parameter_maps"

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="CASCADE"), index=True
    )
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("integration_endpoints.id", ondelete="CASCADE"), index=True, default=None
    )
    organization_id: Mapped[uuid.UUID | None] = _organization_fk(nullable=True)
    direction: Mapped[str] = mapped_column(String(3), default="in")
    internal_name: Mapped[str] = mapped_column(String(200))
    external_name: Mapped[str] = mapped_column(String(200))
    transform: Mapped[str | None] = mapped_column(String(40), default=None)
    transform_args: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    position: Mapped[int] = mapped_column(default=0)


class ApiCredential(UUIDPrimaryKey, Timestamps, Base):
    """A provider's secrets for one organization, encrypted; only masked hints leave the service."""

    __tablename__ = "api_credentials"
    __table_args__ = (
        UniqueConstraint("organization_id", "provider_key", "label", name="uq_api_credentials_label"),
    )

    organization_id: Mapped[uuid.UUID] = _organization_fk(nullable=False)
    integration_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("external_integrations.id", ondelete="SET NULL"), index=True, default=None
    )
    provider_key: Mapped[str] = mapped_column(String(63))
    label: Mapped[str] = mapped_column(String(120), default="")
    secret_ciphertext: Mapped[str] = mapped_column(Text)
    secret_hints: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    # Bumped when an admin replaces the secrets (not when a refresh token rotates), so
    # cached auth state built from the old secrets is dropped.
    secret_version: Mapped[int] = mapped_column(default=1)
    # The host (scheme://host:port) the secrets were entered for: they are sent nowhere else, so
    # pointing an integration at another address needs the secrets typed in again.
    bound_host: Mapped[str | None] = mapped_column(String(300), default=None)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    last_test_at: Mapped[datetime | None] = mapped_column(default=None)
    last_test_ok: Mapped[bool | None] = mapped_column(default=None)
    last_test_latency_ms: Mapped[int | None] = mapped_column(default=None)
    last_test_error: Mapped[str | None] = mapped_column(Text, default=None)
    # OAuth grants (see oauth.py and tokens.py): the current access token, shared by every
    # process so that one refresh serves them all; a lease so that only one refreshes at a time.
    access_token_ciphertext: Mapped[str | None] = mapped_column(Text, default=None)
    access_token_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    refresh_lease_until: Mapped[datetime | None] = mapped_column(default=None)
    refreshed_at: Mapped[datetime | None] = mapped_column(default=None)
    refresh_count: Mapped[int] = mapped_column(default=0)
    # "connected" once a person granted access; "reconnect_required" when the provider revoked it.
    grant_status: Mapped[str | None] = mapped_column(String(20), default=None)
    grant_error: Mapped[str | None] = mapped_column(Text, default=None)


class OAuthAuthorization(UUIDPrimaryKey, Timestamps, Base):
    """A consent in progress: the state sent to the provider and the PKCE verifier kept back."""

    __tablename__ = "oauth_authorizations"

    organization_id: Mapped[uuid.UUID] = _organization_fk(nullable=False)
    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(
            "external_integrations.id", ondelete="CASCADE", name="fk_oauth_authorizations_integration_id"
        ),
        index=True,
    )
    credential_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_credentials.id", ondelete="CASCADE", name="fk_oauth_authorizations_credential_id")
    )
    # SHA-256 of the state: the state itself travels through the browser and is never stored.
    state_hash: Mapped[str] = mapped_column(String(64), unique=True)
    verifier_ciphertext: Mapped[str] = mapped_column(Text)
    redirect_uri: Mapped[str] = mapped_column(String(500))
    requested_by: Mapped[uuid.UUID | None] = mapped_column(default=None)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class IntegrationRateBudget(Base):
    """One integration's shared token bucket (see ratebudget.py); taken under the row's lock."""

    __tablename__ = "integration_rate_budgets"

    integration_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey(
            "external_integrations.id", ondelete="CASCADE", name="fk_integration_rate_budgets_integration_id"
        ),
        primary_key=True,
    )
    tokens: Mapped[float]
    # Seconds since the epoch: the instant `tokens` was computed for.
    refilled_at: Mapped[float]
    # While a live caller waits, background callers leave the next tokens to it.
    live_waiting_until: Mapped[float] = mapped_column(default=0.0)
