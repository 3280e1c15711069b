"""Definition files, the providers CLI, the OpenAPI draft and secret encryption without a server."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import yaml
from cryptography.fernet import Fernet
from typer.testing import CliRunner

from clinicsync.config import Settings
from clinicsync.integrations.cli import app
from clinicsync.integrations.credentials import SecretCipher, cipher_for, key_file_path, load_keys, mask
from clinicsync.integrations.definitions import parse_definition, shipped_definitions

runner = CliRunner()


def test_every_shipped_definition_is_valid() -> None:
    keys = {definition.key for definition in shipped_definitions()}
    assert {
        "opendental",
        "cliniko",
        "google_calendar",
        "dentrix_ascend",
        "vet_pims",
        "twilio",
        "openai",
        "anthropic",
        "vapi",
        "retell",
    } <= keys
    assert all(definition.test_function for definition in shipped_definitions())


def test_validate_names_file_path_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "key: broken\ndisplay_name: B\nbase_url: ftp://x\nfunctions:\n"
        "  get: {path: '/things/{id}', params: [{name: id, in: cookie}]}\n"
    )
    result = runner.invoke(app, ["validate", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}: base_url: base_url must start with http" in result.output
    assert f"{bad}: functions.get.params.0.in:" in result.output
    broken_yaml = tmp_path / "broken.yaml"
    broken_yaml.write_text("key: [unclosed\n")
    result = runner.invoke(app, ["validate", str(broken_yaml)])
    assert result.exit_code == 1 and "not valid YAML" in result.output and "line" in result.output


def test_import_openapi_drafts_a_valid_definition(tmp_path: Path) -> None:
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "Petcare", "version": "2.1"},
        "servers": [{"url": "https://api.petcare.example/v2"}],
        "components": {
            "securitySchemes": {"key": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}},
            "schemas": {
                "Visit": {
                    "type": "object",
                    "required": ["petId"],
                    "properties": {"petId": {}, "startsAt": {}},
                }
            },
        },
        "paths": {
            "/visits": {
                "get": {
                    "operationId": "listVisits",
                    "parameters": [{"name": "page", "in": "query"}, {"name": "pageSize", "in": "query"}],
                    "responses": {
                        "200": {
                            "content": {
                                "application/json": {
                                    "schema": {"type": "object", "properties": {"visits": {"type": "array"}}}
                                }
                            }
                        }
                    },
                },
                "post": {
                    "operationId": "createVisit",
                    "requestBody": {
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Visit"}}}
                    },
                },
            },
            "/visits/{visitId}": {
                "get": {
                    "operationId": "getVisit",
                    "parameters": [{"name": "visitId", "in": "path", "required": True}],
                }
            },
        },
    }
    path = tmp_path / "petcare.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "draft.yaml"
    result = runner.invoke(app, ["import-openapi", str(path), "--key", "petcare", "-o", str(out)])
    assert result.exit_code == 0, result.output
    draft = parse_definition(yaml.safe_load(out.read_text()))
    assert draft.auth.type == "api_key" and draft.auth.name == "X-Api-Key"
    assert set(draft.functions) == {"list_visits", "create_visit", "get_visit"}
    assert draft.functions["list_visits"].response.records == "visits"
    assert draft.functions["list_visits"].pagination is not None
    create = {p.name: p for p in draft.functions["create_visit"].params}
    assert create["pet_id"].required and create["pet_id"].external == "petId"
    not_openapi = tmp_path / "swagger.json"
    not_openapi.write_text(json.dumps({"swagger": "2.0"}))
    assert runner.invoke(app, ["import-openapi", str(not_openapi), "--key", "x"]).exit_code == 1


def test_key_file_is_private_and_masks_hide_short_secrets(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var", secret_key=None)
    cipher = cipher_for(settings)
    mode = stat.S_IMODE(key_file_path(settings).stat().st_mode)
    assert mode == 0o600
    token = cipher.encrypt({"api_key": "abcdefgh12345678"})
    assert "abcdefgh" not in token and cipher.decrypt(token) == {"api_key": "abcdefgh12345678"}
    assert mask("abcdefgh12345678") == "••••5678" and mask("short") == "••••"
    newer = SecretCipher((Fernet.generate_key(), *load_keys(settings).keys))
    assert newer.decrypt(newer.rotate(token)) == {"api_key": "abcdefgh12345678"}
