"""A slot page answered over HTTP is computed and rendered in a search process of its own, so the
server's event loop shares no GIL with it; if that process dies, the next search still answers
the same (in the search thread) and a fresh process takes over."""

from __future__ import annotations

import os
import signal
from datetime import timedelta

import httpx

from clinicsync.booking import search
from tests.factories import Clinic, future_day


async def _page(client: httpx.AsyncClient, clinic: Clinic) -> dict[str, object]:
    day = future_day()
    response = await client.get(
        "/api/v1/slots",
        params={"from": str(day), "to": str(day + timedelta(days=6)), "limit": 50},
        headers=clinic.headers,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _search_process_ids() -> list[int]:
    # The executor's own table of its worker processes (the server runs in this test's process).
    return list(search._search_process()._processes)  # type: ignore[attr-defined]


async def test_a_slot_page_comes_from_the_search_process_and_outlives_its_death(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    first = await _page(client, clinic)
    assert len(first["slots"]) == 50 and first["next_cursor"]  # type: ignore[arg-type]
    workers = _search_process_ids()
    assert workers and os.getpid() not in workers

    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    assert await _page(client, clinic) == first  # answered by the search thread meanwhile

    assert await _page(client, clinic) == first
    assert set(_search_process_ids()).isdisjoint(workers)
