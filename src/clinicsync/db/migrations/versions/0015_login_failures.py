"""Failed logins in the database, so every server process throttles the same count.

Revision ID: 0015_login_failures
Revises: 0013_sync_runs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015_login_failures"
down_revision = "0013_sync_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("failed_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_login_failures"),
    )
    op.create_index("ix_login_failures_key_failed_at", "login_failures", ["key", "failed_at"])
    op.create_index("ix_login_failures_failed_at", "login_failures", ["failed_at"])


def downgrade() -> None:
    op.drop_table("login_failures")
