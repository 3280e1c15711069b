"""The full sync's four phases over real HTTP against the sandboxes, on both databases."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import httpx

from clinicsync.sandbox import SandboxServer
from clinicsync.sandbox.faults import FaultSettings
from tests.factories import TenantFactory
from tests.sync.runs.conftest import VET_CLINIC, ZONE, Pulling, cases, connect_vet, run_to_end


def _past_visits(clinic: Pulling, days: int) -> set[str]:
    """The sandbox's own answer: visits that started in the last `days` local days, up to now."""
    pims = clinic.sandbox
    now = pims.clock.now()  # type: ignore[attr-defined]
    first = datetime.combine(
        pims.clock.local_now().date() - timedelta(days=days),  # type: ignore[attr-defined]
        datetime.min.time(),
        tzinfo=pims.clock.local_now().tzinfo,  # type: ignore[attr-defined]
    ).astimezone(UTC)
    return {
        str(row.id)
        for row in pims.store.appointments.values()  # type: ignore[attr-defined]
        if not row.deleted and first <= row.start < now
    }


async def test_a_full_sync_with_a_failing_enrichment_endpoint_completes_the_other_phases(
    client: httpx.AsyncClient, vet: Pulling
) -> None:
    vet.sandbox.faults = FaultSettings(error_rate=1.0, error_statuses=[503], match_path="^/consultations")

    run = await run_to_end(client, vet, backward_days=7, forward_days=7)

    phases = run["phases"]
    assert {name: phases[name]["status"] for name in run["steps"]} == {
        "backward": "completed",
        "enrichment": "failed",
        "forward": "completed",
        "reconcile": "completed",
    }
    assert "503" in phases["enrichment"]["reason"] or "unavailable" in phases["enrichment"]["reason"]
    assert run["status"] == "failed" and run["error_message"] == "enrichment failed"
    [error] = run["errors"]
    assert error["phase"] == "enrichment"
    assert set(error) >= {"error_type", "message", "retry_after", "error_code"}

    # Backward: one case per past visit of the window, nothing else; no consultations attached.
    pulled = await cases(client, vet, integration_id=vet.integration_id)
    assert {case["external_id"] for case in pulled} == _past_visits(vet, 7)
    assert all(case["consultation"] is None for case in pulled)
    assert run["counts"]["cases"]["created"] == len(pulled)
    assert run["counts"]["appointments"]["created"] > 0
    assert run["requests_used"] > 0

    # The endpoint recovers: the next run enriches the same cases and creates none.
    vet.sandbox.faults = FaultSettings()
    again = await run_to_end(client, vet, backward_days=7, forward_days=7)
    assert again["status"] == "completed", again
    assert again["counts"]["cases"]["created"] == 0
    assert again["counts"]["cases"]["unchanged"] == len(pulled)
    enriched = [case for case in await cases(client, vet) if case["consultation"]]
    with_notes = {
        str(row.appointment_id)
        for row in vet.sandbox.store.consultations.values()  # type: ignore[attr-defined]
        if str(row.appointment_id) in {case["external_id"] for case in pulled}
    }
    assert {case["external_id"] for case in enriched} == with_notes and with_notes
    assert all(
        case["consultation"]["subjective"] and case["consultation"]["discharge_summary"] for case in enriched
    )
    assert again["counts"]["consultations"]["created"] == len(with_notes)


async def test_a_second_run_of_one_integration_is_refused_with_the_running_run_s_id(
    client: httpx.AsyncClient, vet: Pulling
) -> None:
    # Slow pages keep the first run going while the second is asked for.
    vet.sandbox.faults = FaultSettings(latency_ms=200, match_path="^/appointments")
    first = await client.post(
        "/api/v1/sync/trigger", headers=vet.headers, json={"integration_id": vet.integration_id}
    )
    assert first.status_code == 202, first.text
    second = await client.post(
        "/api/v1/sync/trigger", headers=vet.headers, json={"integration_id": vet.integration_id}
    )
    assert second.status_code == 409, second.text
    error = second.json()["error"]
    assert error["code"] == "sync_already_running"
    assert error["details"]["sync_id"] == first.json()["sync_id"]
    assert error["details"]["error_code"] == "SYNC_ALREADY_RUNNING"
    cancelled = await client.post(f"/api/v1/sync/{first.json()['sync_id']}/cancel", headers=vet.headers)
    assert cancelled.status_code == 200, cancelled.text


async def test_the_forward_phase_fills_the_pms_slot_grid_with_booked_counts_against_capacity(
    client: httpx.AsyncClient,
    tenant_factory: TenantFactory,
    sandboxes: Callable[..., Awaitable[SandboxServer]],
) -> None:
    pims = await sandboxes("vet_pims", spec=VET_CLINIC)
    tenant = await tenant_factory(time_zone=ZONE)
    clinic = Pulling(tenant, pims, await connect_vet(client, tenant, pims, schedule_source="pms_slots"))

    run = await run_to_end(client, clinic, sync_type="inbound", forward_days=3)

    assert run["status"] == "completed", run
    assert run["phases"]["forward"]["extra"]["slots_recounted"] >= 0
    assert run["counts"]["slots"]["created"] > 0
    today = pims.clock.local_now().date()  # type: ignore[attr-defined]
    listed = await client.get(
        "/api/v1/schedule-slots",
        headers=tenant.headers,
        params={"from": str(today + timedelta(days=1)), "to": str(today + timedelta(days=1)), "limit": 500},
    )
    assert listed.status_code == 200, listed.text
    slots = listed.json()["slots"]
    assert slots and all(slot["capacity"] == 2 for slot in slots)
    # Each slot's count is the PIMS's visits holding a place in it.
    holding = [
        row
        for row in pims.store.appointments.values()  # type: ignore[attr-defined]
        if not row.deleted and row.status in ("booked", "confirmed", "arrived", "completed")
    ]
    for slot in slots:
        starts, ends = datetime.fromisoformat(slot["starts_at"]), datetime.fromisoformat(slot["ends_at"])
        expected = sum(1 for row in holding if row.start < ends and starts < row.end)
        assert slot["booked_count"] == expected, slot
    assert any(slot["booked_count"] > 0 for slot in slots)


async def test_a_full_sync_against_opendental_runs_every_phase_it_can_and_says_why_it_skips_enrichment(
    client: httpx.AsyncClient, opendental_pull: Pulling
) -> None:
    od = opendental_pull
    run = await run_to_end(client, od, backward_days=7, forward_days=7)

    assert run["status"] == "completed", run
    phases = run["phases"]
    assert [phases[name]["status"] for name in run["steps"]] == [
        "completed",
        "skipped",
        "completed",
        "completed",
    ]
    assert "consultation" in phases["enrichment"]["reason"]
    pulled = await cases(client, od)
    assert pulled and run["counts"]["cases"]["created"] == len(pulled)
    assert run["counts"]["appointments"]["found"] == run["counts"]["appointments"]["created"] > 0
    again = await run_to_end(client, od, backward_days=7, forward_days=7)
    assert again["counts"]["cases"]["unchanged"] == len(pulled)
    assert again["counts"]["cases"]["created"] == again["counts"]["appointments"]["created"] == 0
