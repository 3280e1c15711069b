"""Patient details never reach the log, even when the database refuses a write that carries them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.db.engine import session_scope
from clinicsync.logging import configure_logging
from tests.factories import Clinic

# Recognizable details: none of these may appear anywhere the server writes.
PATIENT = {
    "first_name": "Zebulon",
    "last_name": "Quillfeather",
    "email": "zebulon.quillfeather@example.com",
    "phone": "+1 202 555 0187",
    "date_of_birth": "1961-07-14",
}
PHI = ("Zebulon", "Quillfeather", "zebulon.quillfeather", "2025550187", "1961-07-14", "1961, 7, 14")

POSTGRES_REFUSAL = [
    """CREATE FUNCTION refuse_zebulon() RETURNS trigger AS $$
       BEGIN
         IF NEW.first_name = 'Zebulon' THEN
           -- like a unique violation's DETAIL, the database's message quotes the row
           RAISE EXCEPTION 'refused % % % %', NEW.first_name, NEW.last_name, NEW.email, NEW.phone;
         END IF;
         RETURN NEW;
       END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER refuse_zebulon BEFORE INSERT OR UPDATE ON patients
       FOR EACH ROW EXECUTE FUNCTION refuse_zebulon()""",
]
SQLITE_REFUSAL = [
    """CREATE TRIGGER refuse_zebulon BEFORE INSERT ON patients WHEN NEW.first_name = 'Zebulon'
       BEGIN SELECT RAISE(ABORT, 'refused'); END""",
    """CREATE TRIGGER refuse_zebulon_update BEFORE UPDATE ON patients WHEN NEW.first_name = 'Zebulon'
       BEGIN SELECT RAISE(ABORT, 'refused'); END""",
]


@pytest.fixture
async def refusing_database(
    backend: str, sessionmaker: async_sessionmaker[AsyncSession]
) -> AsyncIterator[None]:
    """A database that refuses to store a patient called Zebulon, as a real one refuses bad rows."""
    statements = POSTGRES_REFUSAL if backend == "postgresql" else SQLITE_REFUSAL
    async with session_scope(sessionmaker) as session:
        for statement in statements:
            await session.execute(text(statement))
    yield
    async with session_scope(sessionmaker) as session:
        if backend == "postgresql":
            await session.execute(text("DROP TRIGGER IF EXISTS refuse_zebulon ON patients"))
            await session.execute(text("DROP FUNCTION IF EXISTS refuse_zebulon()"))
        else:
            await session.execute(text("DROP TRIGGER IF EXISTS refuse_zebulon"))
            await session.execute(text("DROP TRIGGER IF EXISTS refuse_zebulon_update"))


def _events(written: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in written.splitlines() if line.startswith("{")]


async def test_a_refused_write_logs_one_line_with_the_request_id_and_no_patient_details(
    capfd: pytest.CaptureFixture[str], client: httpx.AsyncClient, clinic: Clinic, refusing_database: None
) -> None:
    configure_logging("INFO", json=True)
    capfd.readouterr()

    created = await client.post("/api/v1/patients", json=PATIENT, headers=clinic.headers)
    renamed = await client.patch(
        f"/api/v1/patients/{clinic.patient_id}", json={"first_name": "Zebulon"}, headers=clinic.headers
    )

    assert created.status_code == 500
    assert renamed.status_code == 500
    out, err = capfd.readouterr()
    written = out + err
    for detail in PHI:
        assert detail not in written
    assert "Traceback" not in written
    assert "Exception in ASGI application" not in written
    for response in (created, renamed):
        error = response.json()["error"]
        assert error["code"] == "internal_error"
        assert error["details"]["request_id"] == response.headers["x-request-id"]
    events = _events(written)
    for response in (created, renamed):
        request_id = response.headers["x-request-id"]
        mine = [event for event in events if event.get("request_id") == request_id]
        failures = [event for event in mine if event["event"] == "unhandled_error"]
        assert len(failures) == 1
        assert failures[0]["error_type"] == "IntegrityError" or failures[0]["database_error"]
        assert failures[0]["frames"]
        assert [event["status"] for event in mine if event["event"] == "request"] == [500]


async def test_a_nul_character_is_refused_before_the_database_on_both_backends(
    capfd: pytest.CaptureFixture[str], client: httpx.AsyncClient, clinic: Clinic
) -> None:
    configure_logging("INFO", json=True)
    capfd.readouterr()

    named = await client.post(
        "/api/v1/patients", json={**PATIENT, "first_name": "Zeb\x00ulon"}, headers=clinic.headers
    )
    login = await client.post(
        "/api/v1/auth/login", json={"email": "zebulon.quillfeather@example.com\x00", "password": "x"}
    )
    searched = await client.get("/api/v1/patients?search=Quill%00feather", headers=clinic.headers)

    assert named.status_code == 422
    assert named.json()["error"]["details"] == [
        {"field": "first_name", "reason": "contains a NUL character, which is not allowed"}
    ]
    assert login.status_code == 422
    assert login.json()["error"]["details"][0]["field"] == "email"
    assert searched.status_code == 422
    assert searched.json()["error"]["details"][0]["field"] == "search"
    listed = await client.get("/api/v1/patients", headers=clinic.headers)
    assert [patient["last_name"] for patient in listed.json()] == ["Hopper"]
    out, err = capfd.readouterr()
    for detail in PHI:
        assert detail not in out + err
    assert [event["status"] for event in _events(out + err) if event["event"] == "request"][:3] == [
        422,
        422,
        422,
    ]
