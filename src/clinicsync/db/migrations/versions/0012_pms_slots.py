"""Schedule slots read from a PMS with a capacity per slot, and the sync config's schedule source.

Revision ID: 0012_pms_slots
Revises: 0005_booking_rules
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012_pms_slots"
down_revision = "0005_booking_rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("integration_sync_configs") as batch:
        batch.add_column(
            sa.Column("schedule_source", sa.String(length=12), nullable=False, server_default="local")
        )
    op.create_table(
        "schedule_slots",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("practitioner_id", sa.Uuid(), nullable=True),
        sa.Column("practitioner_external_id", sa.String(length=200), nullable=True),
        sa.Column("resource", sa.String(length=200), nullable=True),
        sa.Column("starts_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ends_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("pms_booked", sa.Integer(), nullable=True),
        sa.Column("booked_count", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
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
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_schedule_slots_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["external_integrations.id"],
            name="fk_schedule_slots_integration_id_external_integrations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["practitioner_id"],
            ["practitioners.id"],
            name="fk_schedule_slots_practitioner_id_practitioners",
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_schedule_slots"),
        sa.UniqueConstraint("integration_id", "external_id", name="uq_schedule_slots_integration_external"),
    )
    op.create_index("ix_schedule_slots_organization_id", "schedule_slots", ["organization_id"])
    op.create_index(
        "ix_schedule_slots_integration_starts_at", "schedule_slots", ["integration_id", "starts_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_schedule_slots_integration_starts_at", table_name="schedule_slots")
    op.drop_index("ix_schedule_slots_organization_id", table_name="schedule_slots")
    op.drop_table("schedule_slots")
    with op.batch_alter_table("integration_sync_configs") as batch:
        batch.drop_column("schedule_source")
