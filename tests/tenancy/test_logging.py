"""Logs carry no secrets and no patient details beyond ids."""

from __future__ import annotations

import json

import httpx
import pytest

from clinicsync.logging import configure_logging, get_logger
from tests.factories import Clinic, booking, future_day


async def test_request_logs_name_routes_not_patients_or_tokens(
    client: httpx.AsyncClient, clinic: Clinic, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", json=True)
    capsys.readouterr()
    await client.get("/api/v1/patients", params={"search": "Hopper"}, headers=clinic.headers)
    await client.post(
        "/api/v1/appointments", json=booking(clinic, clinic.local(future_day(), 10)), headers=clinic.headers
    )
    await client.post(
        "/api/v1/patients", json={"first_name": "Ada", "last_name": "Lovelace", "phone": "nope"}
    )
    logged = capsys.readouterr().err
    lines = [json.loads(line) for line in logged.splitlines() if line.startswith("{")]
    assert {"route": "/api/v1/appointments", "status": 201} in [
        {"route": line.get("route"), "status": line.get("status")} for line in lines
    ]
    for secret in ("Hopper", "Grace", "Lovelace", "+12025550143", clinic.tenant.token):
        assert secret not in logged


def test_structured_fields_that_name_secrets_or_patients_are_redacted(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging("INFO", json=True)
    get_logger("test").info(
        "pushing", patient={"first_name": "Ada", "phone": "+14155550100", "id": "p-1"}, api_key="sk_live_x"
    )
    event = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert event["patient"] == {"first_name": "[redacted]", "phone": "[redacted]", "id": "p-1"}
    assert event["api_key"] == "[redacted]"
