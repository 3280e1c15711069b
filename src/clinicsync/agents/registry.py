"""The tool table and the one way to run a tool: validate, replay a retried write, answer in a line.

Every surface (MCP, Vapi, Retell, plain function calls) goes through ``run``, so a tool
behaves the same wherever a model calls it from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.agents import bookings, patients, scheduling
from clinicsync.agents.context import AgentContext, ToolProblem, say_error
from clinicsync.agents.models import AgentToolCall
from clinicsync.agents.schemas import (
    BookArgs,
    CancelArgs,
    FindPatientArgs,
    FindSlotsArgs,
    ListPractitionersArgs,
    LookupBookingArgs,
    RegisterPatientArgs,
    RescheduleArgs,
    ToolAnswer,
)
from clinicsync.db.base import utcnow
from clinicsync.errors import ClinicSyncError
from clinicsync.logging import get_logger

log = get_logger(__name__)

ToolFunction = Callable[[AsyncSession, AgentContext, Any], Awaitable[ToolAnswer]]


@dataclass(frozen=True, slots=True)
class Tool:
    name: str
    description: str
    arguments: type[BaseModel]
    run: ToolFunction
    writes: bool

    def schema(self) -> dict[str, Any]:
        schema = self.arguments.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return schema


TOOLS: dict[str, Tool] = {
    tool.name: tool
    for tool in (
        Tool(
            "list_practitioners",
            "Who works at the clinic: name, role or speciality and their next free day.",
            ListPractitionersArgs,
            scheduling.list_practitioners,
            writes=False,
        ),
        Tool(
            "find_slots",
            "A handful of free appointment times in the clinic's local time, for a practitioner or anyone, "
            "on a date or range and part of the day. Pass an option's start to book.",
            FindSlotsArgs,
            scheduling.find_slots,
            writes=False,
        ),
        Tool(
            "find_patient",
            "Find an existing patient by phone number, or by full name and date of birth. "
            "Returns patient_id.",
            FindPatientArgs,
            patients.find_patient,
            writes=False,
        ),
        Tool(
            "register_patient",
            "Register a new patient (an existing one with the same name and phone is found, not duplicated). "
            "Returns patient_id.",
            RegisterPatientArgs,
            patients.register_patient,
            writes=True,
        ),
        Tool(
            "book",
            "Book a patient into a time offered by find_slots. Returns the booking reference; a taken time "
            "answers with the nearest free ones.",
            BookArgs,
            bookings.book,
            writes=True,
        ),
        Tool(
            "lookup_booking",
            "Read a booking by its reference, with the patient's phone number or date of birth as proof.",
            LookupBookingArgs,
            bookings.lookup_booking,
            writes=False,
        ),
        Tool(
            "reschedule",
            "Move a booking to a new time, by reference plus the patient's phone number or date of birth.",
            RescheduleArgs,
            bookings.reschedule,
            writes=True,
        ),
        Tool(
            "cancel",
            "Cancel a booking by reference plus the patient's phone number or date of birth.",
            CancelArgs,
            bookings.cancel,
            writes=True,
        ),
    )
}


def replay_key(call_id: str, tool: str, arguments: dict[str, Any]) -> str:
    """Same call, same tool, same arguments: the same key, however often the platform retries."""
    canonical = json.dumps({"call": call_id, "tool": tool, "args": arguments}, sort_keys=True, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _argument_problem(error: ValidationError) -> str:
    first = error.errors()[0]
    field = ".".join(str(part) for part in first.get("loc", ())) or "arguments"
    if first.get("type") == "missing":
        return f"I still need the {field.replace('_', ' ')}."
    return f"The {field.replace('_', ' ')} doesn't look right: {first.get('msg', 'invalid')}."


async def _replayed(session: AsyncSession, ctx: AgentContext, key: str) -> ToolAnswer | None:
    record = await session.scalar(
        select(AgentToolCall).where(
            AgentToolCall.organization_id == ctx.principal.organization_id, AgentToolCall.key == key
        )
    )
    return ToolAnswer.model_validate(record.answer) if record is not None else None


async def _claim(session: AsyncSession, ctx: AgentContext, tool: str, key: str) -> AgentToolCall | ToolAnswer:
    """Writes the key first, so a concurrent retry waits on it and then replays the first answer."""
    earlier = await _replayed(session, ctx, key)
    if earlier is not None:
        return earlier
    record = AgentToolCall(
        organization_id=ctx.principal.organization_id, key=key, tool=tool, answer={}, created_at=utcnow()
    )
    session.add(record)
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        earlier = await _replayed(session, ctx, key)
        if earlier is None:
            return ToolAnswer(ok=False, text="I'm still working on that; one moment please.")
        return earlier
    return record


async def run(
    session: AsyncSession,
    ctx: AgentContext,
    name: str,
    arguments: dict[str, Any] | None,
    *,
    key: str | None = None,
) -> ToolAnswer:
    """Runs one tool. Never raises for the caller's mistakes: they come back as ok=False lines."""
    tool = TOOLS.get(name)
    if tool is None:
        return ToolAnswer(ok=False, text=f"There is no tool called {name}.")
    try:
        parsed = tool.arguments.model_validate(arguments or {})
    except ValidationError as error:
        return ToolAnswer(ok=False, text=_argument_problem(error))
    record: AgentToolCall | None = None
    if tool.writes and key is not None:
        claim = await _claim(session, ctx, name, key)
        if isinstance(claim, ToolAnswer):
            return claim
        record = claim
    try:
        answer = await tool.run(session, ctx, parsed)
    except ToolProblem as problem:
        answer = ToolAnswer(ok=False, text=problem.message, data=problem.data)
    except ClinicSyncError as error:
        log.info("agent_tool_refused", tool=name, code=error.code)
        answer = ToolAnswer(ok=False, text=say_error(error))
    if not answer.ok and tool.writes:
        # Nothing of a failed write stays, not even its replay claim: a retry tries again.
        await session.rollback()
        return answer
    if record is not None:
        record.answer = answer.model_dump(mode="json")
        await session.flush()
    log.info("agent_tool", tool=name, surface=ctx.surface, ok=answer.ok)
    return answer


def function_definitions() -> list[dict[str, Any]]:
    return [{"name": t.name, "description": t.description, "parameters": t.schema()} for t in TOOLS.values()]
