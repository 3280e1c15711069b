"""`clinicsync demo` on a fresh database: it prints the URL, the pages and a login for each role, a
token that can list and book, and its sandbox PMS is connected both ways: the Full Sync started at
boot completes with records, a booking made through the API is confirmed by the PMS, and the
PMS's front desk moving it moves it here."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

STARTUP_SECONDS = 60  # a cold start on a busy machine: migrations, argon2, the sandbox's data
SYNC_SECONDS = 30


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Output:
    """The child's output, read by a thread: waiting for a line never blocks past a deadline (a
    bare ``readline()`` waits forever on a child that prints nothing)."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.text = ""
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, marker: str, deadline: float) -> str:
        while marker not in self.text:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {marker!r} in time; printed so far:\n{self.text}") from None
            if line is None:
                raise AssertionError(f"the demo exited before printing {marker!r}:\n{self.text}")
            self.text += line
        return self.text

    def rest(self, timeout: float) -> str:
        self.thread.join(timeout)
        while not self.lines.empty():
            self.text += self.lines.get() or ""
        return self.text


def eventually(check: Callable[[], Any], seconds: float, what: str) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result and not (isinstance(result, list) and result[:1] == ["not yet"]):
            return result
        assert time.monotonic() < deadline, f"{what} not within {seconds} s; last: {result!r}"
        time.sleep(0.25)


@pytest.mark.slow
def test_demo_serves_its_pages_and_a_connected_pms(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CLINICSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}",
        "PYTHONUNBUFFERED": "1",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "clinicsync.cli", "demo", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    output = Output(process)
    try:
        printed = output.wait_for("Ctrl-C stops", time.monotonic() + STARTUP_SECONDS)
        url = f"http://127.0.0.1:{port}"
        for page in ("/login", "/book", "/portal", "/admin/sync/runs"):
            assert f"{url}{page}\n" in printed, page
        for role in ("owner", "admin", "staff", "practitioner"):
            assert re.search(rf"^\s+{role}\s+\S+@demo-clinic\.example$", printed, re.MULTILINE), role
        assert "password demo-password-1" in printed
        token = re.search(r"Admin token:\s+(cs_\S+)", printed)
        organization = re.search(r"Organization: .*, id ([0-9a-f-]{36})", printed)
        assert token and organization, printed
        headers = {"Authorization": f"Bearer {token.group(1)}"}
        with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
            assert http.get("/login").status_code == 200

            # The Full Sync started at boot pulls the sandbox's appointments.
            def boot_sync() -> dict[str, Any] | None:
                history = http.get(f"/api/v1/sync/history/{organization.group(1)}").json()
                runs = [run for run in history["recent_syncs"] if run["sync_type"] == "full"]
                finished = runs and runs[0]["status"] in ("completed", "failed", "cancelled")
                return runs[0] if finished else None

            run = eventually(boot_sync, SYNC_SECONDS, "the boot Full Sync")
            assert run["status"] == "completed", run
            assert run["records_processed"] > 0, run

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

            # ... and is pushed to the PMS, which confirms it under its own id.
            def confirmed() -> dict[str, Any] | list[Any]:
                refs = http.get(f"/api/v1/appointments/{booked.json()['id']}").json()["external_refs"]
                done = [ref for ref in refs if ref["sync_state"] == "confirmed" and ref["external_id"]]
                return done[0] if done else ["not yet", refs]

            ref = eventually(confirmed, SYNC_SECONDS, "the PMS's confirmation")
            assert ref["provider_key"] == "opendental"

            # Both ways: the PMS's front desk moves it, and its API Events bring the move here.
            first = datetime.fromisoformat(slots[0]["start"])
            later = next(
                slot["start"]
                for slot in slots
                if datetime.fromisoformat(slot["start"]) >= first + timedelta(hours=1)
            )
            control = re.search(r"what it holds: (http://127\.0\.0\.1:\d+/_sandbox)/state", printed)
            assert control, printed
            with httpx.Client(base_url=control.group(1), timeout=10) as front_desk:
                moved = front_desk.post(
                    "/actions/reschedule",
                    json={
                        "AptNum": int(ref["external_id"]),
                        "AptDateTime": datetime.fromisoformat(later).strftime("%Y-%m-%d %H:%M:%S"),
                    },
                )
                assert moved.status_code == 200, moved.text
                assert front_desk.post("/actions/deliver_events", json={}).status_code == 200

            def moved_here() -> bool:
                start = http.get(f"/api/v1/appointments/{booked.json()['id']}").json()["start"]
                return datetime.fromisoformat(start) == datetime.fromisoformat(later)

            eventually(moved_here, SYNC_SECONDS, "the front desk's move")
    finally:
        process.send_signal(signal.SIGINT)  # as Ctrl-C
        try:
            code = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, output.rest(5)
    assert "demo stopped" in output.rest(5)
