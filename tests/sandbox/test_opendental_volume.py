"""A full paginated read of the 10,000-patient / 50,000-appointment OpenDental clinic, as a first sync."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from clinicsync.sandbox.opendental import OpenDentalSandbox
from clinicsync.sandbox.runner import SandboxFactory

AUTH = {"Authorization": "ODFHIR sandbox-developer-key/sandbox-customer-key"}
LARGE_CLINIC = {"seed": 11, "patients": 10_000, "appointments": 50_000}


async def read_all(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
    """The documented loop: keep asking while a page comes back with exactly 100 rows."""
    rows: list[dict[str, Any]] = []
    offset = 0
    while True:
        response = await client.get(path, params={**params, "Offset": str(offset)})
        assert response.status_code == 200, response.text
        page = response.json()
        rows.extend(page)
        if len(page) < 100:
            return rows
        offset += 100


@pytest.mark.slow
async def test_full_paginated_read_of_the_large_clinic(sandbox_factory: SandboxFactory) -> None:
    server = await sandbox_factory(OpenDentalSandbox, spec=LARGE_CLINIC)
    async with httpx.AsyncClient(base_url=str(server.base_url), headers=AUTH, timeout=30) as client:
        patients = await read_all(client, "/patients/Simple", {})
        appointments = await read_all(client, "/appointments", {"DateTStamp": "2000-01-01 00:00:00"})
    assert len(patients) == 10_000
    assert sorted(row["PatNum"] for row in patients) == list(range(1, 10_001))
    assert len(appointments) == 50_000
    assert sorted(row["AptNum"] for row in appointments) == list(range(1, 50_001))
