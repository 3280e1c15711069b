"""Integrations: a rate budget per integration shared by every process; OAuth grants.

`integration_rate_budgets` holds one token bucket per integration. `api_credentials` gains the
shared access token, the refresh lease and the grant's state; `oauth_authorizations` holds each
consent in progress (hashed state, encrypted PKCE verifier).

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

    for column in (
        sa.Column("access_token_ciphertext", sa.Text(), nullable=True),
        sa.Column("access_token_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refresh_lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refreshed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refresh_count", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("grant_status", sa.String(length=20), nullable=True),
        sa.Column("grant_error", sa.Text(), nullable=True),
    ):
        op.add_column("api_credentials", column)
    op.create_table(
        "oauth_authorizations",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("integration_id", sa.Uuid(), nullable=False),
        sa.Column("credential_id", sa.Uuid(), nullable=False),
        sa.Column("state_hash", sa.String(length=64), nullable=False),
        sa.Column("verifier_ciphertext", sa.Text(), nullable=False),
        sa.Column("redirect_uri", sa.String(length=500), nullable=False),
        sa.Column("requested_by", sa.Uuid(), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_at", sa.DateTime(timezone=True), nullable=True),
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
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name="fk_oauth_authorizations_organization_id_organizations",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["integration_id"],
            ["external_integrations.id"],
            name="fk_oauth_authorizations_integration_id",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["credential_id"],
            ["api_credentials.id"],
            name="fk_oauth_authorizations_credential_id",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_oauth_authorizations"),
        sa.UniqueConstraint("state_hash", name="uq_oauth_authorizations_state_hash"),
    )
    op.create_index("ix_oauth_authorizations_organization_id", "oauth_authorizations", ["organization_id"])
    op.create_index("ix_oauth_authorizations_integration_id", "oauth_authorizations", ["integration_id"])


def downgrade() -> None:
    op.drop_table("oauth_authorizations")
    for name in (
        "grant_error",
        "grant_status",
        "refresh_count",
        "refreshed_at",
        "refresh_lease_until",
        "access_token_expires_at",
        "access_token_ciphertext",
    ):
        with op.batch_alter_table("api_credentials") as batch:
            batch.drop_column(name)
    op.drop_table("integration_rate_budgets")
