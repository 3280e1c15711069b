"""`clinicsync admin` and `db upgrade`: an organization, a user and a token from the command line."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from clinicsync.app import create_app
from clinicsync.cli import app
from clinicsync.config import get_settings
from clinicsync.serving import serving

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"sqlite:///{tmp_path / 'cli.sqlite3'}"
    monkeypatch.setenv("CLINICSYNC_DATABASE_URL", url)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_an_admin_created_from_the_cli_can_call_the_api(cli_database: str) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    created = runner.invoke(
        app, ["admin", "create-org", "--name", "Bay Vets", "--time-zone", "Australia/Sydney"]
    )
    assert created.exit_code == 0, created.output
    organization_id = re.search(UUID, created.output)
    assert organization_id
    user = runner.invoke(
        app,
        [
            "admin",
            "create-user",
            "--org",
            organization_id.group(0),
            "--email",
            "desk@bay.example",
            "--role",
            "admin",
        ],
    )
    assert user.exit_code == 0, user.output
    user_id = re.search(UUID, user.output)
    assert user_id
    token = runner.invoke(app, ["admin", "create-token", "--user", user_id.group(0)])
    assert token.exit_code == 0, token.output
    raw = re.search(r"cs_\S+", token.output)
    assert raw

    organization = asyncio.run(_read_organization(raw.group(0)))
    assert organization["time_zone"] == "Australia/Sydney"
    assert organization["name"] == "Bay Vets"


async def _read_organization(token: str) -> dict[str, object]:
    async with serving(create_app(get_settings())) as base_url, httpx.AsyncClient(base_url=base_url) as http:
        response = await http.get("/api/v1/organization", headers={"Authorization": f"Bearer {token}"})
        body: dict[str, object] = response.json()
        return body


def test_bad_cli_input_is_a_clear_error(cli_database: str) -> None:
    runner = CliRunner()
    bad_zone = runner.invoke(app, ["admin", "create-org", "--name", "X", "--time-zone", "Mars/Olympus"])
    assert bad_zone.exit_code == 2
    assert "IANA time zone" in bad_zone.output
    missing_org = runner.invoke(
        app,
        ["admin", "create-user", "--org", "00000000-0000-0000-0000-000000000000", "--email", "a@b.example"],
    )
    assert missing_org.exit_code == 2
    assert "organization not found" in missing_org.output
