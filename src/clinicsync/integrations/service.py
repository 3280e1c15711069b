"""The rules for integrations: catalogue loading, tenant CRUD, validation, credentials.

Every change to an integration, its functions or its maps is checked by rebuilding the
whole definition from the rows; a change that leaves an unusable definition is refused
with the definition's own error (and the transaction rolls back, so nothing is stored).
A successful change bumps the integration's revision, which executors compare against
their cache.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.db.engine import session_scope
from clinicsync.errors import Conflict, Forbidden, NotFound, ValidationFailed
from clinicsync.integrations import loader
from clinicsync.integrations.credentials import SecretCipher, hints
from clinicsync.integrations.definitions import (
    DefinitionError,
    ProviderDefinition,
    shipped_definitions,
)
from clinicsync.integrations.models import (
    ApiCredential,
    ExternalIntegration,
    IntegrationEndpoint,
    IntegrationParameterMap,
)
from clinicsync.integrations.outbound import origin
from clinicsync.integrations.runtime import render
from clinicsync.integrations.schemas import (
    CredentialCreate,
    CredentialUpdate,
    EndpointCreate,
    EndpointOut,
    IntegrationCreate,
    IntegrationUpdate,
    ParameterMapCreate,
    ParameterMapUpdate,
)

# ---- loading rows -----------------------------------------------------------------


async def load_parts(session: AsyncSession, row: ExternalIntegration) -> loader.Parts:
    endpoints = list(
        (
            await session.scalars(
                select(IntegrationEndpoint)
                .where(IntegrationEndpoint.integration_id == row.id)
                .order_by(IntegrationEndpoint.function_name)
            )
        ).all()
    )
    maps = list(
        (
            await session.scalars(
                select(IntegrationParameterMap)
                .where(IntegrationParameterMap.integration_id == row.id)
                .order_by(IntegrationParameterMap.position, IntegrationParameterMap.internal_name)
            )
        ).all()
    )
    return row, endpoints, maps


async def build_definition(session: AsyncSession, row: ExternalIntegration) -> ProviderDefinition:
    tenant = await load_parts(session, row)
    catalogue = None
    if row.catalogue_id is not None:
        catalogue_row = await session.get(ExternalIntegration, row.catalogue_id)
        if catalogue_row is not None:
            catalogue = await load_parts(session, catalogue_row)
    return loader.build_definition(tenant, catalogue)


def _refuse(error: DefinitionError) -> ValidationFailed:
    first_field, first_reason = error.problems[0]
    return ValidationFailed(first_field or "definition", first_reason, details=error.as_details())


async def _validate_and_bump(session: AsyncSession, row: ExternalIntegration) -> ProviderDefinition:
    await session.flush()
    try:
        definition = await build_definition(session, row)
    except DefinitionError as exc:
        raise _refuse(exc) from None
    row.revision += 1
    await session.flush()
    return definition


# ---- writing definitions ----------------------------------------------------------


def definition_hash(definition: ProviderDefinition) -> str:
    canonical = json.dumps(definition.model_dump(mode="json", by_alias=True), sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


async def _replace_functions(
    session: AsyncSession, row: ExternalIntegration, definition: ProviderDefinition
) -> None:
    for old in (
        await session.scalars(select(IntegrationEndpoint).where(IntegrationEndpoint.integration_id == row.id))
    ).all():
        await session.delete(old)
    for old_map in (
        await session.scalars(
            select(IntegrationParameterMap).where(IntegrationParameterMap.integration_id == row.id)
        )
    ).all():
        await session.delete(old_map)
    await session.flush()
    for columns in loader.provider_map_columns(definition):
        session.add(
            IntegrationParameterMap(integration_id=row.id, organization_id=row.organization_id, **columns)
        )
    for name, endpoint in definition.functions.items():
        endpoint_columns, maps = loader.endpoint_columns(name, endpoint)
        endpoint_row = IntegrationEndpoint(
            id=uuid.uuid4(), integration_id=row.id, organization_id=row.organization_id, **endpoint_columns
        )
        session.add(endpoint_row)
        for columns in maps:
            session.add(
                IntegrationParameterMap(
                    integration_id=row.id,
                    endpoint_id=endpoint_row.id,
                    organization_id=row.organization_id,
                    **columns,
                )
            )
    await session.flush()


async def save_definition(
    session: AsyncSession,
    definition: ProviderDefinition,
    *,
    organization_id: uuid.UUID | None,
    source: str,
    location_label: str = "",
    replace: bool = False,
) -> ExternalIntegration:
    """Store a whole definition as a catalogue provider (no organization) or a tenant's own."""
    query = select(ExternalIntegration).where(ExternalIntegration.provider_key == definition.key)
    if organization_id is None:
        query = query.where(ExternalIntegration.organization_id.is_(None))
    else:
        query = query.where(
            ExternalIntegration.organization_id == organization_id,
            ExternalIntegration.location_label == location_label,
        )
    row = (await session.scalars(query)).first()
    if row is not None and not replace:
        raise Conflict(f"an integration {definition.key!r} already exists here; replace it to change it")
    columns = loader.integration_columns(definition)
    columns["options"]["definition_hash"] = definition_hash(definition)
    if row is None:
        row = ExternalIntegration(
            id=uuid.uuid4(),
            organization_id=organization_id,
            location_label=location_label,
            source=source,
            enabled=True,
            revision=0,
            **columns,
        )
        session.add(row)
    else:
        for key, value in columns.items():
            setattr(row, key, value)
        row.catalogue_id = None
        row.source = source
    await session.flush()
    await _replace_functions(session, row, definition)
    await _validate_and_bump(session, row)
    return row


async def sync_catalogue(
    session: AsyncSession, definitions: list[ProviderDefinition] | None = None
) -> dict[str, str]:
    """Load the shipped definitions into the catalogue; returns key -> added/updated/unchanged."""
    outcome: dict[str, str] = {}
    for definition in definitions if definitions is not None else shipped_definitions():
        existing = (
            await session.scalars(
                select(ExternalIntegration).where(
                    ExternalIntegration.provider_key == definition.key,
                    ExternalIntegration.organization_id.is_(None),
                )
            )
        ).first()
        if existing is not None and (existing.options or {}).get("definition_hash") == definition_hash(
            definition
        ):
            outcome[definition.key] = "unchanged"
            continue
        await save_definition(session, definition, organization_id=None, source="yaml", replace=True)
        outcome[definition.key] = "updated" if existing is not None else "added"
    return outcome


# ---- tenant integrations ----------------------------------------------------------


async def catalogue_provider(session: AsyncSession, key: str) -> ExternalIntegration | None:
    return (
        await session.scalars(
            select(ExternalIntegration).where(
                ExternalIntegration.provider_key == key, ExternalIntegration.organization_id.is_(None)
            )
        )
    ).first()


async def list_integrations(session: AsyncSession, organization_id: uuid.UUID) -> list[ExternalIntegration]:
    rows = await session.scalars(
        select(ExternalIntegration)
        .where(
            or_(
                ExternalIntegration.organization_id == organization_id,
                ExternalIntegration.organization_id.is_(None),
            )
        )
        .order_by(ExternalIntegration.organization_id.is_(None), ExternalIntegration.provider_key)
    )
    return list(rows.all())


async def get_integration(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID, *, writable: bool = False
) -> ExternalIntegration:
    row = await session.get(ExternalIntegration, integration_id)
    if row is None or (row.organization_id is not None and row.organization_id != organization_id):
        raise NotFound(f"integration {integration_id} not found")
    if writable and row.organization_id is None:
        raise Forbidden("catalogue providers are read-only; create an integration of your own to change it")
    return row


def _apply_common(row: ExternalIntegration, data: dict[str, Any]) -> None:
    simple = ("display_name", "location_label", "enabled", "base_url", "settings", "description", "category")
    for key in simple:
        if key in data and data[key] is not None:
            setattr(row, key, data[key])
    if data.get("auth") is not None:
        auth = dict(data["auth"])
        row.auth_type = auth.pop("type", "none")
        row.auth_settings = auth
    if data.get("rate_limit") is not None:
        rate = data["rate_limit"]
        row.rate_limit_requests = rate["requests"]
        row.rate_limit_period_seconds = rate["per_seconds"]
        row.rate_limit_burst = rate.get("burst")
    if data.get("pagination") is not None:
        pagination = dict(data["pagination"])
        row.pagination_style = pagination.pop("style", "none")
        row.pagination_settings = pagination
    options = dict(row.options or {})
    for key in ("headers", "retry", "timeout_seconds", "test_function", "sync"):
        if data.get(key) is not None:
            options[key] = data[key]
    row.options = options


def _dump(payload: IntegrationCreate | IntegrationUpdate) -> dict[str, Any]:
    # Only what the admin set is stored; the definition's defaults fill the rest when it is read.
    return payload.model_dump(mode="json", by_alias=True, exclude_unset=True)


async def create_integration(
    session: AsyncSession, organization_id: uuid.UUID, payload: IntegrationCreate
) -> ExternalIntegration:
    catalogue = await catalogue_provider(session, payload.provider_key)
    if catalogue is None and not payload.base_url:
        raise ValidationFailed(
            "base_url", f"{payload.provider_key!r} is not in the catalogue, so its base_url is required"
        )
    row = ExternalIntegration(
        id=uuid.uuid4(),
        organization_id=organization_id,
        catalogue_id=catalogue.id if catalogue else None,
        provider_key=payload.provider_key,
        display_name=payload.display_name or (catalogue.display_name if catalogue else payload.provider_key),
        category=payload.category or (catalogue.category if catalogue else "pms"),
        location_label=payload.location_label,
        enabled=payload.enabled,
        source="api",
        revision=0,
        auth_settings={},
        pagination_settings={},
        settings={},
        options={},
    )
    if catalogue is None:
        row.auth_type = "none"
        row.pagination_style = "none"
    _apply_common(row, _dump(payload))
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(
            f"this organization already has a {payload.provider_key!r} integration"
            + (f" at {payload.location_label!r}" if payload.location_label else "")
            + "; give a different location_label"
        ) from None
    await _validate_and_bump(session, row)
    return row


async def update_integration(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID, payload: IntegrationUpdate
) -> ExternalIntegration:
    row = await get_integration(session, organization_id, integration_id, writable=True)
    _apply_common(row, _dump(payload))
    await _validate_and_bump(session, row)
    return row


async def delete_integration(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID
) -> None:
    row = await get_integration(session, organization_id, integration_id, writable=True)
    await session.delete(row)
    await session.flush()


# ---- endpoints and maps -----------------------------------------------------------


async def list_endpoints(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID
) -> list[IntegrationEndpoint]:
    row = await get_integration(session, organization_id, integration_id)
    return (await load_parts(session, row))[1]


async def endpoint_views(
    session: AsyncSession, integration: ExternalIntegration, endpoints: list[IntegrationEndpoint]
) -> list[EndpointOut]:
    """Endpoint rows with the mapping each one runs with (its maps and the provider-wide ones)."""
    definition = await build_definition(session, integration)
    views = []
    for endpoint in endpoints:
        view = EndpointOut.model_validate(endpoint)
        spec = definition.functions.get(endpoint.function_name)
        view.mapping = definition.effective_endpoint(spec) if spec is not None else None
        views.append(view)
    return views


async def _endpoint(
    session: AsyncSession, row: ExternalIntegration, endpoint_id: uuid.UUID
) -> IntegrationEndpoint:
    endpoint = await session.get(IntegrationEndpoint, endpoint_id)
    if endpoint is None or endpoint.integration_id != row.id:
        raise NotFound(f"function {endpoint_id} not found in integration {row.id}")
    return endpoint


async def _write_endpoint(
    session: AsyncSession,
    row: ExternalIntegration,
    payload: EndpointCreate,
    existing: IntegrationEndpoint | None,
) -> IntegrationEndpoint:
    columns, maps = loader.endpoint_columns(payload.function_name, payload)
    if existing is None:
        clash = (
            await session.scalars(
                select(IntegrationEndpoint).where(
                    IntegrationEndpoint.integration_id == row.id,
                    IntegrationEndpoint.function_name == payload.function_name,
                )
            )
        ).first()
        if clash is not None:
            raise Conflict(f"function {payload.function_name!r} already exists; update it instead")
        endpoint = IntegrationEndpoint(
            id=uuid.uuid4(), integration_id=row.id, organization_id=row.organization_id
        )
        session.add(endpoint)
    else:
        endpoint = existing
        for old in (
            await session.scalars(
                select(IntegrationParameterMap).where(IntegrationParameterMap.endpoint_id == endpoint.id)
            )
        ).all():
            await session.delete(old)
    for key, value in columns.items():
        setattr(endpoint, key, value)
    await session.flush()
    for map_columns in maps:
        session.add(
            IntegrationParameterMap(
                integration_id=row.id,
                endpoint_id=endpoint.id,
                organization_id=row.organization_id,
                **map_columns,
            )
        )
    await _validate_and_bump(session, row)
    return endpoint


async def create_endpoint(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID, payload: EndpointCreate
) -> IntegrationEndpoint:
    row = await get_integration(session, organization_id, integration_id, writable=True)
    return await _write_endpoint(session, row, payload, None)


async def replace_endpoint(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    payload: EndpointCreate,
) -> IntegrationEndpoint:
    row = await get_integration(session, organization_id, integration_id, writable=True)
    return await _write_endpoint(session, row, payload, await _endpoint(session, row, endpoint_id))


async def delete_endpoint(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID, endpoint_id: uuid.UUID
) -> None:
    row = await get_integration(session, organization_id, integration_id, writable=True)
    await session.delete(await _endpoint(session, row, endpoint_id))
    await _validate_and_bump(session, row)


async def list_maps(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID
) -> list[IntegrationParameterMap]:
    row = await get_integration(session, organization_id, integration_id)
    return (await load_parts(session, row))[2]


async def create_map(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID, payload: ParameterMapCreate
) -> IntegrationParameterMap:
    row = await get_integration(session, organization_id, integration_id, writable=True)
    if payload.endpoint_id is not None:
        await _endpoint(session, row, payload.endpoint_id)
    mapping = IntegrationParameterMap(
        id=uuid.uuid4(), integration_id=row.id, organization_id=row.organization_id, **payload.model_dump()
    )
    session.add(mapping)
    await _validate_and_bump(session, row)
    return mapping


async def _map(session: AsyncSession, row: ExternalIntegration, map_id: uuid.UUID) -> IntegrationParameterMap:
    mapping = await session.get(IntegrationParameterMap, map_id)
    if mapping is None or mapping.integration_id != row.id:
        raise NotFound(f"parameter map {map_id} not found in integration {row.id}")
    return mapping


async def update_map(
    session: AsyncSession,
    organization_id: uuid.UUID,
    integration_id: uuid.UUID,
    map_id: uuid.UUID,
    payload: ParameterMapUpdate,
) -> IntegrationParameterMap:
    row = await get_integration(session, organization_id, integration_id, writable=True)
    mapping = await _map(session, row, map_id)
    for key, value in payload.model_dump(exclude_unset=True).items():
        setattr(mapping, key, value)
    await _validate_and_bump(session, row)
    return mapping


async def delete_map(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID, map_id: uuid.UUID
) -> None:
    row = await get_integration(session, organization_id, integration_id, writable=True)
    await session.delete(await _map(session, row, map_id))
    await _validate_and_bump(session, row)


# ---- credentials ------------------------------------------------------------------


async def list_credentials(session: AsyncSession, organization_id: uuid.UUID) -> list[ApiCredential]:
    rows = await session.scalars(
        select(ApiCredential)
        .where(ApiCredential.organization_id == organization_id)
        .order_by(ApiCredential.provider_key, ApiCredential.label)
    )
    return list(rows.all())


async def get_credential(
    session: AsyncSession, organization_id: uuid.UUID, credential_id: uuid.UUID
) -> ApiCredential:
    row = await session.get(ApiCredential, credential_id)
    if row is None or row.organization_id != organization_id:
        raise NotFound(f"credential {credential_id} not found")
    return row


async def _check_integration_link(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID | None, provider_key: str
) -> None:
    if integration_id is None:
        return
    row = await get_integration(session, organization_id, integration_id, writable=True)
    if row.provider_key != provider_key:
        raise ValidationFailed(
            "integration_id", f"that integration is {row.provider_key!r}, not {provider_key!r}"
        )


async def current_origin(
    session: AsyncSession, organization_id: uuid.UUID, integration_id: uuid.UUID | None, provider_key: str
) -> str | None:
    """The scheme://host:port a credential's secrets would be sent to now (None: no provider yet)."""
    row = await session.get(ExternalIntegration, integration_id) if integration_id is not None else None
    if row is None:
        row = (
            await session.scalars(
                select(ExternalIntegration)
                .where(
                    ExternalIntegration.organization_id == organization_id,
                    ExternalIntegration.provider_key == provider_key,
                )
                .order_by(ExternalIntegration.location_label)
            )
        ).first() or await catalogue_provider(session, provider_key)
    if row is None:
        return None
    definition = await build_definition(session, row)
    return origin(render(definition.base_url, dict(definition.settings)))


async def create_credential(
    session: AsyncSession, organization_id: uuid.UUID, payload: CredentialCreate, cipher: SecretCipher
) -> ApiCredential:
    await _check_integration_link(session, organization_id, payload.integration_id, payload.provider_key)
    row = ApiCredential(
        id=uuid.uuid4(),
        organization_id=organization_id,
        integration_id=payload.integration_id,
        provider_key=payload.provider_key,
        label=payload.label,
        secret_ciphertext=cipher.encrypt(payload.secrets),
        secret_hints=hints(payload.secrets),
        secret_version=1,
        bound_host=await current_origin(
            session, organization_id, payload.integration_id, payload.provider_key
        ),
    )
    session.add(row)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(
            f"a {payload.provider_key!r} credential labelled {payload.label!r} already exists"
        ) from None
    return row


async def update_credential(
    session: AsyncSession,
    organization_id: uuid.UUID,
    credential_id: uuid.UUID,
    payload: CredentialUpdate,
    cipher: SecretCipher,
) -> ApiCredential:
    row = await get_credential(session, organization_id, credential_id)
    data = payload.model_dump(exclude_unset=True)
    if "integration_id" in data:
        await _check_integration_link(session, organization_id, payload.integration_id, row.provider_key)
        row.integration_id = payload.integration_id
    if payload.label is not None:
        row.label = payload.label
    if payload.secrets is not None:
        row.secret_ciphertext = cipher.encrypt(payload.secrets)
        row.secret_hints = hints(payload.secrets)
        row.secret_version += 1
        # Secrets typed in again are bound to where the credential points now.
        row.bound_host = await current_origin(session, organization_id, row.integration_id, row.provider_key)
        row.last_test_ok = None
        row.last_test_error = None
    await session.flush()
    return row


async def delete_credential(
    session: AsyncSession, organization_id: uuid.UUID, credential_id: uuid.UUID
) -> None:
    await session.delete(await get_credential(session, organization_id, credential_id))
    await session.flush()


async def credential_for(
    session: AsyncSession, organization_id: uuid.UUID, integration: ExternalIntegration
) -> ApiCredential | None:
    """The integration's own credential, else the organization's one for that provider."""
    linked = (
        await session.scalars(
            select(ApiCredential).where(
                ApiCredential.organization_id == organization_id,
                ApiCredential.integration_id == integration.id,
            )
        )
    ).first()
    if linked is not None:
        return linked
    return (
        await session.scalars(
            select(ApiCredential)
            .where(
                ApiCredential.organization_id == organization_id,
                ApiCredential.provider_key == integration.provider_key,
                ApiCredential.integration_id.is_(None),
            )
            .order_by(ApiCredential.created_at)
        )
    ).first()


async def load_catalogue(sessionmaker: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    """Bring the catalogue in line with the shipped definitions (run at start)."""
    try:
        async with session_scope(sessionmaker) as session:
            return await sync_catalogue(session)
    except IntegrityError:
        # Another process loaded the same definitions at the same moment; theirs stand.
        return {}
