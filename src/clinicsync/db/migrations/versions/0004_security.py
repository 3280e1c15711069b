"""Security: who registered a patient and who booked an appointment (service accounts are scoped by
them), the host a credential's secret was entered for, and an expiry on every token.

Revision ID: 0004_security
Revises: 0009_agents
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_security"
down_revision = "0009_agents"
branch_labels = None
depends_on = None

# Tokens issued before expiries existed stop working this long after they were made.
LEGACY_TOKEN_DAYS = 30


def upgrade() -> None:
    op.add_column("patients", sa.Column("registered_by_user_id", sa.Uuid(), nullable=True))
    op.create_index("ix_patients_registered_by_user_id", "patients", ["registered_by_user_id"])
    op.add_column("appointments", sa.Column("booked_by_user_id", sa.Uuid(), nullable=True))
    op.create_index("ix_appointments_booked_by_user_id", "appointments", ["booked_by_user_id"])
    op.add_column("api_credentials", sa.Column("bound_host", sa.String(300), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"UPDATE api_tokens SET expires_at = created_at + interval '{LEGACY_TOKEN_DAYS} days' "
            "WHERE expires_at IS NULL"
        )
    else:
        op.execute(
            "UPDATE api_tokens SET expires_at = strftime('%Y-%m-%d %H:%M:%f000', created_at, "
            f"'+{LEGACY_TOKEN_DAYS} days') WHERE expires_at IS NULL"
        )


def downgrade() -> None:
    op.drop_column("api_credentials", "bound_host")
    op.drop_index("ix_appointments_booked_by_user_id", table_name="appointments")
    op.drop_column("appointments", "booked_by_user_id")
    op.drop_index("ix_patients_registered_by_user_id", table_name="patients")
    op.drop_column("patients", "registered_by_user_id")
