"""Integrations: providers, functions and parameter maps as rows; encrypted API credentials.

Revision ID: 0003_integrations
Revises: 0002_booking
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_integrations"
down_revision = "0002_booking"
branch_labels = None
depends_on = None


def _timestamps() -> list[sa.Column[object]]:
    return [
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(CURRENT_TIMESTAMP)"),
            nullable=False,
        ),
    ]


def _organization(table: str, nullable: bool) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("organization_id", sa.Uuid(), nullable=nullable),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=f"fk_{table}_organization_id_organizations",
            ondelete="CASCADE",
        ),
    ]


def upgrade() -> None:
    op.create_table(
        "external_integrations",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_organization("external_integrations", nullable=True),
        sa.Column("catalogue_id", sa.Uuid(), nullable=True),
        sa.Column("provider_key", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=False),
        sa.Column("category", sa.String(length=20), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("base_url", sa.String(length=500), nullable=True),
        sa.Column("auth_type", sa.String(length=40), nullable=True),
        sa.Column("auth_settings", sa.JSON(), nullable=False),
        sa.Column("rate_limit_requests", sa.Integer(), nullable=True),
        sa.Column("rate_limit_period_seconds", sa.Double(), nullable=True),
        sa.Column("rate_limit_burst", sa.Integer(), nullable=True),
        sa.Column("pagination_style", sa.String(length=20), nullable=True),
        sa.Column("pagination_settings", sa.JSON(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("location_label", sa.String(length=120), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=20), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["catalogue_id"],
            ["external_integrations.id"],
            name="fk_external_integrations_catalogue_id_external_integrations",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_external_integrations"),
        sa.UniqueConstraint(
            "organization_id", "provider_key", "location_label", name="uq_external_integrations_org_provider"
        ),
    )
    op.create_index(
        "ix_external_integrations_organization_id", "external_integrations", ["organization_id"], unique=False
    )
    op.create_index(
        "ix_external_integrations_catalogue_id", "external_integrations", ["catalogue_id"], unique=False
    )
    op.create_index(
        "uq_external_integrations_catalogue_key",
        "external_integrations",
        ["provider_key"],
        unique=True,
        sqlite_where=sa.text("organization_id IS NULL"),
        postgresql_where=sa.text("organization_id IS NULL"),
    )

    op.create_table(
        "integration_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        *_organization("integration_endpoints", nullable=True),
        sa.Column("function_name", sa.String(length=100), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("path_template", sa.String(length=500), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("parameters", sa.JSON(), nullable=False),
        sa.Column("pagination", sa.JSON(), nullable=True),
        sa.Column("response_selector", sa.String(length=200), nullable=True),
        sa.Column("response_single", sa.Boolean(), nullable=False),
        sa.Column("response_field_map", sa.JSON(), nullable=False),
        sa.Column("retry_safe", sa.Boolean(), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["external_integrations.id"],
            name="fk_integration_endpoints_integration_id_external_integrations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_integration_endpoints"),
        sa.UniqueConstraint("integration_id", "function_name", name="uq_integration_endpoints_function"),
    )
    op.create_index(
        "ix_integration_endpoints_integration_id", "integration_endpoints", ["integration_id"], unique=False
    )
    op.create_index(
        "ix_integration_endpoints_organization_id", "integration_endpoints", ["organization_id"], unique=False
    )

    op.create_table(
        "integration_parameter_maps",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.Column("endpoint_id", sa.Uuid(), nullable=True),
        *_organization("integration_parameter_maps", nullable=True),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("internal_name", sa.String(length=200), nullable=False),
        sa.Column("external_name", sa.String(length=200), nullable=False),
        sa.Column("transform", sa.String(length=40), nullable=True),
        sa.Column("transform_args", sa.JSON(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["external_integrations.id"],
            name="fk_integration_parameter_maps_integration_id",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["integration_endpoints.id"],
            name="fk_integration_parameter_maps_endpoint_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_integration_parameter_maps"),
    )
    for column in ("integration_id", "endpoint_id", "organization_id"):
        op.create_index(
            f"ix_integration_parameter_maps_{column}", "integration_parameter_maps", [column], unique=False
        )

    op.create_table(
        "api_credentials",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_organization("api_credentials", nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=True),
        sa.Column("provider_key", sa.String(length=63), nullable=False),
        sa.Column("label", sa.String(length=120), nullable=False),
        sa.Column("secret_ciphertext", sa.Text(), nullable=False),
        sa.Column("secret_hints", sa.JSON(), nullable=False),
        sa.Column("secret_version", sa.Integer(), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_test_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_test_ok", sa.Boolean(), nullable=True),
        sa.Column("last_test_latency_ms", sa.Integer(), nullable=True),
        sa.Column("last_test_error", sa.Text(), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["external_integrations.id"],
            name="fk_api_credentials_integration_id_external_integrations",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_api_credentials"),
        sa.UniqueConstraint("organization_id", "provider_key", "label", name="uq_api_credentials_label"),
    )
    op.create_index(
        "ix_api_credentials_organization_id", "api_credentials", ["organization_id"], unique=False
    )
    op.create_index("ix_api_credentials_integration_id", "api_credentials", ["integration_id"], unique=False)


def downgrade() -> None:
    op.drop_table("api_credentials")
    op.drop_table("integration_parameter_maps")
    op.drop_table("integration_endpoints")
    op.drop_index("uq_external_integrations_catalogue_key", table_name="external_integrations")
    op.drop_table("external_integrations")
