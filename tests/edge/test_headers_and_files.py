"""Responses carry security headers; the embedded database is readable by its owner only."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx
from sqlalchemy import text

from clinicsync.db.engine import create_engine
from tests.factories import Clinic


async def test_api_responses_are_not_cached_sniffed_or_framed(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    response = await client.get(f"/api/v1/patients/{clinic.patient_id}", headers=clinic.headers)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    refused = await client.get("/api/v1/patients")
    assert refused.status_code == 401
    assert refused.headers["cache-control"] == "no-store"


async def test_a_big_body_is_refused_with_413_before_it_is_read(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    big = {"first_name": "A", "last_name": "B", "notes": "x" * (2 * 1024 * 1024)}
    response = await client.post("/api/v1/patients", json=big, headers=clinic.headers)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


async def test_a_json_body_that_is_not_utf8_is_refused_with_422_naming_the_body(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    response = await client.post(
        "/api/v1/patients",
        content=b'{"first_name": "\xe9ric", "last_name": "B"}',
        headers={**clinic.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert response.json()["error"]["details"] == [
        {"field": "body", "reason": "is not UTF-8 text, which JSON must be"}
    ]


async def test_the_sqlite_database_and_its_wal_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "var" / "clinic.sqlite3"
    engine = create_engine(f"sqlite:///{path}")
    try:
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
            await connection.execute(text("INSERT INTO t VALUES (1)"))
        async with engine.connect() as connection:
            await connection.execute(text("SELECT x FROM t"))
            files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
            assert all(file.exists() for file in files)
            assert [stat.S_IMODE(file.stat().st_mode) for file in files] == [0o600, 0o600, 0o600]
    finally:
        await engine.dispose()
