"""Translation between a provider definition and its rows, and the merge of tenant overrides.

Writing: a definition (from YAML or an admin payload) becomes one `external_integrations`
row, an `integration_endpoints` row per function, and `integration_parameter_maps` rows for
every rename or transform. Reading: the rows of a tenant integration, laid over its
catalogue provider's, become a definition again, validated exactly as a file would be.
"""

from __future__ import annotations

from typing import Any

from clinicsync.integrations.definitions import (
    EndpointSpec,
    ProviderDefinition,
    TransformStep,
    parse_definition,
)
from clinicsync.integrations.models import ExternalIntegration, IntegrationEndpoint, IntegrationParameterMap


def steps_to_columns(steps: list[TransformStep]) -> tuple[str | None, dict[str, Any]]:
    if not steps:
        return None, {}
    if len(steps) == 1:
        return steps[0].name, dict(steps[0].args)
    return "chain", {"steps": [{"name": step.name, "args": step.args} for step in steps]}


def columns_to_steps(transform: str | None, args: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not transform:
        return []
    if transform == "chain":
        return list((args or {}).get("steps") or [])
    return [{"name": transform, "args": args or {}}]


# ---- definition -> rows -----------------------------------------------------------


def integration_columns(definition: ProviderDefinition) -> dict[str, Any]:
    rate = definition.rate_limit
    return {
        "provider_key": definition.key,
        "display_name": definition.display_name,
        "category": definition.category,
        "description": definition.description,
        "base_url": definition.base_url,
        "auth_type": definition.auth.type,
        "auth_settings": definition.auth.model_dump(by_alias=True, exclude={"type"}, exclude_defaults=True),
        "rate_limit_requests": rate.requests if rate else None,
        "rate_limit_period_seconds": rate.per_seconds if rate else None,
        "rate_limit_burst": rate.burst if rate else None,
        "pagination_style": definition.pagination.style.value,
        "pagination_settings": definition.pagination.model_dump(exclude={"style"}, exclude_defaults=True),
        "settings": dict(definition.settings),
        "options": {
            "headers": dict(definition.headers),
            "retry": definition.retry.model_dump(exclude_defaults=True),
            "timeout_seconds": definition.timeout_seconds,
            "test_function": definition.test_function,
            "sync": sync_columns(definition),
            "webhooks": definition.webhooks.model_dump(mode="json", exclude_defaults=True)
            if definition.webhooks
            else None,
        },
    }


def sync_columns(definition: ProviderDefinition) -> dict[str, Any]:
    return {
        operation.value: spec.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        for operation, spec in definition.sync.items()
    }


def endpoint_columns(name: str, endpoint: EndpointSpec) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The endpoint row's columns and its parameter-map rows (without ids)."""
    parameters: list[dict[str, Any]] = []
    maps: list[dict[str, Any]] = []
    for position, param in enumerate(endpoint.params):
        entry: dict[str, Any] = {"name": param.name, "in": param.location.value, "required": param.required}
        for key in ("default", "constant", "description"):
            if getattr(param, key) is not None:
                entry[key] = getattr(param, key)
        parameters.append(entry)
        if param.external or param.transform:
            transform, args = steps_to_columns(param.transform)
            maps.append(
                {
                    "direction": "in",
                    "internal_name": param.name,
                    "external_name": param.external_name,
                    "transform": transform,
                    "transform_args": args,
                    "position": position,
                }
            )
    field_map: dict[str, Any] = {}
    for position, (internal, field) in enumerate(endpoint.response.fields.items()):
        field_map[internal] = (
            field.source if field.default is None else {"from": field.source, "default": field.default}
        )
        if field.transform:
            transform, args = steps_to_columns(field.transform)
            maps.append(
                {
                    "direction": "out",
                    "internal_name": internal,
                    "external_name": field.source,
                    "transform": transform,
                    "transform_args": args,
                    "position": position,
                }
            )
    options: dict[str, Any] = {"body_encoding": endpoint.body_encoding}
    if endpoint.headers:
        options["headers"] = dict(endpoint.headers)
    if endpoint.response.include_unmapped:
        options["include_unmapped"] = True
    if endpoint.response.error_message_path:
        options["error_message_path"] = endpoint.response.error_message_path
    if endpoint.response.next_sync_token:
        options["next_sync_token"] = endpoint.response.next_sync_token
    columns = {
        "function_name": name,
        "method": endpoint.method,
        "path_template": endpoint.path,
        "description": endpoint.description,
        "parameters": parameters,
        "pagination": endpoint.pagination.model_dump(exclude_defaults=True)
        | {"style": endpoint.pagination.style.value}
        if endpoint.pagination is not None
        else None,
        "response_selector": endpoint.response.records,
        "response_single": endpoint.response.single,
        "response_field_map": field_map,
        "retry_safe": endpoint.retry_safe,
        "options": options,
    }
    return columns, maps


def provider_map_columns(definition: ProviderDefinition) -> list[dict[str, Any]]:
    rows = []
    for position, shared in enumerate(definition.parameter_maps):
        transform, args = steps_to_columns(shared.transform)
        rows.append(
            {
                "direction": shared.direction.value,
                "internal_name": shared.internal,
                "external_name": shared.external,
                "transform": transform,
                "transform_args": args,
                "position": position,
            }
        )
    return rows


# ---- rows -> definition -----------------------------------------------------------


def _endpoint_document(endpoint: IntegrationEndpoint, maps: list[IntegrationParameterMap]) -> dict[str, Any]:
    maps_in = {m.internal_name: m for m in maps if m.direction == "in"}
    maps_out = {m.internal_name: m for m in maps if m.direction == "out"}
    params = []
    for entry in endpoint.parameters or []:
        param = dict(entry)
        mapped = maps_in.get(str(param.get("name")))
        if mapped is not None:
            param["external"] = mapped.external_name
            param["transform"] = columns_to_steps(mapped.transform, mapped.transform_args)
        params.append(param)
    fields: dict[str, Any] = {}
    for internal, source in (endpoint.response_field_map or {}).items():
        field = dict(source) if isinstance(source, dict) else {"from": source}
        mapped = maps_out.get(internal)
        if mapped is not None:
            field["transform"] = columns_to_steps(mapped.transform, mapped.transform_args)
        fields[internal] = field
    # An out-map with no field entry adds a field of its own.
    for internal, mapped in maps_out.items():
        if internal not in fields:
            fields[internal] = {
                "from": mapped.external_name,
                "transform": columns_to_steps(mapped.transform, mapped.transform_args),
            }
    options = endpoint.options or {}
    document: dict[str, Any] = {
        "method": endpoint.method,
        "path": endpoint.path_template,
        "description": endpoint.description,
        "params": params,
        "response": {
            "records": endpoint.response_selector,
            "single": endpoint.response_single,
            "fields": fields,
            "include_unmapped": bool(options.get("include_unmapped", False)),
            "error_message_path": options.get("error_message_path"),
            "next_sync_token": options.get("next_sync_token"),
        },
        "retry_safe": endpoint.retry_safe,
        "body_encoding": options.get("body_encoding", "json"),
        "headers": options.get("headers") or {},
    }
    if endpoint.pagination is not None:
        document["pagination"] = endpoint.pagination
    return document


def _provider_document(row: ExternalIntegration) -> dict[str, Any]:
    options = row.options or {}
    document: dict[str, Any] = {
        "key": row.provider_key,
        "display_name": row.display_name,
        "category": row.category,
        "description": row.description,
        "base_url": row.base_url,
        "auth": {"type": row.auth_type or "none", **(row.auth_settings or {})},
        "headers": options.get("headers") or {},
        "settings": row.settings or {},
        "retry": options.get("retry") or {},
        "pagination": {"style": row.pagination_style or "none", **(row.pagination_settings or {})},
        "test_function": options.get("test_function"),
        "sync": options.get("sync") or {},
        "webhooks": options.get("webhooks"),
    }
    if options.get("timeout_seconds"):
        document["timeout_seconds"] = options["timeout_seconds"]
    if row.rate_limit_requests and row.rate_limit_period_seconds:
        document["rate_limit"] = {
            "requests": row.rate_limit_requests,
            "per_seconds": row.rate_limit_period_seconds,
            "burst": row.rate_limit_burst,
        }
    return document


def _overlay(base: dict[str, Any], row: ExternalIntegration) -> dict[str, Any]:
    """A tenant row's own values over its catalogue provider's."""
    document = dict(base)
    document["display_name"] = row.display_name or base["display_name"]
    if row.base_url:
        document["base_url"] = row.base_url
    if row.auth_type:
        document["auth"] = {"type": row.auth_type, **(row.auth_settings or {})}
    elif row.auth_settings:
        document["auth"] = {**base["auth"], **row.auth_settings}
    if row.pagination_style:
        document["pagination"] = {"style": row.pagination_style, **(row.pagination_settings or {})}
    if row.rate_limit_requests and row.rate_limit_period_seconds:
        document["rate_limit"] = {
            "requests": row.rate_limit_requests,
            "per_seconds": row.rate_limit_period_seconds,
            "burst": row.rate_limit_burst,
        }
    options = row.options or {}
    if options.get("headers"):
        document["headers"] = {**base.get("headers", {}), **options["headers"]}
    for key in ("retry", "timeout_seconds", "test_function", "webhooks"):
        if options.get(key):
            document[key] = options[key]
    document["settings"] = {**base.get("settings", {}), **(row.settings or {})}
    # A clinic may serve an operation with a function of its own, operation by operation.
    document["sync"] = {**base.get("sync", {}), **(options.get("sync") or {})}
    return document


Parts = tuple[ExternalIntegration, list[IntegrationEndpoint], list[IntegrationParameterMap]]


def _functions_and_maps(parts: Parts) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    _row, endpoints, maps = parts
    functions = {
        endpoint.function_name: _endpoint_document(
            endpoint, [m for m in maps if m.endpoint_id == endpoint.id]
        )
        for endpoint in endpoints
    }
    shared = [
        {
            "internal": m.internal_name,
            "external": m.external_name,
            "direction": m.direction,
            "transform": columns_to_steps(m.transform, m.transform_args),
        }
        for m in sorted(maps, key=lambda m: m.position)
        if m.endpoint_id is None
    ]
    return functions, shared


def definition_document(tenant: Parts, catalogue: Parts | None = None) -> dict[str, Any]:
    if catalogue is None:
        document = _provider_document(tenant[0])
        functions, shared = _functions_and_maps(tenant)
    else:
        document = _overlay(_provider_document(catalogue[0]), tenant[0])
        functions, shared = _functions_and_maps(catalogue)
        own_functions, own_shared = _functions_and_maps(tenant)
        functions.update(own_functions)
        overridden = {(m["internal"], m["direction"]) for m in own_shared}
        shared = [m for m in shared if (m["internal"], m["direction"]) not in overridden] + own_shared
    document["functions"] = functions
    document["parameter_maps"] = shared
    return document


def build_definition(tenant: Parts, catalogue: Parts | None = None) -> ProviderDefinition:
    row = tenant[0]
    source = f"integration {row.provider_key}" + (f" ({row.location_label})" if row.location_label else "")
    return parse_definition(definition_document(tenant, catalogue), source)
