"""Alembic environment: migrations always run on a connection handed in by clinicsync.db.migrate."""

from __future__ import annotations

from alembic import context

from clinicsync.db.models import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `clinicsync db upgrade`, which supplies the connection")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
