"""The tools as an MCP server (the official ``mcp`` SDK), served over streamable HTTP at /mcp.

A bearer token of one of the clinic's users (normally a service user made for the chatbot or
voice agent) authenticates each request; its organization scopes every tool. The caller says
whether it is a chatbot or a voice agent with ``X-Booking-Source`` and may name its
conversation with ``X-Conversation-Id``, which makes retried writes replay instead of repeat.
"""

from __future__ import annotations

import inspect
import uuid
from collections.abc import Callable
from typing import Annotated, Any

import mcp_types
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import Context
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.agents import registry
from clinicsync.agents.api import caller_source
from clinicsync.agents.context import AgentContext
from clinicsync.db.engine import session_scope
from clinicsync.errors import ClinicSyncError
from clinicsync.sync.manager import SyncManager
from clinicsync.tenancy import permissions
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal

INSTRUCTIONS = (
    "Booking tools for one clinic. Times are always the clinic's local time; pass find_slots' "
    "start values to book as given. Find the patient (phone, or name and date of birth) or "
    "register them before booking. Changing or cancelling needs the booking reference and the "
    "patient's phone number or date of birth."
)

SessionmakerSource = Callable[[], async_sessionmaker[AsyncSession]]
ContextSource = Callable[[Context], AgentContext]


class ServiceTokenVerifier:
    """Our own API tokens as MCP bearer tokens: the organization travels in the claims."""

    def __init__(self, sessionmaker: SessionmakerSource) -> None:
        self._sessionmaker = sessionmaker

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            async with session_scope(self._sessionmaker(), write=False) as session:
                principal, _ = await tenancy_service.authenticate(session, token)
        except ClinicSyncError:
            return None
        if not permissions.allows(principal.role, Capability.AGENT_TOOLS):
            return None
        return AccessToken(
            token=token,
            client_id=str(principal.user_id),
            scopes=[],
            claims={
                "organization_id": str(principal.organization_id),
                "user_id": str(principal.user_id),
                "role": principal.role.value,
            },
        )


def context_from_token(ctx: Context, sync: SyncManager) -> AgentContext:
    """The caller of an HTTP request, from the token the transport verified."""
    token = get_access_token()
    if token is None or not token.claims:
        raise PermissionError("not authenticated")
    principal = Principal(
        organization_id=uuid.UUID(token.claims["organization_id"]),
        user_id=uuid.UUID(token.claims["user_id"]),
        role=Role(token.claims["role"]),
    )
    headers = ctx.headers or {}
    try:
        source = caller_source(headers.get("x-booking-source"))
    except ClinicSyncError as error:
        raise ValueError(error.message) from None
    conversation = headers.get("x-conversation-id") or None
    return AgentContext(principal, source, "mcp", sync, conversation[:200] if conversation else None)


def _handler(
    tool: registry.Tool, sessionmaker: SessionmakerSource, context_of: ContextSource
) -> Callable[..., Any]:
    async def handle(ctx: Context, **arguments: Any) -> mcp_types.CallToolResult:
        agent = context_of(ctx)
        given = {name: value for name, value in arguments.items() if value is not None}
        key = registry.replay_key(agent.call_id, tool.name, given) if agent.call_id else None
        async with session_scope(sessionmaker()) as session:
            answer = await registry.run(session, agent, tool.name, given, key=key)
        return mcp_types.CallToolResult(
            content=[mcp_types.TextContent(type="text", text=answer.text)],
            structured_content={"ok": answer.ok, "text": answer.text, **answer.data},
            is_error=not answer.ok,
        )

    # The SDK reads a tool's input schema from its signature: give it the argument model's fields.
    parameters = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Context)]
    for name, field in tool.arguments.model_fields.items():
        default = inspect.Parameter.empty if field.is_required() else field.default
        parameters.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[field.annotation, field],
                default=default,
            )
        )
    handle.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=mcp_types.CallToolResult
    )
    handle.__name__ = tool.name
    return handle


def build_server(
    sessionmaker: SessionmakerSource,
    *,
    sync_of: Callable[[], SyncManager] | None = None,
    context_of: ContextSource | None = None,
    auth_base_url: str | None = None,
) -> MCPServer:
    """The MCP server. With ``auth_base_url`` it requires our bearer tokens over HTTP."""
    if context_of is None:
        if sync_of is None:
            raise ValueError("give sync_of (the app's SyncManager) or context_of")
        source = sync_of

        def context_of(ctx: Context) -> AgentContext:
            return context_from_token(ctx, source())

    verifier = ServiceTokenVerifier(sessionmaker) if auth_base_url else None
    server: MCPServer = MCPServer(
        "clinicsync",
        instructions=INSTRUCTIONS,
        token_verifier=verifier,
        auth=(
            AuthSettings(
                issuer_url=auth_base_url,
                resource_server_url=f"{auth_base_url}/mcp",
                # Our tokens are our own, not issued for a resource by an OAuth server.
                validate_token_resource=False,
            )
            if auth_base_url
            else None
        ),
    )
    for tool in registry.TOOLS.values():
        server.add_tool(
            _handler(tool, sessionmaker, context_of),
            name=tool.name,
            description=tool.description,
            structured_output=False,
        )
    return server
