"""A full paginated read of the 10,000-patient / 50,000-appointment OpenDental clinic, as a first sync."""

from __future__ import annotations

import time
from typing import Any

import httpx

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


async def test_full_paginated_read_of_the_large_clinic(sandbox_factory: SandboxFactory) -> None:
    began = time.perf_counter()
    server = await sandbox_factory(OpenDentalSandbox, spec=LARGE_CLINIC)
    built = time.perf_counter() - began
    # Generating the clinic and loading it into the simulator, not just the generator alone.
    assert built < 10, f"building the clinic took {built:.1f}s"
    async with httpx.AsyncClient(base_url=str(server.base_url), headers=AUTH, timeout=30) as client:
        patients = await read_all(client, "/patients/Simple", {})
        appointments = await read_all(client, "/appointments", {"DateTStamp": "2000-01-01 00:00:00"})
    read = time.perf_counter() - began - built
    assert len(patients) == 10_000
    assert sorted(row["PatNum"] for row in patients) == list(range(1, 10_001))
    assert len(appointments) == 50_000
    assert sorted(row["AptNum"] for row in appointments) == list(range(1, 50_001))
    assert read < 60, f"full read took {read:.1f}s"
