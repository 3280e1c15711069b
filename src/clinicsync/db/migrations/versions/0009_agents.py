"""Agents: booking policy, voice-platform channels, replayable tool calls, agent booking trail.

Revision ID: 0009_agents
Revises: 0006_sync
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_agents"
down_revision = "0006_sync"
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


def upgrade() -> None:
    op.create_table(
        "agent_settings",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("booking_enabled", sa.Boolean(), nullable=False),
        sa.Column("practitioner_ids", sa.JSON(), nullable=True),
        sa.Column("appointment_types", sa.JSON(), nullable=True),
        sa.Column("phone_region", sa.String(2), nullable=True),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_agent_settings_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", name="pk_agent_settings"),
    )
    op.create_table(
        "agent_channels",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_organization("agent_channels"),
        sa.Column("platform", sa.String(20), nullable=False),
        sa.Column("name", sa.String(120), nullable=False),
        sa.Column("service_user_id", sa.Uuid(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("token_prefix", sa.String(16), nullable=False),
        sa.Column("signing_secret_ciphertext", sa.Text(), nullable=True),
        sa.Column("booking_source", sa.String(20), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        *_timestamps(),
        sa.ForeignKeyConstraint(
            ["service_user_id"],
            ["users.id"],
            name="fk_agent_channels_service_user_id_users",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_agent_channels"),
        sa.UniqueConstraint("token_hash", name="uq_agent_channels_token_hash"),
    )
    op.create_index("ix_agent_channels_organization_id", "agent_channels", ["organization_id"])
    op.create_table(
        "agent_tool_calls",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_organization("agent_tool_calls"),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("tool", sa.String(60), nullable=False),
        sa.Column("answer", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_agent_tool_calls"),
        sa.UniqueConstraint("organization_id", "key", name="uq_agent_tool_calls_organization_key"),
    )
    op.create_index("ix_agent_tool_calls_organization_id", "agent_tool_calls", ["organization_id"])
    op.create_table(
        "agent_bookings",
        sa.Column("id", sa.Uuid(), nullable=False),
        *_organization("agent_bookings"),
        sa.Column("appointment_id", sa.Uuid(), nullable=False),
        sa.Column("booking_reference", sa.String(16), nullable=False),
        sa.Column("action", sa.String(20), nullable=False),
        sa.Column("surface", sa.String(20), nullable=False),
        sa.Column("booking_source", sa.String(20), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("call_id", sa.String(200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name="fk_agent_bookings_user_id_users", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_agent_bookings"),
    )
    op.create_index("ix_agent_bookings_organization_id", "agent_bookings", ["organization_id"])
    op.create_index("ix_agent_bookings_appointment_id", "agent_bookings", ["appointment_id"])
    op.create_index("ix_agent_bookings_booking_reference", "agent_bookings", ["booking_reference"])


def downgrade() -> None:
    op.drop_table("agent_bookings")
    op.drop_table("agent_tool_calls")
    op.drop_table("agent_channels")
    op.drop_table("agent_settings")
