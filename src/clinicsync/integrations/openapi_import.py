"""Draft a provider definition from an OpenAPI 3 document.

The draft has every operation as a function (named from its operationId), its path,
query, header and JSON-body parameters with required flags, the auth scheme, the server's
variables as settings, and a guess at pagination (query parameters, or a `links.next` in
the response) and at where records are in the response (a list's array; a single object's
envelope such as `data`, else the whole body). Internal names are the provider's
names in snake_case; a person then renames them to clinicsync's vocabulary, adds
transforms and picks the test function. The draft always validates as a definition.
"""

from __future__ import annotations

import re
from typing import Any

from clinicsync.integrations.definitions import DefinitionError, parse_definition

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


class OpenAPIImportError(ValueError):
    pass


def snake(name: str) -> str:
    text = re.sub(r"[^0-9A-Za-z]+", "_", name)
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)
    text = re.sub(r"_+", "_", text).strip("_").lower()
    if not text or not text[0].isalpha():
        text = "p_" + text
    return text


def _resolve(document: dict[str, Any], node: Any, depth: int = 0) -> Any:
    if isinstance(node, dict) and "$ref" in node and depth < 20:
        ref = str(node["$ref"])
        if not ref.startswith("#/"):
            return {}
        target: Any = document
        for part in ref[2:].split("/"):
            target = (
                target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
            )
        return _resolve(document, target, depth + 1)
    return node


def _auth(document: dict[str, Any]) -> dict[str, Any]:
    schemes = (document.get("components") or {}).get("securitySchemes") or {}
    for raw in schemes.values():
        scheme = _resolve(document, raw)
        kind = scheme.get("type")
        if kind == "apiKey" and scheme.get("in") in ("header", "query"):
            return {"type": "api_key", "in": scheme["in"], "name": scheme.get("name", "X-API-Key")}
        if kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
            return {"type": "bearer"}
        if kind == "http" and str(scheme.get("scheme", "")).lower() == "basic":
            return {"type": "basic"}
        if kind == "oauth2":
            flows = scheme.get("flows") or {}
            if "clientCredentials" in flows and flows["clientCredentials"].get("tokenUrl"):
                auth: dict[str, Any] = {
                    "type": "oauth2_client_credentials",
                    "token_url": flows["clientCredentials"]["tokenUrl"],
                }
                scopes = flows["clientCredentials"].get("scopes") or {}
                if scopes:
                    auth["scope"] = " ".join(scopes)
                return auth
    return {"type": "none"}


def _pagination(query_names: set[str]) -> dict[str, Any] | None:
    lowered = {name.lower(): name for name in query_names}
    if "limit" in lowered and "offset" in lowered:
        return {"style": "offset", "limit_param": lowered["limit"], "offset_param": lowered["offset"]}
    if "page" in lowered:
        per_page = next(
            (lowered[n] for n in ("per_page", "pagesize", "page_size", "limit") if n in lowered), None
        )
        return {"style": "page", "page_param": lowered["page"], "per_page_param": per_page}
    for token in ("pagetoken", "page_token", "cursor"):
        if token in lowered:
            return {"style": "token", "token_param": lowered[token], "per_page_param": None}
    return None


def _response_schema(document: dict[str, Any], operation: dict[str, Any]) -> dict[str, Any] | None:
    responses = operation.get("responses") or {}
    for status in ("200", "201", 200, 201):
        response = _resolve(document, responses.get(status))
        if not isinstance(response, dict):
            continue
        schema = _resolve(
            document, ((response.get("content") or {}).get("application/json") or {}).get("schema")
        )
        return schema if isinstance(schema, dict) else None
    return None


def _properties(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, dict[str, Any]]:
    properties: dict[str, dict[str, Any]] = {}
    for part in [schema, *[_resolve(document, s) for s in schema.get("allOf") or []]]:
        if isinstance(part, dict):
            for name, prop in (part.get("properties") or {}).items():
                resolved = _resolve(document, prop)
                properties[str(name)] = resolved if isinstance(resolved, dict) else {}
    return properties


def _is_object(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" or bool(schema.get("properties")) or bool(schema.get("allOf"))


ENVELOPE_NAMES = ("data", "result", "results", "item", "items", "record", "records", "resource")


def _records(document: dict[str, Any], schema: dict[str, Any] | None, single: bool) -> str | None:
    """Where the record (single) or the list of records is in the response body."""
    if schema is None or schema.get("type") == "array":
        return None
    properties = _properties(document, schema)
    if single:
        # An object that wraps the record ({"data": {...}}) names it; a record's own lists
        # (a patient's phone numbers) are not records.
        wrappers = [name for name in ENVELOPE_NAMES if name in properties and _is_object(properties[name])]
        return wrappers[0] if wrappers and len(properties) <= 3 else None
    for name, prop in properties.items():
        if prop.get("type") == "array":
            return name
    return None


def _next_link(document: dict[str, Any], schema: dict[str, Any] | None) -> str | None:
    """`links.next` (or `_links.next`, `next`) in a list response: the provider pages by link."""
    if schema is None:
        return None
    properties = _properties(document, schema)
    for container in ("links", "_links"):
        if container in properties and "next" in _properties(document, properties[container]):
            nested = _properties(document, properties[container])["next"]
            return (
                f"{container}.next.href" if "href" in _properties(document, nested) else f"{container}.next"
            )
    if "next" in properties and properties["next"].get("type") == "string":
        return "next"
    return None


def _function(
    document: dict[str, Any], path: str, method: str, operation: dict[str, Any], shared: list[Any]
) -> dict[str, Any]:
    params: list[dict[str, Any]] = []
    seen: set[str] = set()
    query_names: set[str] = set()
    for raw in [*shared, *(operation.get("parameters") or [])]:
        parameter = _resolve(document, raw)
        location = parameter.get("in")
        external = parameter.get("name")
        if location not in ("path", "query", "header") or not external:
            continue
        internal = snake(external)
        if internal in seen:
            continue
        seen.add(internal)
        if location == "query":
            query_names.add(external)
        entry: dict[str, Any] = {
            "name": internal,
            "in": location,
            "required": bool(parameter.get("required")),
        }
        if external != internal:
            entry["external"] = external
        if parameter.get("description"):
            entry["description"] = str(parameter["description"])[:300]
        params.append(entry)
    body = _resolve(document, operation.get("requestBody"))
    if isinstance(body, dict):
        content = body.get("content") or {}
        media = content.get("application/json") or content.get("application/x-www-form-urlencoded")
        schema = _resolve(document, (media or {}).get("schema"))
        required = set((schema or {}).get("required") or [])
        for external in (schema or {}).get("properties") or {}:
            internal = snake(external)
            if internal in seen:
                continue
            seen.add(internal)
            entry = {"name": internal, "in": "body", "required": external in required}
            if external != internal:
                entry["external"] = external
            params.append(entry)
    function: dict[str, Any] = {"method": method.upper(), "path": path, "params": params}
    summary = operation.get("summary") or operation.get("description")
    if summary:
        function["description"] = str(summary)[:300]
    if encoding_is_form(body):
        function["body_encoding"] = "form"
    response: dict[str, Any] = {"include_unmapped": True}
    schema = _response_schema(document, operation)
    pagination = _pagination(query_names) if method == "get" else None
    next_link = _next_link(document, schema) if method == "get" else None
    if next_link:
        pagination = {**(pagination or {"style": "page", "per_page_param": None}), "style": "page"}
        pagination["next_link_path"] = next_link
    single = method != "get" or (
        pagination is None and (path.rstrip("/").endswith("}") or _response_is_object(document, schema))
    )
    records = _records(document, schema, single)
    if records:
        response["records"] = records
    if pagination:
        function["pagination"] = pagination
    if single:
        response["single"] = True
    function["response"] = response
    return function


def _response_is_object(document: dict[str, Any], schema: dict[str, Any] | None) -> bool:
    """A GET answering one record (a settings or "me" resource), not a list in an envelope.

    A record has an `id` of its own, or no list in it; an envelope has a list and no id.
    """
    if schema is None or not _is_object(schema):
        return False
    properties = _properties(document, schema)
    identified = any(
        name.lower() == "id" and prop.get("type") != "array" for name, prop in properties.items()
    )
    return identified or not any(prop.get("type") == "array" for prop in properties.values())


def encoding_is_form(body: Any) -> bool:
    if not isinstance(body, dict):
        return False
    content = body.get("content") or {}
    return "application/json" not in content and "application/x-www-form-urlencoded" in content


def _server(document: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The first server's URL, its `{variables}` turned into settings with their defaults.

    `https://{region}.api.example.com/{version}` becomes
    `https://{settings.region}.api.example.com/{settings.version}`, so each clinic's
    integration sets its own region without a new definition.
    """
    servers = document.get("servers") or []
    server = servers[0] if servers and isinstance(servers[0], dict) else {}
    url = str(server.get("url") or "")
    settings: dict[str, Any] = {}
    for name, variable in (server.get("variables") or {}).items():
        name = str(name)
        setting = snake(name)
        default = variable.get("default") if isinstance(variable, dict) else None
        settings[setting] = default
        url = url.replace("{" + name + "}", "{settings." + setting + "}")
    if not url.startswith(("http://", "https://")):
        url = "https://api.example.invalid" + (url if url.startswith("/") else "")
    return url, settings


def draft_definition(document: Any, key: str) -> dict[str, Any]:
    if not isinstance(document, dict) or not str(document.get("openapi", "")).startswith("3"):
        raise OpenAPIImportError("not an OpenAPI 3 document (no `openapi: 3.x` field)")
    info = document.get("info") or {}
    base_url, settings = _server(document)
    functions: dict[str, Any] = {}
    for path, item in (document.get("paths") or {}).items():
        item = _resolve(document, item)
        if not isinstance(item, dict):
            continue
        shared = item.get("parameters") or []
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            name = snake(operation.get("operationId") or f"{method}_{path}")[:90]
            unique, counter = name, 2
            while unique in functions:
                unique, counter = f"{name}_{counter}", counter + 1
            functions[unique] = _function(document, str(path), method, operation, shared)
    if not functions:
        raise OpenAPIImportError("the document has no operations under `paths`")
    draft: dict[str, Any] = {
        "key": key,
        "display_name": str(info.get("title") or key),
        "description": f"Draft imported from OpenAPI {info.get('version', '')}".strip()
        + "; rename parameters to clinicsync's names, add transforms and a test_function.",
        "category": "other",
        "base_url": base_url,
        "settings": settings,
        "auth": _auth(document),
        "functions": functions,
    }
    try:
        parse_definition(draft, f"draft for {key}")
    except DefinitionError as exc:
        raise OpenAPIImportError(f"the draft is not a valid definition:\n{exc}") from None
    return draft
