"""``clinicsync sandbox``: clear errors for bad input, and a real server from a real process."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from clinicsync.sandbox.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["nope"], "unknown sandbox provider 'nope'; available:"),
        (["opendental", "--fault-rate", "2"], "--fault-rate 2.0"),
        (["opendental", "--latency-ms", "-5"], "--latency-ms -5.0"),
        (["opendental", "--patients", "-1"], "--patients"),
        (["opendental", "--timezone", "Mars/Olympus"], "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_input_exits_2_naming_the_value(args: list[str], expected: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert expected in result.output


def test_help_lists_the_options() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for option in (
        "--port",
        "--seed",
        "--patients",
        "--appointments",
        "--fault-rate",
        "--latency-ms",
        "--state-file",
    ):
        assert option in result.output


async def test_serves_until_interrupted_and_saves_state(tmp_path: Path) -> None:
    state_file = tmp_path / "od.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "clinicsync.sandbox.cli",
        "opendental",
        "--port",
        "0",
        "--patients",
        "30",
        "--appointments",
        "90",
        "--seed",
        "4",
        "--fault-rate",
        "0",
        "--state-file",
        str(state_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        base_url = control = ""
        async with asyncio.timeout(30):
            while not base_url:
                line = (await process.stdout.readline()).decode()
                assert line, "the CLI exited before printing its URLs"
                match = re.match(r"opendental base_url=(\S+) control=(\S+)", line)
                if match:
                    base_url, control = match.groups()
        headers = {"Authorization": "ODFHIR sandbox-developer-key/sandbox-customer-key"}
        async with httpx.AsyncClient(headers=headers) as client:
            patients = (await client.get(f"{base_url}/patients/Simple")).json()
            assert len(patients) == 30
            faults = (await client.get(f"{control}/faults")).json()
            assert faults["error_rate"] == 0
    finally:
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(30):
            await process.wait()
    assert process.returncode == 0
    saved = json.loads(state_file.read_text())
    assert saved["provider"] == "opendental"
    assert len(saved["state"]["patients"]) == 30
