"""schemathesis over /openapi.json, as an admin and as a service user, on both databases.

Every operation gets generated requests, valid (``positive``) and invalid (``negative``), sent over
loopback to the live server. Three checks must hold for every answer: no 5xx, no status the
document does not list for that operation, and a body that matches the documented schema.
The number of examples is bounded (``CLINICSYNC_SCHEMATHESIS_EXAMPLES``, default below) and the
generation is derandomized, so a run takes the same requests each time and fits the suite's budget.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import suppress
from dataclasses import dataclass, field

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis.strategies import SearchStrategy
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from clinicsync.tenancy.models import Role
from tests.conftest import RunningServer
from tests.factories import Clinic, TenantFactory, booking, future_day

EXAMPLES = int(os.environ.get("CLINICSYNC_SCHEMATHESIS_EXAMPLES", "5"))
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]

# Operations left out, each with its reason. Nothing else is skipped.
EXCLUDED = {
    # A server-sent event stream stays open until the client leaves; a request-per-example tool
    # would wait for it forever. Its statuses and events are pinned by tests/realtime.
    ("GET", "/api/v1/events"),
}


@dataclass
class Findings:
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    operations: int = 0
    seen: set[str] = field(default_factory=set)

    def add(self, where: str, case: Case, group: FailureGroup) -> None:
        """Keeps the first request that showed each kind of failure at each operation."""
        for failure in group.exceptions:
            title = f"{where}: {failure.title}"
            if title not in self.seen:
                self.seen.add(title)
                self.failures.append(f"{title}\n{failure.message}\n{case.as_curl_command()}")


def _probe(schema_url: str, base_url: str, tokens: dict[str, str]) -> Findings:
    """Sends every operation's generated cases to the server, each case once per caller (blocking:
    run it in a thread while the server answers on the event loop). Generating a case costs far
    more than sending it, so the callers share the cases."""
    # A generous timeout: the document is built on its first request, on a machine that may be
    # running the rest of the suite.
    schema = schemathesis.openapi.from_url(schema_url, timeout=120)
    findings = Findings()
    callers = {caller: {"Authorization": f"Bearer {token}"} for caller, token in tokens.items()}
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            if (operation.method.upper(), operation.path) in EXCLUDED:
                continue
            findings.operations += 1
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(generation_mode=mode)
                findings.requests += _run(strategy, base_url, session, callers, findings)
    return findings


def _run(
    strategy: SearchStrategy[Case],
    base_url: str,
    session: requests.Session,
    callers: dict[str, dict[str, str]],
    findings: Findings,
) -> int:
    """Sends up to EXAMPLES cases drawn from ``strategy`` as each caller; returns the requests sent."""
    sent = 0

    # No shrinking: each failure is recorded with the request that showed it, and the run goes
    # on to the next example instead of spending the budget minimising one.
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def each(case: Case) -> None:
        nonlocal sent
        for caller, headers in callers.items():
            sent += 1
            try:
                # Redirects are not followed: an OAuth connect answers 303 to the provider's site.
                case.call_and_validate(
                    base_url=base_url,
                    session=session,
                    headers=headers,
                    checks=CHECKS,
                    allow_redirects=False,
                    timeout=60,
                )
            except FailureGroup as group:
                findings.add(f"{case.method} {case.path} as {caller}", case, group)

    # Negative mode on an operation with nothing to make invalid (no parameters, no body).
    with suppress(Unsatisfiable):
        each()
    return sent


@pytest.mark.slow
async def test_generated_requests_get_documented_answers_and_no_server_error(
    server: RunningServer,
    client: httpx.AsyncClient,
    clinic: Clinic,
    tenant_factory: TenantFactory,
) -> None:
    # Rows to read back, so list and read operations answer with bodies the schema must describe.
    response = await client.post(
        "/api/v1/appointments", json=booking(clinic, clinic.local(future_day(5), 10)), headers=clinic.headers
    )
    assert response.status_code == 201, response.text
    organization_id = clinic.tenant.organization_id
    tokens = {
        role.value: (await tenant_factory(role=role, organization_id=organization_id)).token
        for role in (Role.ADMIN, Role.SERVICE)
    }

    findings = await asyncio.to_thread(_probe, f"{server.base_url}/openapi.json", server.base_url, tokens)

    assert findings.operations >= 90
    assert findings.requests >= findings.operations * len(tokens) * 2
    assert not findings.failures, f"{len(findings.failures)} failures:\n\n" + "\n\n".join(findings.failures)
