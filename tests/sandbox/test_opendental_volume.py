"""A full paginated read of a large generated OpenDental clinic, the way a first sync does it."""

from __future__ import annotations

import time

import httpx

from clinicsync.sandbox.opendental import OpenDentalSandbox
from clinicsync.sandbox.runner import SandboxFactory

AUTH = {"Authorization": "ODFHIR sandbox-developer-key/sandbox-customer-key"}


async def read_all(client: httpx.AsyncClient, path: str, params: dict[str, str]) -> list[dict[str, object]]:
    """The documented loop: keep asking while a page comes back with exactly 100 rows."""
    rows: list[dict[str, object]] = []
    offset = 0
    while True:
        page = (await client.get(path, params={**params, "Offset": str(offset)})).json()
        rows.extend(page)
        if len(page) < 100:
            return rows
        offset += 100


async def test_full_paginated_read_of_large_clinic(sandbox_factory: SandboxFactory) -> None:
    spec = {"seed": 99, "patients": 5_000, "appointments": 20_000, "rooms": 10, "practitioners": 6}
    began = time.perf_counter()
    server = await sandbox_factory(OpenDentalSandbox, spec=spec)
    async with httpx.AsyncClient(base_url=str(server.base_url), headers=AUTH, timeout=30) as client:
        appointments = await read_all(client, "/appointments", {"DateTStamp": "2000-01-01 00:00:00"})
        patients = await read_all(client, "/patients/Simple", {})
    elapsed = time.perf_counter() - began
    assert len(appointments) == 20_000
    assert len({row["AptNum"] for row in appointments}) == 20_000
    assert len(patients) == 5_000
    assert {row["PatNum"] for row in patients} == set(range(1, 5_001))
    assert elapsed < 60, f"full read took {elapsed:.1f}s"
