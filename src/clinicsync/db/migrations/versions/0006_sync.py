"""Sync: per-integration configs, external references, the outbox; the job engine's schema on PostgreSQL.

Revision ID: 0006_sync
Revises: 0003_integrations
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0006_sync"
down_revision = "0003_integrations"
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


def _owned(table: str) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=f"fk_{table}_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["external_integrations.id"],
            name=f"fk_{table}_integration_id",
            ondelete="CASCADE",
        ),
    ]


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "integration_sync_configs",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_owned("integration_sync_configs"),
        sa.Column("sync_enabled", sa.Boolean(), nullable=False),
        sa.Column("sync_direction", sa.String(length=24), nullable=False),
        sa.Column("sync_on_create", sa.Boolean(), nullable=False),
        sa.Column("sync_on_update", sa.Boolean(), nullable=False),
        sa.Column("sync_on_delete", sa.Boolean(), nullable=False),
        sa.Column("always_keep_local_copy", sa.Boolean(), nullable=False),
        sa.Column("conflict_resolution", sa.String(length=24), nullable=False),
        sa.Column("last_sync_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_sync_status", sa.String(length=20), nullable=True),
        sa.Column("last_sync_error", sa.Text(), nullable=True),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_integration_sync_configs"),
        sa.UniqueConstraint("integration_id", name="uq_integration_sync_configs_integration_id"),
    )
    op.create_index(
        "ix_integration_sync_configs_organization_id", "integration_sync_configs", ["organization_id"]
    )
    op.create_table(
        "external_references",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_owned("external_references"),
        sa.Column("record_type", sa.String(length=24), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("sync_state", sa.String(length=24), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("snapshot", sa.JSON(), nullable=True),
        sa.Column("mismatch", sa.JSON(), nullable=True),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("read_back_attempts", sa.Integer(), nullable=False),
        *_timestamps(),
        sa.PrimaryKeyConstraint("id", name="pk_external_references"),
        sa.UniqueConstraint(
            "integration_id", "record_type", "record_id", name="uq_external_references_record"
        ),
    )
    op.create_index("ix_external_references_organization_id", "external_references", ["organization_id"])
    op.create_index(
        "ix_external_references_external_id",
        "external_references",
        ["integration_id", "record_type", "external_id"],
    )
    if postgres:
        op.execute("CREATE SEQUENCE sync_outbox_seq")
    op.create_table(
        "sync_outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_owned("sync_outbox"),
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("record_type", sa.String(length=24), nullable=False),
        sa.Column("record_id", sa.Uuid(), nullable=False),
        sa.Column("chain_key", sa.Uuid(), nullable=False),
        sa.Column("operation", sa.String(length=24), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("maybe_sent", sa.Boolean(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.String(length=100), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_error_code", sa.String(length=40), nullable=True),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("discard_reason", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_sync_outbox"),
        sa.UniqueConstraint("seq", name="uq_sync_outbox_seq"),
    )
    op.create_index("ix_sync_outbox_organization_id", "sync_outbox", ["organization_id"])
    op.create_index("ix_sync_outbox_due", "sync_outbox", ["status", "next_attempt_at"])
    op.create_index("ix_sync_outbox_chain", "sync_outbox", ["integration_id", "chain_key", "seq"])
    op.create_index("ix_sync_outbox_record", "sync_outbox", ["record_type", "record_id"])
    if postgres:
        # The job engine's own tables (Procrastinate): PostgreSQL only; SQLite runs jobs in process.
        # The schema is many statements with function bodies; asyncpg runs such a script only
        # unprepared, on its own connection object (inside this migration's transaction).
        from procrastinate.schema import SchemaManager
        from sqlalchemy.util import await_only

        driver_connection: Any = op.get_bind().connection.driver_connection
        await_only(driver_connection.execute(SchemaManager.get_schema()))


def downgrade() -> None:
    op.drop_table("sync_outbox")
    op.drop_table("external_references")
    op.drop_table("integration_sync_configs")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP SEQUENCE IF EXISTS sync_outbox_seq")
        for table in (
            "procrastinate_events",
            "procrastinate_periodic_defers",
            "procrastinate_jobs",
            "procrastinate_workers",
        ):
            op.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
