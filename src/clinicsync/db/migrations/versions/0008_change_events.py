"""Change events: one row per committed change, replayable by id for live feeds.

Revision ID: 0008_change_events
Revises: 0011_inbound
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_change_events"
down_revision = "0011_inbound"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "change_events",
        sa.Column(
            "id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False
        ),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("entity", sa.String(40), nullable=False),
        sa.Column("entity_id", sa.Uuid(), nullable=False),
        sa.Column("operation", sa.String(10), nullable=False),
        sa.Column("practitioner_id", sa.Uuid(), nullable=True),
        sa.Column("owner_user_id", sa.Uuid(), nullable=True),
        sa.Column("actor_user_id", sa.Uuid(), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_change_events_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_change_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_change_events_organization_id_id", "change_events", ["organization_id", "id"])
    op.create_index("ix_change_events_entity_entity_id", "change_events", ["entity", "entity_id"])


def downgrade() -> None:
    op.drop_table("change_events")
