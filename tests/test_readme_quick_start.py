"""The README's quick start, pasted: a fresh `clinicsync demo`, then the README's own commands."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def quick_start_block() -> str:
    text = README.read_text()
    match = re.search(r"<!-- quick-start:[^>]*-->\s*```sh\n(.*?)```", text, re.DOTALL)
    assert match, "README.md lost its quick-start block"
    return match.group(1)


@pytest.mark.slow
def test_the_readmes_quick_start_works_as_pasted(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "CLINICSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'demo.sqlite3'}",
        "CLINICSYNC_PORT": str(port),
        "PYTHONUNBUFFERED": "1",
    }
    demo = subprocess.Popen(
        [sys.executable, "-m", "clinicsync.cli", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert demo.poll() is None, demo.stdout.read() if demo.stdout else ""
            assert time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.2)
        pasted = subprocess.run(
            ["bash", "-e", "-c", quick_start_block()],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            env={key: value for key, value in os.environ.items() if not key.startswith("CLINICSYNC_")},
        )
        assert pasted.returncode == 0, pasted.stderr
        assert '"booking_reference":"CS-' in pasted.stdout.replace(" ", "")
        assert "Dr. Amelia Hart" in pasted.stdout
    finally:
        demo.terminate()
        # The demo forces its server down after 15 s and its PMS after 10 s (serving.stop_uvicorn);
        # this waits past both, so a slow stop on a loaded machine is not taken for a quick start
        # that failed.
        output = demo.communicate(timeout=40)[0]
    # What the demo printed can be pasted too: real ids, a real slot, no placeholders.
    assert "..." not in output and "uuidgen" not in output
    assert re.search(
        r"-d '\{\"patient_id\": \"[0-9a-f-]{36}\", \"practitioner_id\": \"[0-9a-f-]{36}\"", output
    )
    for role in ("owner", "admin", "staff", "practitioner"):
        assert re.search(rf"^\s+{role}\s+\S+@demo-clinic\.example$", output, re.MULTILINE), role


def test_a_busy_port_is_reported_before_anything_else(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "clinicsync.cli", "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={**os.environ, "CLINICSYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.sqlite3'}"},
        )
    assert result.returncode == 2
    assert result.stdout.startswith(f"error: port {port} on 127.0.0.1 is already in use")
    assert "make demo PORT=" in result.stdout and "CLINICSYNC_PORT=" in result.stdout
    assert not (tmp_path / "demo.sqlite3").exists()


def test_sandbox_help_lists_the_providers() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "clinicsync.cli", "sandbox", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0
    for name in ("opendental", "cliniko", "dentrix_ascend", "vet_pims", "google_calendar"):
        assert name in result.stdout, name
