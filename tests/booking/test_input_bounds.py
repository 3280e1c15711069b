"""Inputs at the edges of their types answer 422 naming the field, never 500."""

from __future__ import annotations

import httpx

from tests.factories import Clinic


async def test_huge_offsets_and_far_years_are_refused_by_name(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    h = clinic.headers
    cases = [
        ("GET", "/api/v1/patients", {"offset": str(2**63)}, None, "offset"),
        ("GET", "/api/v1/appointments", {"offset": str(2**63)}, None, "offset"),
        ("GET", "/api/v1/slots", {"from": "9999-12-30", "to": "9999-12-31"}, None, "from"),
        ("GET", "/api/v1/slots", {"from": "0001-01-01", "to": "0001-01-02"}, None, "from"),
        ("GET", "/api/v1/appointments", {"from": "9999-12-31T23:00:00Z"}, None, "from"),
        (
            "POST",
            "/api/v1/appointments",
            None,
            {
                "patient_id": str(clinic.patient_id),
                "practitioner_id": str(clinic.practitioner_id),
                "start": "9999-12-31T23:30:00Z",
            },
            "start",
        ),
        (
            "POST",
            "/api/v1/patients",
            None,
            {"first_name": "A", "last_name": "B", "date_of_birth": "0001-01-01"},
            "date_of_birth",
        ),
    ]
    for method, path, params, body, field in cases:
        response = await client.request(method, path, params=params, json=body, headers=h)
        assert response.status_code == 422, (path, params, body, response.text)
        assert field in [item["field"] for item in response.json()["error"]["details"]], response.text


async def test_an_override_with_a_start_but_no_end_is_refused_as_a_whole(
    client: httpx.AsyncClient, clinic: Clinic
) -> None:
    response = await client.post(
        f"/api/v1/practitioners/{clinic.practitioner_id}/overrides",
        json={"date": "2030-01-02", "start_time": "10:00"},
        headers=clinic.headers,
    )
    assert response.status_code == 422
    assert "end_time" in response.json()["error"]["message"]
    listed = await client.get(
        f"/api/v1/practitioners/{clinic.practitioner_id}/overrides", headers=clinic.headers
    )
    assert listed.status_code == 200
    assert listed.json() == []
