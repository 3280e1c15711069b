"""`clinicsync demo` on a fresh database prints the URL and a token that can list and book."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_demo_prints_a_working_url_and_token(tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "CLINICSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}"}
    process = subprocess.Popen(
        [sys.executable, "-m", "clinicsync.cli", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert process.stdout is not None
        output = ""
        deadline = time.monotonic() + 150
        while "Admin token" not in output and time.monotonic() < deadline:
            output += process.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        assert url in output
        match = re.search(r"Admin token:\s+(cs_\S+)", output)
        assert match, output
        headers = {"Authorization": f"Bearer {match.group(1)}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            while True:
                try:
                    http.get("/health")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "demo server did not start"
                    time.sleep(0.1)
            practitioners = http.get("/api/v1/practitioners").json()
            assert [p["name"] for p in practitioners][:1] == ["Dr. Amelia Hart"]
            patient = http.get("/api/v1/patients").json()[0]
            slots = http.get(
                "/api/v1/slots",
                params={
                    "from": time.strftime("%Y-%m-%d", time.gmtime(time.time() + 2 * 86400)),
                    "to": time.strftime("%Y-%m-%d", time.gmtime(time.time() + 9 * 86400)),
                    "practitioner_id": practitioners[0]["id"],
                },
            ).json()["slots"]
            booked = http.post(
                "/api/v1/appointments",
                json={
                    "patient_id": patient["id"],
                    "practitioner_id": practitioners[0]["id"],
                    "start": slots[0]["start"],
                },
            )
            assert booked.status_code == 201, booked.text
            assert booked.json()["booking_reference"].startswith("CS-")
    finally:
        process.terminate()
        process.wait(timeout=10)
