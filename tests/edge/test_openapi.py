"""The API reference documents the bearer scheme and the error shape the API really answers with."""

from __future__ import annotations

from clinicsync.app import create_app
from clinicsync.config import Settings


def _document() -> dict[str, object]:
    return create_app(Settings(database_url="sqlite:///:memory:", environment="test")).openapi()


def test_protected_routes_document_the_bearer_scheme_and_their_error_statuses() -> None:
    document = _document()
    schemes = document["components"]["securitySchemes"]  # type: ignore[index]
    assert schemes["HTTPBearer"]["scheme"] == "bearer"
    operation = document["paths"]["/api/v1/patients"]["get"]  # type: ignore[index]
    assert operation["security"] == [{"HTTPBearer": []}]
    assert {"401", "403", "404", "422", "500"} <= set(operation["responses"])
    error = operation["responses"]["422"]["content"]["application/json"]["schema"]
    assert error == {"$ref": "#/components/schemas/ErrorBody"}
    names = [parameter["name"] for parameter in operation.get("parameters", [])]
    assert "authorization" not in [name.lower() for name in names]


def test_public_routes_document_no_login_errors() -> None:
    document = _document()
    health = document["paths"]["/health"]["get"]  # type: ignore[index]
    assert "401" not in health["responses"]
    assert "HTTPValidationError" not in document["components"]["schemas"]  # type: ignore[index]
