"""The OpenAPI document tells the truth about errors and authentication.

Every operation documents the error shape the API really answers with
(``{"error": {"code", "message", "details"}}``) for the statuses it can produce; operations that
need a login carry the bearer scheme (from ``deps.bearer``), so the reference has an Authorize
button. The generated document is post-processed, which works however routers are included.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_SCHEMA: dict[str, Any] = {
    "title": "ErrorBody",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message"],
            "properties": {
                "code": {"type": "string", "description": "stable, machine-readable"},
                "message": {"type": "string", "description": "names the field and the reason"},
                "details": {"description": "per-field reasons or other facts; may be null"},
            },
        }
    },
}
COMMON = {
    "413": "The request body is too large",
    "422": "Invalid input: details name each field and the reason",
    "500": "An unexpected error; the body carries the request id it was logged under",
}
AUTHENTICATED = {
    "401": "Missing, invalid, revoked or expired token",
    "403": "The caller's role lacks the capability this route needs",
    "404": "Not found, or not visible to the caller",
    "409": "Conflicts with the current state (taken slot, stale version, duplicate)",
    "429": "Too many requests; see Retry-After",
}
METHODS = {"get", "put", "post", "patch", "delete"}
OTHER = {
    "400": "The request cannot be completed as sent (the body's message says why)",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route that answers error statuses beyond those every route documents
    (a public route's 404, a signed webhook's 401); each gets the error body's schema."""
    descriptions = COMMON | AUTHENTICATED | OTHER
    return {status: {"description": descriptions[str(status)]} for status in statuses}


def _response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    }


def _with_errors(document: dict[str, Any]) -> dict[str, Any]:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorBody"] = ERROR_SCHEMA
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            responses = operation.setdefault("responses", {})
            wanted = dict(COMMON)
            if operation.get("security") or path == "/api/v1/auth/login":
                wanted |= AUTHENTICATED
            for status, description in wanted.items():
                if status == "422" or status not in responses:
                    responses[status] = _response(description)
            for status, response in responses.items():
                # An error a route declares by description alone has the common error body.
                if status.startswith(("4", "5")) and "content" not in response:
                    responses[status] = _response(response.get("description", ""))
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    return document


def document_errors(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _with_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
