"""HTTP routes: run provider functions, integration status, admin CRUD and credentials."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request, Response, status
from fastapi.responses import StreamingResponse

from clinicsync.config import Settings
from clinicsync.deps import Requires, SessionDep, get_sessionmaker, writes_in_own_transactions
from clinicsync.errors import ValidationFailed
from clinicsync.integrations import service, streamed
from clinicsync.integrations.connect_api import router as connect_router
from clinicsync.integrations.credentials import cipher_for
from clinicsync.integrations.definitions import DefinitionError, parse_definition_text
from clinicsync.integrations.executor import IntegrationExecutor
from clinicsync.integrations.outbound import OutboundPolicy
from clinicsync.integrations.schemas import (
    CredentialCreate,
    CredentialOut,
    CredentialTestResult,
    CredentialUpdate,
    EndpointCreate,
    EndpointOut,
    ExecuteRequest,
    ExecuteResponse,
    IntegrationCreate,
    IntegrationOut,
    IntegrationStatus,
    IntegrationUpdate,
    ParameterMapCreate,
    ParameterMapOut,
    ParameterMapUpdate,
)
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

IntegrationManager = Annotated[Principal, Requires(Capability.INTEGRATIONS_MANAGE)]
CredentialManager = Annotated[Principal, Requires(Capability.CREDENTIALS_MANAGE)]
PmsRunner = Annotated[Principal, Requires(Capability.PMS_RUN)]

router = APIRouter(tags=["integrations"])
admin = APIRouter(prefix="/api/admin", tags=["integrations admin"])


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def _check_address(request: Request, base_url: str | None) -> None:
    """A base_url naming a loopback, link-local or private address is refused unless allowed."""
    if base_url:
        OutboundPolicy.from_entries(_settings(request).outbound_allowlist).check_literal(base_url)


_STREAMED = (
    "The records, streamed a provider page at a time: `records` is written while later pages are"
    " still fetched, then `count` and `pages`. Errors of the first page answer with their own status;"
    " a page failing after records were sent closes `records` and adds `error` ({code, message,"
    " details}) beside the count of the records that came."
)


def executor(request: Request) -> IntegrationExecutor:
    return IntegrationExecutor(get_sessionmaker(request), _settings(request))


# ---- running functions ------------------------------------------------------------


@router.post(
    "/api/integrations/{integration}",
    response_model=ExecuteResponse,
    dependencies=[Depends(writes_in_own_transactions)],
    responses={200: {"description": _STREAMED}},
)
async def run_function(
    integration: str, payload: ExecuteRequest, principal: PmsRunner, request: Request
) -> StreamingResponse:
    """Run a function of one of the organization's integrations; returns mapped records.

    `integration` is the integration's id, or its provider key while the organization has
    only one integration of that provider (else `location` says which). The records are
    streamed a provider page at a time, so a long read is never held in memory whole.
    """
    stream = await executor(request).stream(
        principal.organization_id,
        integration,
        payload.function,
        payload.params,
        location=payload.location,
        max_records=payload.max_records,
    )
    first = await streamed.first_page(stream)
    return StreamingResponse(
        streamed.json_body(stream, payload.function, first), media_type="application/json"
    )


@router.get("/api/integrations/{integration}", response_model=IntegrationStatus)
async def integration_status(
    integration: str, principal: PmsRunner, request: Request, location: str | None = None
) -> dict[str, Any]:
    """Health of one integration, addressed by id or provider key as for running a function."""
    return await executor(request).status(principal.organization_id, integration, location)


# ---- integrations -----------------------------------------------------------------


@admin.get("/integrations", response_model=list[IntegrationOut])
async def list_integrations(session: SessionDep, principal: IntegrationManager) -> Any:
    """The organization's integrations, then the catalogue providers (read-only)."""
    return await service.list_integrations(session, principal.organization_id)


@admin.post("/integrations", response_model=IntegrationOut, status_code=status.HTTP_201_CREATED)
async def create_integration(
    payload: IntegrationCreate, session: SessionDep, principal: IntegrationManager, request: Request
) -> Any:
    _check_address(request, payload.base_url)
    return await service.create_integration(session, principal.organization_id, payload)


@admin.post("/integrations/definitions", response_model=IntegrationOut, status_code=status.HTTP_201_CREATED)
async def upload_definition(
    session: SessionDep,
    principal: IntegrationManager,
    document: Annotated[
        str, Body(media_type="application/yaml", description="a provider definition (YAML or JSON)")
    ],
    location_label: str = "",
    replace: bool = False,
) -> Any:
    """A whole provider definition, as a clinic's own provider; usable at once."""
    try:
        definition = parse_definition_text(document, "uploaded definition")
    except DefinitionError as exc:
        field, reason = exc.problems[0]
        raise ValidationFailed(field or "definition", reason, details=exc.as_details()) from None
    return await service.save_definition(
        session,
        definition,
        organization_id=principal.organization_id,
        source="upload",
        location_label=location_label,
        replace=replace,
    )


@admin.get("/integrations/{integration_id}", response_model=IntegrationOut)
async def get_integration(
    integration_id: uuid.UUID, session: SessionDep, principal: IntegrationManager
) -> Any:
    return await service.get_integration(session, principal.organization_id, integration_id)


@admin.get("/integrations/{integration_id}/definition")
async def get_definition(
    integration_id: uuid.UUID, session: SessionDep, principal: IntegrationManager
) -> Any:
    """The effective definition: the catalogue provider's with this integration's overrides."""
    row = await service.get_integration(session, principal.organization_id, integration_id)
    definition = await service.build_definition(session, row)
    return definition.model_dump(mode="json", by_alias=True, exclude_defaults=True)


@admin.patch("/integrations/{integration_id}", response_model=IntegrationOut)
async def update_integration(
    integration_id: uuid.UUID,
    payload: IntegrationUpdate,
    session: SessionDep,
    principal: IntegrationManager,
    request: Request,
) -> Any:
    _check_address(request, payload.base_url)
    return await service.update_integration(session, principal.organization_id, integration_id, payload)


@admin.delete("/integrations/{integration_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_integration(
    integration_id: uuid.UUID, session: SessionDep, principal: IntegrationManager
) -> Response:
    await service.delete_integration(session, principal.organization_id, integration_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- functions (endpoints) --------------------------------------------------------


@admin.get("/integrations/{integration_id}/endpoints", response_model=list[EndpointOut])
async def list_endpoints(
    integration_id: uuid.UUID, session: SessionDep, principal: IntegrationManager
) -> Any:
    """The integration's functions, each with the mapping it runs with."""
    row = await service.get_integration(session, principal.organization_id, integration_id)
    endpoints = await service.list_endpoints(session, principal.organization_id, integration_id)
    return await service.endpoint_views(session, row, endpoints)


@admin.post(
    "/integrations/{integration_id}/endpoints",
    response_model=EndpointOut,
    status_code=status.HTTP_201_CREATED,
)
async def create_endpoint(
    integration_id: uuid.UUID, payload: EndpointCreate, session: SessionDep, principal: IntegrationManager
) -> Any:
    endpoint = await service.create_endpoint(session, principal.organization_id, integration_id, payload)
    row = await service.get_integration(session, principal.organization_id, integration_id)
    return (await service.endpoint_views(session, row, [endpoint]))[0]


@admin.put("/integrations/{integration_id}/endpoints/{endpoint_id}", response_model=EndpointOut)
async def replace_endpoint(
    integration_id: uuid.UUID,
    endpoint_id: uuid.UUID,
    payload: EndpointCreate,
    session: SessionDep,
    principal: IntegrationManager,
) -> Any:
    endpoint = await service.replace_endpoint(
        session, principal.organization_id, integration_id, endpoint_id, payload
    )
    row = await service.get_integration(session, principal.organization_id, integration_id)
    return (await service.endpoint_views(session, row, [endpoint]))[0]


@admin.delete(
    "/integrations/{integration_id}/endpoints/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_endpoint(
    integration_id: uuid.UUID, endpoint_id: uuid.UUID, session: SessionDep, principal: IntegrationManager
) -> Response:
    await service.delete_endpoint(session, principal.organization_id, integration_id, endpoint_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- parameter maps ---------------------------------------------------------------


@admin.get("/integrations/{integration_id}/parameter-maps", response_model=list[ParameterMapOut])
async def list_maps(integration_id: uuid.UUID, session: SessionDep, principal: IntegrationManager) -> Any:
    return await service.list_maps(session, principal.organization_id, integration_id)


@admin.post(
    "/integrations/{integration_id}/parameter-maps",
    response_model=ParameterMapOut,
    status_code=status.HTTP_201_CREATED,
)
async def create_map(
    integration_id: uuid.UUID, payload: ParameterMapCreate, session: SessionDep, principal: IntegrationManager
) -> Any:
    return await service.create_map(session, principal.organization_id, integration_id, payload)


@admin.patch("/integrations/{integration_id}/parameter-maps/{map_id}", response_model=ParameterMapOut)
async def update_map(
    integration_id: uuid.UUID,
    map_id: uuid.UUID,
    payload: ParameterMapUpdate,
    session: SessionDep,
    principal: IntegrationManager,
) -> Any:
    return await service.update_map(session, principal.organization_id, integration_id, map_id, payload)


@admin.delete(
    "/integrations/{integration_id}/parameter-maps/{map_id}", status_code=status.HTTP_204_NO_CONTENT
)
async def delete_map(
    integration_id: uuid.UUID, map_id: uuid.UUID, session: SessionDep, principal: IntegrationManager
) -> Response:
    await service.delete_map(session, principal.organization_id, integration_id, map_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# ---- credentials ------------------------------------------------------------------


@admin.get("/api-credentials", response_model=list[CredentialOut])
async def list_credentials(session: SessionDep, principal: CredentialManager) -> Any:
    return await service.list_credentials(session, principal.organization_id)


@admin.post("/api-credentials", response_model=CredentialOut, status_code=status.HTTP_201_CREATED)
async def create_credential(
    payload: CredentialCreate, session: SessionDep, principal: CredentialManager, request: Request
) -> Any:
    return await service.create_credential(
        session, principal.organization_id, payload, cipher_for(_settings(request))
    )


@admin.get("/api-credentials/{credential_id}", response_model=CredentialOut)
async def get_credential(credential_id: uuid.UUID, session: SessionDep, principal: CredentialManager) -> Any:
    return await service.get_credential(session, principal.organization_id, credential_id)


@admin.patch("/api-credentials/{credential_id}", response_model=CredentialOut)
async def update_credential(
    credential_id: uuid.UUID,
    payload: CredentialUpdate,
    session: SessionDep,
    principal: CredentialManager,
    request: Request,
) -> Any:
    return await service.update_credential(
        session, principal.organization_id, credential_id, payload, cipher_for(_settings(request))
    )


@admin.delete("/api-credentials/{credential_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_credential(
    credential_id: uuid.UUID, session: SessionDep, principal: CredentialManager
) -> Response:
    await service.delete_credential(session, principal.organization_id, credential_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@admin.post(
    "/api-credentials/{credential_id}/test",
    response_model=CredentialTestResult,
    dependencies=[Depends(writes_in_own_transactions)],
)
async def test_credential(
    credential_id: uuid.UUID, principal: CredentialManager, request: Request
) -> CredentialTestResult:
    """Call the provider's declared test function with this credential."""
    outcome = await executor(request).test_credential(principal.organization_id, credential_id)
    return CredentialTestResult(
        success=outcome.success,
        latency_ms=outcome.latency_ms,
        error=outcome.error,
        code=outcome.code,
        function=outcome.function,
    )


router.include_router(admin)
router.include_router(connect_router)
