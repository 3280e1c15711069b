"""Every route of the app, called with every role, answers as the role x capability table says.

A route must declare its rule: ``Requires(Capability.X)`` or ``dependencies=[PUBLIC]`` (see
clinicsync/tenancy/permissions.py). A route that declares neither fails here by name, so a new
route cannot reach main without somebody deciding who may call it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount, Route

from clinicsync.app import create_app
from clinicsync.config import Settings
from clinicsync.deps import Authorize, _platform, _public
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.permissions import (
    DESCRIPTIONS,
    GRANTS,
    OPEN_PATHS,
    SELF_AUTHENTICATED_PATHS,
    Capability,
    allows,
)
from tests.conftest import RunningServer
from tests.factories import Tenant, TenantFactory

PUBLIC = "public"
PLATFORM = "platform"
BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


@dataclass(frozen=True)
class RouteRule:
    method: str
    path: str
    rule: Capability | str | None

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _rules(dependant: Dependant) -> Iterator[Capability | str]:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Authorize):
            yield dependency.call.capability
        elif dependency.call is _public:
            yield PUBLIC
        elif dependency.call is _platform:
            yield PLATFORM
        yield from _rules(dependency)


def _routes(app: FastAPI) -> Iterator[tuple[str, BaseRoute]]:
    """(full path, route) for every route, through included routers on any FastAPI version."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.165 keeps routers nested
    except ImportError:
        for route in app.routes:
            yield str(getattr(route, "path", "")), route
        return
    for context in iter_route_contexts(app.routes):
        yield str(context.path), context.original_route


def declared_rules(app: FastAPI) -> list[RouteRule]:
    found = []
    for path, route in _routes(app):
        if isinstance(route, APIRoute):
            rules = set(_rules(route.dependant))
            rule = rules.pop() if len(rules) == 1 else None
            found.extend(RouteRule(method, path, rule) for method in sorted(route.methods))
    return found


def _app() -> FastAPI:
    return create_app(Settings(database_url="sqlite:///:memory:", environment="test"))


def test_every_route_declares_who_may_call_it() -> None:
    app = _app()
    undeclared = [str(route) for route in declared_rules(app) if route.rule is None]
    assert undeclared == [], (
        "these routes declare no permission rule (exactly one is needed): take the caller as "
        "Annotated[Principal, Requires(Capability.X)] or add dependencies=[PUBLIC]; "
        "see clinicsync/tenancy/permissions.py"
    )
    assert len(declared_rules(app)) > 50  # the walk reaches into every included router
    other = [
        path
        for path, route in _routes(app)
        if isinstance(route, Route | Mount) and not isinstance(route, APIRoute)
    ]
    assert [path for path in other if not path.startswith(OPEN_PATHS + SELF_AUTHENTICATED_PATHS)] == []


def test_the_documented_table_is_the_enforced_table() -> None:
    """docs/security.md shows GRANTS row for row, so the written policy cannot drift from the code."""
    text = DOCS.read_text()
    rows = {
        match.group(1): [cell.strip() for cell in match.group(2).split("|")]
        for match in re.finditer(r"^\| `([a-z_.]+)` \|(.*)\|\s*$", text, re.MULTILINE)
    }
    header = next(line for line in text.splitlines() if line.startswith("| capability |"))
    roles = [cell.strip() for cell in header.strip("|").split("|")][1:-1]
    assert roles == [role.value for role in Role]
    for capability in Capability:
        assert capability.value in rows, f"docs/security.md has no row for {capability.value}"
        cells = rows[capability.value][: len(roles)]
        expected = [GRANTS[capability].get(Role(role), "").__str__() or "-" for role in roles]
        assert cells == [cell if cell else "-" for cell in expected], capability.value
        assert DESCRIPTIONS[capability]


def _concrete(path: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "provider":
            return "opendental"
        if name == "reference":
            return "CS-ABCDEFGH"
        return str(uuid.uuid4())

    return re.sub(r"\{([a-z_]+)(?::[a-z]+)?\}", value, path)


async def _status(client: httpx.AsyncClient, route: RouteRule, headers: dict[str, str]) -> tuple[int, str]:
    # Streamed, so an event stream answers with its status instead of holding the test open.
    kwargs: dict[str, object] = {"headers": headers}
    if route.method in BODY_METHODS:
        kwargs["json"] = {}
    async with client.stream(route.method, _concrete(route.path), **kwargs) as response:  # type: ignore[arg-type]
        body = (await response.aread()).decode() if response.status_code in (401, 403) else ""
        return response.status_code, body


async def test_each_role_gets_exactly_what_the_table_grants(
    client: httpx.AsyncClient, server: RunningServer, tenant_factory: TenantFactory
) -> None:
    owner = await tenant_factory()
    callers: dict[Role, Tenant] = {Role.OWNER: owner}
    for role in Role:
        if role != Role.OWNER:
            callers[role] = await tenant_factory(role=role, organization_id=owner.organization_id)
    wrong: list[str] = []
    # Signing out revokes the token the walk signs in with, so it is walked last.
    routes = sorted(declared_rules(create_app(server.settings)), key=lambda rule: rule.path == "/logout")
    for route in routes:
        if route.method == "HEAD":
            continue
        if route.rule != PUBLIC:
            status, _ = await _status(client, route, {})
            if status != 401:
                wrong.append(f"{route} without a token: {status}, expected 401")
        for role, caller in callers.items():
            status, body = await _status(client, route, caller.headers)
            if route.rule == PLATFORM:
                if status != 401:
                    wrong.append(f"{route} as {role.value}: {status}, expected 401 (platform-signed only)")
            elif route.rule == PUBLIC or allows(role, Capability(route.rule)):
                # The sign-in form without its own CSRF cookie is refused as expired, not forbidden.
                csrf_refused = route.path == "/login" and "sign-in form had expired" in body
                if (status in (401, 403) and not csrf_refused) or status >= 500:
                    wrong.append(f"{route} as {role.value}: {status} {body[:120]}, expected it allowed")
            elif status != 403 or f'"capability":"{route.rule}"' not in body.replace(" ", ""):
                wrong.append(f"{route} as {role.value}: {status}, expected 403 for {route.rule}")
    assert wrong == []
