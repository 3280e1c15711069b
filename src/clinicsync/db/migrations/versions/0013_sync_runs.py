"""Sync runs: runs with progress and checkpoints, cases, the PMS's upcoming appointments,
pull cursors and per-integration run settings.

Revision ID: 0013_sync_runs
Revises: 0012_pms_slots
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013_sync_runs"
down_revision = "0012_pms_slots"
branch_labels = None
depends_on = None


def _owned(table: str) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.func.current_timestamp(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=f"fk_{table}_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["external_integrations.id"],
            name=f"fk_{table}_integration_id",
            ondelete="CASCADE",
        ),
    ]


def _instant(name: str, nullable: bool = True) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "sync_runs",
        *_owned("sync_runs"),
        sa.Column("run_type", sa.String(24), nullable=False),
        sa.Column("mode", sa.String(24), nullable=False),
        sa.Column("status", sa.String(24), nullable=False),
        sa.Column("dry_run", sa.Boolean(), nullable=False),
        sa.Column("incremental", sa.Boolean(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("steps", sa.JSON(), nullable=False),
        sa.Column("current_step", sa.String(40), nullable=True),
        sa.Column("completed_steps", sa.Integer(), nullable=False),
        sa.Column("current_operation", sa.String(200), nullable=True),
        sa.Column("records_processed", sa.Integer(), nullable=False),
        sa.Column("records_total", sa.Integer(), nullable=True),
        sa.Column("counts", sa.JSON(), nullable=False),
        sa.Column("phases", sa.JSON(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("checkpoint", sa.JSON(), nullable=True),
        sa.Column("preview", sa.JSON(), nullable=True),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("review_required", sa.Boolean(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("requests_used", sa.Integer(), nullable=False),
        sa.Column("resumed_from", sa.Uuid(), nullable=True),
        sa.Column("triggered_by", sa.String(120), nullable=True),
        sa.Column("worker", sa.String(120), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        _instant("started_at"),
        _instant("completed_at"),
        _instant("heartbeat_at"),
    )
    op.create_index("ix_sync_runs_organization_id", "sync_runs", ["organization_id"])
    op.create_index("ix_sync_runs_history", "sync_runs", ["organization_id", "started_at"])
    op.create_index(
        "uq_sync_runs_one_active",
        "sync_runs",
        ["integration_id"],
        unique=True,
        sqlite_where=sa.text("status IN ('starting', 'running')"),
        postgresql_where=sa.text("status IN ('starting', 'running')"),
    )

    for table, payload in (("sync_cases", "appointment"), ("pms_appointments", "record")):
        columns: list[sa.schema.SchemaItem] = [
            sa.Column("external_id", sa.String(200), nullable=False),
            sa.Column("patient_external_id", sa.String(200), nullable=True),
            sa.Column("practitioner_external_id", sa.String(200), nullable=True),
            _instant("starts_at", nullable=False),
            _instant("ends_at"),
            sa.Column("status", sa.String(24), nullable=False),
            sa.Column(payload, sa.JSON(), nullable=False),
            _instant("deleted_at"),
        ]
        if table == "sync_cases":
            columns += [
                sa.Column("consultation", sa.JSON(), nullable=True),
                _instant("enriched_at"),
                sa.Column("reconciliation", sa.JSON(), nullable=True),
            ]
        op.create_table(
            table,
            *_owned(table),
            *columns,
            sa.UniqueConstraint("integration_id", "external_id", name=f"uq_{table}_external"),
        )
        op.create_index(f"ix_{table}_organization_id", table, ["organization_id"])
        op.create_index(f"ix_{table}_window", table, ["integration_id", "starts_at"])

    op.create_table(
        "sync_cursors",
        *_owned("sync_cursors"),
        sa.Column("entity", sa.String(40), nullable=False),
        sa.Column("value", sa.String(500), nullable=True),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("last_run_id", sa.Uuid(), nullable=True),
        sa.UniqueConstraint("integration_id", "entity", name="uq_sync_cursors_entity"),
    )
    op.create_index("ix_sync_cursors_organization_id", "sync_cursors", ["organization_id"])

    op.create_table(
        "sync_run_settings",
        *_owned("sync_run_settings"),
        sa.Column("schedule_enabled", sa.Boolean(), nullable=False),
        sa.Column("interval_minutes", sa.Integer(), nullable=True),
        sa.Column("backward_days", sa.Integer(), nullable=True),
        sa.Column("forward_days", sa.Integer(), nullable=True),
        sa.Column("reconcile_days", sa.Integer(), nullable=True),
        sa.Column("max_delete_share", sa.Float(), nullable=True),
        _instant("last_scheduled_at"),
        sa.UniqueConstraint("integration_id", name="uq_sync_run_settings_integration"),
    )
    op.create_index("ix_sync_run_settings_organization_id", "sync_run_settings", ["organization_id"])


def downgrade() -> None:
    for table in ("sync_run_settings", "sync_cursors", "pms_appointments", "sync_cases", "sync_runs"):
        op.drop_table(table)
