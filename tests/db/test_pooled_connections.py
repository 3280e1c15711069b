"""A pooled PostgreSQL connection that has sat idle is tested before use, so a connection the
server dropped meanwhile (a restart, an idle timeout) is replaced instead of failing a request;
one back in the pool a moment ago goes straight back to work."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from clinicsync.db import engine as engine_module
from clinicsync.db.engine import create_engine


async def test_an_idle_connection_the_server_dropped_is_replaced_before_use(
    database_url: str, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "postgresql":
        pytest.skip("SQLite opens its database file; no server can drop the connection")
    engine = create_engine(database_url, pool_size=1, max_overflow=0)
    administrator = create_engine(database_url)
    try:
        async with engine.connect() as connection:
            dropped = await connection.scalar(text("SELECT pg_backend_pid()"))
        async with administrator.connect() as connection:
            terminated = await connection.scalar(text("SELECT pg_terminate_backend(:pid)"), {"pid": dropped})
        assert terminated is True
        # The pool's one connection is now dead. Used a moment ago, it would go out untested;
        # idle past the window, it is tested, found dead and replaced.
        monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)
        async with engine.connect() as connection:
            replacement = await connection.scalar(text("SELECT pg_backend_pid()"))
        assert replacement != dropped
    finally:
        await engine.dispose()
        await administrator.dispose()
