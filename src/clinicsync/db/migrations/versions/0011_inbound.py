"""Inbound sync: conflicts, the audit trail of applied changes, webhook endpoints and events.

Revision ID: 0011_inbound
Revises: 0007_integrations_oauth
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_inbound"
down_revision = "0007_integrations_oauth"
branch_labels = None
depends_on = None


def _organization(table: str) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=f"fk_{table}_organization_id_organizations",
            ondelete="CASCADE",
        ),
    ]


def _integration(table: str) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["external_integrations.id"],
            name=f"fk_{table}_integration_id",
            ondelete="CASCADE",
        ),
    ]


def _instant(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sync_conflicts",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_organization("sync_conflicts"),
        *_integration("sync_conflicts"),
        sa.Column("record_type", sa.String(length=24), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.String(length=24), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("strategy", sa.String(length=30), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("local", sa.JSON(), nullable=False),
        sa.Column("external", sa.JSON(), nullable=False),
        sa.Column("base", sa.JSON(), nullable=True),
        sa.Column("resolution", sa.String(length=30), nullable=True),
        sa.Column("chosen", sa.JSON(), nullable=True),
        sa.Column("resolved_by", sa.String(length=120), nullable=True),
        _instant("resolved_at", nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        _instant("created_at"),
        _instant("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_sync_conflicts"),
    )
    op.create_index("ix_sync_conflicts_organization_id", "sync_conflicts", ["organization_id"])
    op.create_index("ix_sync_conflicts_open", "sync_conflicts", ["organization_id", "status"])
    op.create_index("ix_sync_conflicts_record", "sync_conflicts", ["record_type", "record_id"])

    op.create_table(
        "sync_audit",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_organization("sync_audit"),
        sa.Column("record_type", sa.String(length=24), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=True),
        sa.Column("side", sa.String(length=24), nullable=False),
        sa.Column("source", sa.String(length=24), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("changes", sa.JSON(), nullable=False),
        sa.Column("conflict_id", sa.Uuid(), nullable=True),
        sa.Column("note", sa.String(length=300), nullable=True),
        _instant("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_sync_audit"),
    )
    op.create_index("ix_sync_audit_organization_id", "sync_audit", ["organization_id"])
    op.create_index("ix_sync_audit_record", "sync_audit", ["record_type", "record_id", "created_at"])

    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_organization("webhook_endpoints"),
        *_integration("webhook_endpoints"),
        sa.Column("secret_ciphertext", sa.Text(), nullable=True),
        _instant("cursor", nullable=True),
        _instant("created_at"),
        _instant("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_endpoints"),
        sa.UniqueConstraint("integration_id", name="uq_webhook_endpoints_integration_id"),
    )
    op.create_index("ix_webhook_endpoints_organization_id", "webhook_endpoints", ["organization_id"])

    op.create_table(
        "webhook_events",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_organization("webhook_events"),
        *_integration("webhook_events"),
        sa.Column("dedupe_key", sa.String(length=200), nullable=False),
        sa.Column("headers", sa.JSON(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=True),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("outcome", sa.JSON(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        _instant("received_at"),
        _instant("applied_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_events"),
        sa.UniqueConstraint("integration_id", "dedupe_key", name="uq_webhook_events_dedupe"),
    )
    op.create_index("ix_webhook_events_organization_id", "webhook_events", ["organization_id"])
    op.create_index("ix_webhook_events_due", "webhook_events", ["status", "received_at"])


def downgrade() -> None:
    op.drop_table("webhook_events")
    op.drop_table("webhook_endpoints")
    op.drop_table("sync_audit")
    op.drop_table("sync_conflicts")
