"""Agent routes: function schemas and calls, Vapi and Retell tool webhooks, and agent administration.

Thin: parse the platform's envelope, authenticate the clinic, run the tool through the registry,
wrap the answer back in the platform's envelope.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request, Response, status
from fastapi.responses import JSONResponse

from clinicsync.agents import registry, service
from clinicsync.agents.context import AgentContext
from clinicsync.agents.schemas import (
    AgentBookingRead,
    AgentSettingsRead,
    AgentSettingsUpdate,
    ChannelCreate,
    ChannelIssued,
    ChannelRead,
    FunctionDefinition,
    ToolAnswer,
    ToolCatalogue,
)
from clinicsync.booking.models import BookingSource
from clinicsync.config import Settings
from clinicsync.deps import PLATFORM, Requires, SessionDep
from clinicsync.edge.openapi import errors
from clinicsync.errors import NotFound, ValidationFailed
from clinicsync.integrations.credentials import SecretCipher, cipher_for
from clinicsync.sync.views import SyncManagerDep
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

router = APIRouter(prefix="/api/v1/agents", tags=["agents"])

ToolCaller = Annotated[Principal, Requires(Capability.AGENT_TOOLS)]
AgentManager = Annotated[Principal, Requires(Capability.AGENTS_MANAGE)]
TrailReader = Annotated[Principal, Requires(Capability.APPOINTMENTS_LIST)]

AGENT_SOURCES = (BookingSource.CHATBOT, BookingSource.AI_VOICE)


def _cipher(request: Request) -> SecretCipher:
    settings: Settings = request.app.state.settings
    return cipher_for(settings)


def caller_source(value: str | None) -> BookingSource:
    """The booking source a caller declares; chatbot unless it says it is a voice agent."""
    if value is None or not value.strip():
        return BookingSource.CHATBOT
    try:
        source = BookingSource(value.strip().lower())
    except ValueError:
        source = None
    if source not in AGENT_SOURCES:
        raise ValidationFailed("X-Booking-Source", "must be chatbot or ai_voice")
    return source


def one_line(text: str) -> str:
    # Vapi breaks on line breaks in a result; agents speak one line anyway.
    return " ".join(text.split())


# --- function schemas ------------------------------------------------------------------------------


@router.get("/tools", response_model=ToolCatalogue)
async def list_tools(_principal: ToolCaller) -> ToolCatalogue:
    definitions = registry.function_definitions()
    return ToolCatalogue(
        openai=[{"type": "function", "function": definition} for definition in definitions],
        anthropic=[
            {"name": d["name"], "description": d["description"], "input_schema": d["parameters"]}
            for d in definitions
        ],
        functions=[FunctionDefinition(**definition) for definition in definitions],
    )


@router.post("/tools/{name}", response_model=ToolAnswer)
async def call_tool(
    name: str,
    session: SessionDep,
    principal: ToolCaller,
    sync: SyncManagerDep,
    arguments: Annotated[dict[str, Any] | None, Body()] = None,
    x_booking_source: Annotated[str | None, Header()] = None,
    x_conversation_id: Annotated[str | None, Header(max_length=200)] = None,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> ToolAnswer:
    if name not in registry.TOOLS:
        raise NotFound(f"no tool called {name}")
    ctx = AgentContext(principal, caller_source(x_booking_source), "functions", sync, x_conversation_id)
    retry_of = idempotency_key or x_conversation_id
    key = registry.replay_key(retry_of, name, arguments or {}) if retry_of and idempotency_key else None
    return await registry.run(session, ctx, name, arguments, key=key)


# --- Vapi ------------------------------------------------------------------------------------------


def _vapi_calls(body: Any) -> tuple[list[tuple[str, str, Any]], str | None]:
    """(id, tool name, arguments) for each call in a Vapi tool-calls message, and the call's id."""
    message = body.get("message") if isinstance(body, dict) else None
    if not isinstance(message, dict):
        return [], None
    call = message.get("call")
    call_id = call.get("id") if isinstance(call, dict) else None
    calls: list[tuple[str, str, Any]] = []
    for item in message.get("toolCallList") or []:
        if not isinstance(item, dict):
            continue
        function: dict[str, Any] = item["function"] if isinstance(item.get("function"), dict) else item
        arguments = function.get("arguments", function.get("parameters", {}))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                arguments = None
        calls.append((str(item.get("id", "")), str(function.get("name", "")), arguments))
    return calls, str(call_id) if call_id else None


@router.post("/vapi/tool-calls", dependencies=[PLATFORM], responses=errors(401))
async def vapi_tool_calls(
    request: Request,
    session: SessionDep,
    sync: SyncManagerDep,
    x_vapi_secret: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Vapi's server-URL tool calls. Always 200: Vapi ignores any other status, so problems are results."""
    token = x_vapi_secret or (authorization or "").removeprefix("Bearer ").removeprefix("bearer ")
    channel = await service.channel_by_token(session, "vapi", token)
    ctx_base = (service.channel_principal(channel), service.channel_source(channel))
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return JSONResponse({"results": [], "error": "The request was not JSON."})
    calls, call_id = _vapi_calls(body)
    if not calls:
        return JSONResponse({"results": [], "error": "No tool calls were found in the request."})
    await session.commit()  # each call below is its own unit of work
    results: list[dict[str, str]] = []
    for tool_call_id, name, arguments in calls:
        ctx = AgentContext(ctx_base[0], ctx_base[1], "vapi", sync, call_id)
        if not isinstance(arguments, dict):
            results.append({"toolCallId": tool_call_id, "error": "The arguments were not readable."})
            continue
        key = registry.replay_key(call_id or tool_call_id, name, arguments)
        answer = await registry.run(session, ctx, name, arguments, key=key)
        await session.commit()
        field = "result" if answer.ok else "error"
        results.append({"toolCallId": tool_call_id, field: one_line(answer.text)})
    return JSONResponse({"results": results})


# --- Retell ----------------------------------------------------------------------------------------


@router.post("/retell/{tool}", dependencies=[PLATFORM], responses=errors(401, 404))
async def retell_function(
    tool: str,
    request: Request,
    session: SessionDep,
    sync: SyncManagerDep,
    channel: Annotated[str | None, Query(description="The agent channel id")] = None,
    x_retell_signature: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """A Retell custom function. The body is signed with the clinic's Retell API key."""
    raw = await request.body()
    found = await service.verified_retell_channel(session, channel, raw, x_retell_signature, _cipher(request))
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise ValidationFailed("body", "must be JSON") from None
    if not isinstance(body, dict):
        raise ValidationFailed("body", "must be a JSON object")
    call = body.get("call") if isinstance(body.get("call"), dict) else {}
    call_id = call.get("call_id") if isinstance(call, dict) else None
    arguments = body.get("args")
    if arguments is None:
        # Retell can send the arguments at the top level instead of under "args".
        arguments = {k: v for k, v in body.items() if k not in ("name", "call")}
    if not isinstance(arguments, dict):
        raise ValidationFailed("args", "must be an object")
    name = tool if tool in registry.TOOLS else str(body.get("name", tool))
    ctx = AgentContext(
        service.channel_principal(found), service.channel_source(found), "retell", sync, call_id
    )
    key = registry.replay_key(str(call_id), name, arguments) if call_id else None
    answer = await registry.run(session, ctx, name, arguments, key=key)
    return JSONResponse({"result": one_line(answer.text), "ok": answer.ok, **answer.data})


# --- administration --------------------------------------------------------------------------------


@router.get("/settings", response_model=AgentSettingsRead)
async def read_settings(session: SessionDep, principal: AgentManager) -> AgentSettingsRead:
    return await service.get_settings(session, principal)


@router.patch("/settings", response_model=AgentSettingsRead)
async def change_settings(
    data: AgentSettingsUpdate, session: SessionDep, principal: AgentManager
) -> AgentSettingsRead:
    return await service.update_settings(session, principal, data)


@router.post("/channels", response_model=ChannelIssued, status_code=status.HTTP_201_CREATED)
async def create_channel(
    data: ChannelCreate, request: Request, session: SessionDep, principal: AgentManager
) -> ChannelIssued:
    return await service.create_channel(session, principal, data, _cipher(request))


@router.get("/channels", response_model=list[ChannelRead])
async def list_channels(session: SessionDep, principal: AgentManager) -> list[ChannelRead]:
    return [
        ChannelRead.model_validate(channel) for channel in await service.list_channels(session, principal)
    ]


@router.delete("/channels/{channel_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_channel(channel_id: uuid.UUID, session: SessionDep, principal: AgentManager) -> Response:
    await service.revoke_channel(session, principal, channel_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/bookings", response_model=list[AgentBookingRead])
async def list_agent_bookings(
    session: SessionDep, principal: TrailReader, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[AgentBookingRead]:
    return await service.agent_bookings(session, principal, limit)
