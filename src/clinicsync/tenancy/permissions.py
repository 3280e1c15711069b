"""Who may do what: the role x capability table, and the one function that enforces it.

Every route declares the capability it needs (``Requires(Capability.X)`` from ``deps.py``) or
that it is public (``PUBLIC``); the test in tests/tenancy/test_permission_matrix.py walks every
route of the app with every role and fails for a route that declares neither. To add a route:

1. pick the capability below that describes what the route does, or add one (a member of
   ``Capability`` and its row in ``GRANTS``; docs/security.md shows the same table and a test
   checks that the two agree);
2. take the caller as ``principal: Annotated[Principal, Requires(Capability.X)]``.

A grant is either ``ALL`` (every row of the organization) or ``OWN``: the role sees only its
own share, and the service that serves the capability narrows its queries with
:func:`scope_of` (a practitioner's own patients and diary; what a service account booked).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

from clinicsync.errors import Forbidden
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.principal import Principal


class Capability(enum.StrEnum):
    ACCOUNT_READ = "account.read"
    TOKENS_OWN = "tokens.own"
    TOKENS_ISSUE = "tokens.issue"
    ORGANIZATION_READ = "organization.read"
    ORGANIZATION_MANAGE = "organization.manage"
    USERS_MANAGE = "users.manage"
    ADMINISTER = "clinic.administer"
    PRACTITIONERS_READ = "practitioners.read"
    PRACTITIONERS_MANAGE = "practitioners.manage"
    AVAILABILITY_READ = "availability.read"
    AVAILABILITY_MANAGE = "availability.manage"
    SLOTS_SEARCH = "slots.search"
    APPOINTMENT_TYPES_READ = "appointment_types.read"
    APPOINTMENT_TYPES_MANAGE = "appointment_types.manage"
    PATIENTS_LIST = "patients.list"
    PATIENTS_FIND = "patients.find"
    PATIENTS_READ = "patients.read"
    PATIENTS_REGISTER = "patients.register"
    PATIENTS_UPDATE = "patients.update"
    APPOINTMENTS_LIST = "appointments.list"
    APPOINTMENTS_READ = "appointments.read"
    APPOINTMENTS_FIND = "appointments.find"
    APPOINTMENTS_BOOK = "appointments.book"
    APPOINTMENTS_CHANGE = "appointments.change"
    INTEGRATIONS_MANAGE = "integrations.manage"
    CREDENTIALS_MANAGE = "credentials.manage"
    PMS_RUN = "pms.run"
    EVENTS_READ = "events.read"
    SYNC_READ = "sync.read"
    SYNC_MANAGE = "sync.manage"
    SYNC_RUNS_READ = "sync.runs.read"
    SYNC_RUNS_START = "sync.runs.start"
    AGENT_TOOLS = "agents.tools"
    AGENTS_MANAGE = "agents.manage"


class Scope(enum.StrEnum):
    ALL = "all"  # every row of the organization
    OWN = "own"  # only the caller's share (see the module docstring)


ALL, OWN = Scope.ALL, Scope.OWN
OW, A, S, P, SV = Role.OWNER, Role.ADMIN, Role.STAFF, Role.PRACTITIONER, Role.SERVICE

# What each capability means, for docs/security.md and error messages.
DESCRIPTIONS: Mapping[Capability, str] = MappingProxyType(
    {
        Capability.ACCOUNT_READ: "read one's own user record",
        Capability.TOKENS_OWN: "list and revoke tokens (one's own; owners and admins: up to their role)",
        Capability.TOKENS_ISSUE: "issue tokens (for oneself; owners and admins: for users up to their role)",
        Capability.ORGANIZATION_READ: "read the clinic's name, time zone and booking rules",
        Capability.ORGANIZATION_MANAGE: "change the clinic's settings",
        Capability.USERS_MANAGE: "create, read and deactivate users (never above one's own role)",
        Capability.ADMINISTER: "other owner/admin-only clinic administration",
        Capability.PRACTITIONERS_READ: "list and read practitioners",
        Capability.PRACTITIONERS_MANAGE: "create, change and remove practitioners",
        Capability.AVAILABILITY_READ: "read weekly hours and date overrides",
        Capability.AVAILABILITY_MANAGE: "change weekly hours and overrides (practitioners: their own)",
        Capability.SLOTS_SEARCH: "search free slots and read the PMS's schedule slots (times and counts)",
        Capability.APPOINTMENT_TYPES_READ: "list and read appointment types (service: those bookable online)",
        Capability.APPOINTMENT_TYPES_MANAGE: "create and change appointment types",
        Capability.PATIENTS_LIST: "list and search the patient register (practitioners: their own patients)",
        Capability.PATIENTS_FIND: "find a patient by phone or name together with the date of birth",
        Capability.PATIENTS_READ: "read a patient (practitioners: own patients; service: its own)",
        Capability.PATIENTS_REGISTER: "register a new patient",
        Capability.PATIENTS_UPDATE: "change a patient's details (practitioners: their own patients)",
        Capability.APPOINTMENTS_LIST: "list appointments (practitioners: own diary; service: what it booked)",
        Capability.APPOINTMENTS_READ: "read an appointment (practitioners: own diary; service: booked by it)",
        Capability.APPOINTMENTS_FIND: "find an appointment by booking reference plus phone or date of birth",
        Capability.APPOINTMENTS_BOOK: "book an appointment",
        Capability.APPOINTMENTS_CHANGE: "reschedule, change or cancel (service: booked by it, or with proof)",
        Capability.INTEGRATIONS_MANAGE: "configure integrations, their functions and parameter maps",
        Capability.CREDENTIALS_MANAGE: "store, change, test and delete PMS credentials",
        Capability.PMS_RUN: "run a PMS function and read an integration's status",
        Capability.EVENTS_READ: "receive live changes (practitioners: own diary; service: what it booked)",
        Capability.SYNC_READ: "read sync settings, sync status and the outbox of owed pushes",
        Capability.SYNC_MANAGE: "change sync settings, link records by hand, retry or discard owed pushes",
        Capability.SYNC_RUNS_READ: "watch sync runs: progress, history, cases and PMS appointments pulled",
        Capability.SYNC_RUNS_START: "start, preview, cancel and clean up sync runs; set their schedule",
        Capability.AGENT_TOOLS: "agent tools: find slots and patients, register, book, change with proof",
        Capability.AGENTS_MANAGE: "switch agent booking on or off, limit it, manage voice channels",
    }
)

# The table. A role missing from a row may not use the capability at all.
GRANTS: Mapping[Capability, Mapping[Role, Scope]] = MappingProxyType(
    {
        Capability.ACCOUNT_READ: {OW: ALL, A: ALL, S: ALL, P: ALL, SV: ALL},
        Capability.TOKENS_OWN: {OW: ALL, A: ALL, S: OWN, P: OWN, SV: OWN},
        Capability.TOKENS_ISSUE: {OW: ALL, A: ALL, S: OWN, P: OWN},
        Capability.ORGANIZATION_READ: {OW: ALL, A: ALL, S: ALL, P: ALL, SV: ALL},
        Capability.ORGANIZATION_MANAGE: {OW: ALL, A: ALL},
        Capability.USERS_MANAGE: {OW: ALL, A: ALL},
        Capability.ADMINISTER: {OW: ALL, A: ALL},
        Capability.PRACTITIONERS_READ: {OW: ALL, A: ALL, S: ALL, P: ALL, SV: ALL},
        Capability.PRACTITIONERS_MANAGE: {OW: ALL, A: ALL},
        Capability.AVAILABILITY_READ: {OW: ALL, A: ALL, S: ALL, P: ALL, SV: ALL},
        Capability.AVAILABILITY_MANAGE: {OW: ALL, A: ALL, S: ALL, P: OWN},
        Capability.SLOTS_SEARCH: {OW: ALL, A: ALL, S: ALL, P: ALL, SV: ALL},
        Capability.APPOINTMENT_TYPES_READ: {OW: ALL, A: ALL, S: ALL, P: ALL, SV: ALL},
        Capability.APPOINTMENT_TYPES_MANAGE: {OW: ALL, A: ALL},
        Capability.PATIENTS_LIST: {OW: ALL, A: ALL, S: ALL, P: OWN},
        Capability.PATIENTS_FIND: {OW: ALL, A: ALL, S: ALL, SV: ALL},
        Capability.PATIENTS_READ: {OW: ALL, A: ALL, S: ALL, P: OWN, SV: OWN},
        Capability.PATIENTS_REGISTER: {OW: ALL, A: ALL, S: ALL, SV: ALL},
        Capability.PATIENTS_UPDATE: {OW: ALL, A: ALL, S: ALL, P: OWN},
        Capability.APPOINTMENTS_LIST: {OW: ALL, A: ALL, S: ALL, P: OWN, SV: OWN},
        Capability.APPOINTMENTS_READ: {OW: ALL, A: ALL, S: ALL, P: OWN, SV: OWN},
        Capability.APPOINTMENTS_FIND: {OW: ALL, A: ALL, S: ALL, SV: ALL},
        Capability.APPOINTMENTS_BOOK: {OW: ALL, A: ALL, S: ALL, SV: ALL},
        Capability.APPOINTMENTS_CHANGE: {OW: ALL, A: ALL, S: ALL, P: OWN, SV: OWN},
        Capability.INTEGRATIONS_MANAGE: {OW: ALL, A: ALL},
        Capability.CREDENTIALS_MANAGE: {OW: ALL, A: ALL},
        Capability.PMS_RUN: {OW: ALL, A: ALL},
        Capability.EVENTS_READ: {OW: ALL, A: ALL, S: ALL, P: OWN, SV: OWN},
        Capability.SYNC_READ: {OW: ALL, A: ALL},
        Capability.SYNC_MANAGE: {OW: ALL, A: ALL},
        Capability.SYNC_RUNS_READ: {OW: ALL, A: ALL},
        Capability.SYNC_RUNS_START: {OW: ALL, A: ALL},
        Capability.AGENT_TOOLS: {OW: ALL, A: ALL, S: ALL, SV: ALL},
        Capability.AGENTS_MANAGE: {OW: ALL, A: ALL},
    }
)

# Roles by rank: a user may act on (issue tokens for, create, deactivate) users of a rank up to
# their own, and only owners manage owners.
RANK: Mapping[Role, int] = MappingProxyType({OW: 4, A: 3, S: 2, P: 2, SV: 1})


def allows(role: Role, capability: Capability) -> bool:
    return role in GRANTS[capability]


def check(principal: Principal, capability: Capability) -> Scope:
    """The one check every route passes through; returns how far the grant reaches."""
    scope = GRANTS[capability].get(principal.role)
    if scope is None:
        raise Forbidden(
            f"your role ({principal.role.value}) may not {DESCRIPTIONS[capability]}",
            code="forbidden",
            details={"capability": capability.value, "role": principal.role.value},
        )
    return scope


def scope_of(principal: Principal, capability: Capability) -> Scope:
    """How far ``principal``'s grant of ``capability`` reaches (services narrow queries by it)."""
    return check(principal, capability)


def outranks_or_equals(actor: Role, target: Role) -> bool:
    """Whether ``actor`` may act on a user of role ``target`` (owners alone act on owners)."""
    if target == Role.OWNER:
        return actor == Role.OWNER
    return RANK[actor] >= RANK[target]


# Routes outside the API routers (the API reference and its assets): public, by path prefix.
OPEN_PATHS: tuple[str, ...] = ("/openapi.json", "/docs", "/redoc", "/static/apidocs", "/assets")

# Routes outside the API routers that authenticate callers themselves: the MCP endpoint checks
# the bearer token in the SDK's own middleware and requires agents.tools (agents/mcp_server.py).
SELF_AUTHENTICATED_PATHS: tuple[str, ...] = ("/mcp",)
