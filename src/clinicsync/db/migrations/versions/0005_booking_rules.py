"""Booking rules: appointment types with buffers, blocked ranges bounded for overlap checks,
organization phone region and booking horizon.

Revision ID: 0005_booking_rules
Revises: 0008_change_events
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_booking_rules"
down_revision = "0008_change_events"
branch_labels = None
depends_on = None

ACTIVE = "status IN ('pending', 'confirmed')"
# The longest an appointment may block a diary, buffers included. Overlap checks look back this
# far, no further, so their cost does not grow with the practitioner's history.
MAX_BLOCK_HOURS = 24


def _sqlite_triggers() -> None:
    for event in (
        "INSERT",
        "UPDATE OF starts_at, ends_at, blocked_from, blocked_until, status, practitioner_id",
    ):
        name = "appointments_no_overlap_" + event.split()[0].lower()
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
        # The lower bound on blocked_from keeps the index range scan to one day of one practitioner.
        op.execute(
            f"""
            CREATE TRIGGER {name} BEFORE {event} ON appointments
            WHEN NEW.status IN ('pending', 'confirmed')
            BEGIN
                SELECT RAISE(ABORT, 'appointment_overlap')
                WHERE EXISTS (
                    SELECT 1 FROM appointments AS other
                    WHERE other.practitioner_id = NEW.practitioner_id
                      AND other.status IN ('pending', 'confirmed')
                      AND other.blocked_from > datetime(NEW.blocked_from, '-{MAX_BLOCK_HOURS + 1} hours')
                      AND other.blocked_from < NEW.blocked_until
                      AND other.blocked_until > NEW.blocked_from
                      AND other.id != NEW.id
                );
            END
            """
        )


def upgrade() -> None:
    op.create_table(
        "appointment_types",
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("duration_minutes", sa.Integer(), nullable=False),
        sa.Column("buffer_before_minutes", sa.Integer(), nullable=False),
        sa.Column("buffer_after_minutes", sa.Integer(), nullable=False),
        sa.Column("colour", sa.String(length=7), nullable=False),
        sa.Column("bookable_online", sa.Boolean(), nullable=False),
        sa.Column("all_practitioners", sa.Boolean(), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("id", sa.Uuid(), nullable=False),
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
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_appointment_types_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_appointment_types")),
    )
    op.create_index(
        op.f("ix_appointment_types_organization_id"), "appointment_types", ["organization_id"], unique=False
    )
    op.create_table(
        "appointment_type_practitioners",
        sa.Column("appointment_type_id", sa.Uuid(), nullable=False),
        sa.Column("practitioner_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["appointment_type_id"],
            ["appointment_types.id"],
            name=op.f("fk_appointment_type_practitioners_appointment_type_id_appointment_types"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["practitioner_id"],
            ["practitioners.id"],
            name=op.f("fk_appointment_type_practitioners_practitioner_id_practitioners"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "appointment_type_id", "practitioner_id", name=op.f("pk_appointment_type_practitioners")
        ),
    )

    with op.batch_alter_table("organizations") as batch_op:
        batch_op.add_column(sa.Column("phone_region", sa.String(length=2), nullable=True))
        batch_op.add_column(
            sa.Column("booking_horizon_days", sa.Integer(), nullable=False, server_default="365")
        )

    with op.batch_alter_table("appointments") as batch_op:
        batch_op.add_column(sa.Column("appointment_type_id", sa.Uuid(), nullable=True))
        batch_op.add_column(
            sa.Column("buffer_before_minutes", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(
            sa.Column("buffer_after_minutes", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("blocked_from", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("blocked_until", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE appointments SET blocked_from = starts_at, blocked_until = ends_at")
    with op.batch_alter_table("appointments") as batch_op:
        batch_op.alter_column("blocked_from", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.alter_column("blocked_until", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.create_foreign_key(
            op.f("fk_appointments_appointment_type_id_appointment_types"),
            "appointment_types",
            ["appointment_type_id"],
            ["id"],
            ondelete="SET NULL",
        )
    # Active appointments by practitioner and blocked start: the overlap checks and slot search
    # read a bounded range of this index and never touch cancelled or finished history.
    op.create_index(
        "ix_appointments_active_practitioner_blocked_from",
        "appointments",
        ["practitioner_id", "blocked_from"],
        unique=False,
        sqlite_where=sa.text(ACTIVE),
        postgresql_where=sa.text(ACTIVE),
    )
    op.create_index(
        "ix_patients_organization_name",
        "patients",
        ["organization_id", "last_name", "first_name", "id"],
        unique=False,
    )

    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE appointments DROP CONSTRAINT IF EXISTS appointments_no_overlap")
        op.execute(
            "ALTER TABLE appointments ADD CONSTRAINT appointments_no_overlap "
            "EXCLUDE USING gist "
            "(practitioner_id WITH =, tstzrange(blocked_from, blocked_until, '[)') WITH &&) "
            f"WHERE ({ACTIVE})"
        )
        op.execute(
            "ALTER TABLE appointments ADD CONSTRAINT ck_appointments_block_length "
            f"CHECK (blocked_until > blocked_from AND blocked_until - blocked_from <= "
            f"interval '{MAX_BLOCK_HOURS} hours')"
        )
    else:
        # The batch operations above rebuilt the table, which drops its triggers; recreate them.
        _sqlite_triggers()
        for event in ("insert", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS appointments_block_length_{event}")
            op.execute(
                f"""
                CREATE TRIGGER appointments_block_length_{event} BEFORE {event.upper()} ON appointments
                WHEN julianday(NEW.blocked_until) <= julianday(NEW.blocked_from)
                  OR julianday(NEW.blocked_until) - julianday(NEW.blocked_from) > {MAX_BLOCK_HOURS} / 24.0
                BEGIN
                    SELECT RAISE(ABORT, 'appointment_block_length');
                END
                """
            )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE appointments DROP CONSTRAINT IF EXISTS ck_appointments_block_length")
        op.execute("ALTER TABLE appointments DROP CONSTRAINT IF EXISTS appointments_no_overlap")
    else:
        for name in ("no_overlap_insert", "no_overlap_update", "block_length_insert", "block_length_update"):
            op.execute(f"DROP TRIGGER IF EXISTS appointments_{name}")
    op.drop_index("ix_patients_organization_name", table_name="patients")
    op.drop_index("ix_appointments_active_practitioner_blocked_from", table_name="appointments")
    with op.batch_alter_table("appointments") as batch_op:
        batch_op.drop_constraint(
            op.f("fk_appointments_appointment_type_id_appointment_types"), type_="foreignkey"
        )
        for column in (
            "blocked_until",
            "blocked_from",
            "buffer_after_minutes",
            "buffer_before_minutes",
            "appointment_type_id",
        ):
            batch_op.drop_column(column)
    with op.batch_alter_table("organizations") as batch_op:
        batch_op.drop_column("booking_horizon_days")
        batch_op.drop_column("phone_region")
    op.drop_table("appointment_type_practitioners")
    op.drop_index(op.f("ix_appointment_types_organization_id"), table_name="appointment_types")
    op.drop_table("appointment_types")
    if bind.dialect.name == "postgresql":
        op.execute(
            "ALTER TABLE appointments ADD CONSTRAINT appointments_no_overlap "
            "EXCLUDE USING gist (practitioner_id WITH =, tstzrange(starts_at, ends_at, '[)') WITH &&) "
            f"WHERE ({ACTIVE})"
        )
