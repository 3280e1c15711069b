"""Integrations: a rate budget per integration shared by every process.

Revision ID: 0007_integrations_oauth
Revises: 0004_security
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_integrations_oauth"
down_revision = "0004_security"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "integration_rate_budgets",
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("refilled_at", sa.Float(), nullable=False),
        sa.Column("live_waiting_until", sa.Float(), nullable=False, server_default="0"),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["external_integrations.id"],
            name="fk_integration_rate_budgets_integration_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("integration_id", name="pk_integration_rate_budgets"),
    )


def downgrade() -> None:
    op.drop_table("integration_rate_budgets")
