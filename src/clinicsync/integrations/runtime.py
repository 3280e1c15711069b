"""The HTTP side of running a provider function: requests, auth, retries, rate limit, pages.

:class:`ProviderCaller` needs nothing but a :class:`ResolvedIntegration` (a validated
definition plus the integration's settings and decrypted secrets), so it can be used and
tested without a database. The database-backed :class:`~clinicsync.integrations.executor.IntegrationExecutor`
builds the resolved integration and delegates here.

Per integration, one :class:`IntegrationRuntime` holds the connection pool, the auth state
(cached tokens, session cookies), the rate limiter every concurrent caller shares, and
recent outcomes for the status page. Runtimes are per event loop, because connection
pools and locks belong to the loop that created them.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import random
import string
import time
import weakref
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from clinicsync.errors import ValidationFailed
from clinicsync.integrations.auth import AuthStrategy, SecretUpdate, SharedTokens, build_auth
from clinicsync.integrations.definitions import (
    Direction,
    EndpointSpec,
    FieldSpec,
    PaginationStyle,
    ParameterMapSpec,
    ParamLocation,
    ProviderDefinition,
    ResponseSpec,
    TransformStep,
)
from clinicsync.integrations.errors import IntegrationError
from clinicsync.integrations.outbound import OutboundPolicy
from clinicsync.integrations.pagination import PageRequest, Paginator
from clinicsync.integrations.ratebudget import LocalBudget, Priority, RateBudget
from clinicsync.integrations.transforms import (
    ResolvedSteps,
    TransformError,
    apply_resolved,
    apply_steps,
    get_parts,
    get_path,
    path_parts,
    resolve_steps,
    set_path,
)
from clinicsync.logging import get_logger

log = get_logger(__name__)

RECENT_OUTCOMES = 200
USER_AGENT = "clinicsync (+https://github.com/clinicsync/clinicsync)"


@dataclass
class ResolvedIntegration:
    """Everything needed to call one integration; `revision` changes when any of it does."""

    key: str
    revision: str
    definition: ProviderDefinition
    settings: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)
    base_url: str | None = None
    on_secret_update: SecretUpdate | None = None
    outbound: OutboundPolicy | None = None
    # The budget every caller of this integration shares (in the database when there is
    # one); None means a budget of this process alone.
    budget: RateBudget | None = None
    # Where every process shares one OAuth access token (None: this runtime keeps its own).
    shared_tokens: SharedTokens | None = None

    @property
    def url(self) -> str:
        return render(self.base_url or self.definition.base_url, self.settings).rstrip("/")


@dataclass
class CallResult:
    function: str
    records: list[dict[str, Any]]
    pages: int
    status_code: int | None
    # The token the answer gave for asking only what changes from here (the function's
    # `response.next_sync_token` path; Google's nextSyncToken, on the last page).
    sync_token: str | None = None


# ---- templates --------------------------------------------------------------------


def render(value: Any, settings: Mapping[str, Any]) -> Any:
    """Fill `{settings.NAME}` placeholders; a value that is only a placeholder keeps its type."""
    if isinstance(value, str):
        if "{settings." not in value:
            return value
        stripped = value.strip()
        if stripped.startswith("{settings.") and stripped.endswith("}") and stripped.count("{") == 1:
            return settings.get(stripped[len("{settings.") : -1])
        out = value
        for name, setting in settings.items():
            out = out.replace("{settings." + name + "}", "" if setting is None else str(setting))
        return out
    if isinstance(value, dict):
        return {key: render(item, settings) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, settings) for item in value]
    return value


def _steps(steps: list[TransformStep], settings: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    return [(step.name, render(step.args, settings)) for step in steps]


# ---- runtime per integration ------------------------------------------------------


class IntegrationRuntime:
    def __init__(self, resolved: ResolvedIntegration) -> None:
        definition = resolved.definition
        self.revision = resolved.revision
        self.rate_limit = definition.rate_limit
        self.budget: RateBudget | None = resolved.budget
        if self.budget is None and definition.rate_limit is not None:
            self.budget = LocalBudget(definition.rate_limit)
        # The outbound policy checks each connection's address as it opens (integrations/outbound.py).
        transport = resolved.outbound.transport() if resolved.outbound is not None else None
        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(definition.timeout_seconds), follow_redirects=False, transport=transport
        )
        self.auth: AuthStrategy = build_auth(
            definition.auth, resolved.secrets, resolved.url, resolved.on_secret_update, resolved.shared_tokens
        )
        self.sent_at: deque[float] = deque()
        self.outcomes: deque[tuple[float, str | None]] = deque(maxlen=RECENT_OUTCOMES)
        self.last_call_at: datetime | None = None
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None

    def note_sent(self) -> None:
        now = time.monotonic()
        self.sent_at.append(now)
        window = self.rate_limit.per_seconds if self.rate_limit else 60.0
        while self.sent_at and self.sent_at[0] < now - window:
            self.sent_at.popleft()

    def note_outcome(self, error: IntegrationError | None) -> None:
        self.last_call_at = datetime.now(UTC)
        self.outcomes.append((time.monotonic(), error.code if error else None))
        if error is not None:
            self.last_error = f"{error.code}: {error.message}"
            self.last_error_at = self.last_call_at

    def status(self) -> dict[str, Any]:
        outcomes = list(self.outcomes)
        failures = sum(1 for _, code in outcomes if code is not None)
        budget: dict[str, Any] | None = None
        if self.rate_limit is not None:
            cutoff = time.monotonic() - self.rate_limit.per_seconds
            used = sum(1 for sent in self.sent_at if sent >= cutoff)
            budget = {
                "limit": self.rate_limit.requests,
                "per_seconds": self.rate_limit.per_seconds,
                "remaining": max(0, self.rate_limit.requests - used),
            }
        return {
            "last_call_at": self.last_call_at,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "recent_calls": len(outcomes),
            "recent_error_rate": (failures / len(outcomes)) if outcomes else 0.0,
            "rate_limit": budget,
        }


_closing: set[asyncio.Task[None]] = set()


def _schedule_close(client: httpx.AsyncClient) -> None:
    task = asyncio.get_running_loop().create_task(_close_later(client))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


_runtimes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, IntegrationRuntime]] = (
    weakref.WeakKeyDictionary()
)


def runtime_for(resolved: ResolvedIntegration) -> IntegrationRuntime:
    registry = _runtimes.setdefault(asyncio.get_running_loop(), {})
    runtime = registry.get(resolved.key)
    if runtime is None or runtime.revision != resolved.revision:
        if runtime is not None:
            # Calls already in flight keep the old client; it is closed once they are done.
            _schedule_close(runtime.client)
        runtime = IntegrationRuntime(resolved)
        registry[resolved.key] = runtime
    return runtime


def peek_runtime(key: str) -> IntegrationRuntime | None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return _runtimes.get(loop, {}).get(key)


def forget_runtime(key: str) -> None:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    runtime = _runtimes.get(loop, {}).pop(key, None)
    if runtime is not None:
        _schedule_close(runtime.client)


async def _close_later(client: httpx.AsyncClient, delay: float = 60.0) -> None:
    await asyncio.sleep(delay)
    await client.aclose()


# ---- request preparation ----------------------------------------------------------


@dataclass
class PreparedRequest:
    method: str
    url: str
    query: dict[str, Any]
    body: dict[str, Any]
    headers: dict[str, str]
    encoding: str

    def build(self, page: PageRequest) -> httpx.Request:
        if page.url is not None:
            # A provider-given link already carries the query of the next page.
            return httpx.Request(self.method, page.url, headers=self.headers)
        query = {**{k: _query_value(v) for k, v in self.query.items()}, **page.params}
        kwargs: dict[str, Any] = {}
        if self.method not in ("GET", "DELETE") or self.body:
            if self.encoding == "form":
                kwargs["data"] = {k: _query_value(v) for k, v in self.body.items()}
            elif self.encoding == "multipart":
                kwargs["files"] = {k: (None, str(_query_value(v))) for k, v in self.body.items()}
            elif self.body or self.method in ("POST", "PUT", "PATCH"):
                kwargs["json"] = self.body
        return httpx.Request(self.method, self.url, params=query, headers=self.headers, **kwargs)


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _provider_maps(definition: ProviderDefinition, direction: Direction) -> dict[str, ParameterMapSpec]:
    return {m.internal: m for m in definition.parameter_maps if m.direction is direction}


def prepare_request(
    resolved: ResolvedIntegration, function: str, endpoint: EndpointSpec, params: Mapping[str, Any]
) -> PreparedRequest:
    """Check and map the caller's parameters into a request; bad input names the parameter."""
    settings = resolved.settings
    declared = {spec.name for spec in endpoint.params}
    undeclared = sorted(name for name in params if name not in declared)
    if undeclared:
        # A parameter nobody reads is a caller's mistake (a typo, the wrong function): silently
        # dropping it would send a request that does something else than asked.
        takes = ", ".join(sorted(declared)) or "no parameters"
        raise ValidationFailed(
            f"params.{undeclared[0]}", f"is not a parameter of {function}; it takes {takes}"
        )
    path_values: dict[str, str] = {}
    query: dict[str, Any] = {}
    body: dict[str, Any] = {}
    headers: dict[str, str] = {
        "User-Agent": USER_AGENT,
        "Accept": "application/json",
        **render(resolved.definition.headers, settings),
        **render(endpoint.headers, settings),
    }
    for spec in endpoint.params:
        if spec.constant is not None:
            value = render(spec.constant, settings)
        else:
            value = params.get(spec.name)
            if value is None or value == "":
                value = render(spec.default, settings)
        if value is None:
            if spec.required:
                raise ValidationFailed(f"params.{spec.name}", f"is required by {function}")
            continue
        external, steps = resolved.definition.effective_param(spec)
        try:
            value = apply_steps(value, _steps(steps, settings))
        except TransformError as exc:
            raise ValidationFailed(f"params.{spec.name}", str(exc)) from None
        if value is None:
            if spec.required:
                raise ValidationFailed(f"params.{spec.name}", f"is required by {function}")
            continue
        match spec.location:
            case ParamLocation.PATH:
                path_values[external] = quote(str(value), safe="")
                path_values[spec.name] = path_values[external]
            case ParamLocation.QUERY:
                if external in query:
                    # Several parameters of one repeated query name (Cliniko's q[]) add up.
                    prior, extra = query[external], value
                    query[external] = [
                        *(prior if isinstance(prior, list) else [prior]),
                        *(extra if isinstance(extra, list) else [extra]),
                    ]
                else:
                    query[external] = value
            case ParamLocation.BODY:
                set_path(body, external, value)
            case ParamLocation.HEADER:
                headers[external] = str(value)
    path = render(endpoint.path, settings)
    missing = [n for _, n, _, _ in string.Formatter().parse(path) if n and n not in path_values]
    if missing:
        raise ValidationFailed(f"params.{missing[0]}", f"is required by {function} (it is part of the path)")
    path = path.format(**path_values)
    if endpoint.body_encoding == "json" and endpoint.method in ("POST", "PUT", "PATCH"):
        headers.setdefault("Content-Type", "application/json")
    return PreparedRequest(
        endpoint.method, resolved.url + "/" + path.lstrip("/"), query, body, headers, endpoint.body_encoding
    )


# ---- responses --------------------------------------------------------------------


def provider_message(response: httpx.Response, path: str | None = None) -> str:
    """The provider's own explanation, in whatever envelope it uses."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if path:
        found = get_path(body, path)
        if found:
            return str(found)[:500]
    if isinstance(body, str):
        return body[:500]
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])[:500]
        message = body.get("message") or body.get("detail") or (error if isinstance(error, str) else None)
        errors = body.get("errors")
        parts = [str(message)] if message else []
        if isinstance(errors, dict):
            parts.append("; ".join(f"{key} {value}" for key, value in errors.items()))
        elif isinstance(errors, list) and errors:
            texts = [str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors]
            parts.append("; ".join(texts))
        if parts:
            return ": ".join(parts)[:500]
    return str(body)[:500]


def _retry_after(response: httpx.Response) -> float | None:
    header = response.headers.get("Retry-After")
    if header:
        try:
            return max(0.0, float(header))
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(header)
            if parsed is not None:
                return max(0.0, (parsed - datetime.now(UTC)).total_seconds())
    reset = response.headers.get("X-RateLimit-Reset")
    if reset:
        try:
            value = float(reset)
        except ValueError:
            return None
        # Cliniko sends an epoch; others send seconds to wait.
        return max(0.0, value - time.time()) if value > 1_000_000_000 else value
    return None


_RATE_LIMIT_REASONS = ("rateLimitExceeded", "userRateLimitExceeded")


def classify_response(response: httpx.Response, message_path: str | None = None) -> IntegrationError:
    status = response.status_code
    message = provider_message(response, message_path)
    common: dict[str, Any] = {"provider_status": status, "provider_message": message}
    if status == 429 or (status == 403 and any(reason in response.text for reason in _RATE_LIMIT_REASONS)):
        return IntegrationError(
            "rate_limited",
            f"the provider is rate limiting: {message}",
            retry_after=_retry_after(response),
            request_not_sent=True,
            **common,
        )
    if status in (401, 403):
        return IntegrationError("auth_failed", f"the provider refused the credential: {message}", **common)
    if status == 404:
        return IntegrationError("not_found", f"not found at the provider: {message}", **common)
    if status == 410:
        return IntegrationError("gone", f"the provider no longer answers this: {message}", **common)
    if status == 408 or status == 504:
        return IntegrationError("timeout", f"the provider timed out: {message}", **common)
    if status >= 500:
        failed = f"the provider failed ({status}): {message}"
        return IntegrationError("unavailable", failed, retry_after=_retry_after(response), **common)
    if status in (400, 409, 412, 422):
        rejected = f"the provider rejected the request: {message}"
        return IntegrationError("validation_failed", rejected, **common)
    return IntegrationError("permanent", f"the provider answered {status}: {message}", **common)


def select_records(body: Any, spec: ResponseSpec) -> list[Any]:
    selected = get_path(body, spec.records) if spec.records else body
    if selected is None:
        return []
    if spec.single or isinstance(selected, dict):
        return [selected]
    if isinstance(selected, list):
        return selected
    return [selected]


@dataclass(frozen=True)
class RecordMapper:
    """A function's field mapping with its transforms' arguments rendered, their functions looked up
    and their paths split once, not per record."""

    # (internal name, source path as written, its parts, default, transforms)
    fields: tuple[tuple[str, str, tuple[str, ...], Any, ResolvedSteps], ...]
    # (internal name, external path as written, its parts, transforms)
    shared: tuple[tuple[str, str, tuple[str, ...], ResolvedSteps], ...]
    include_unmapped: bool

    @classmethod
    def of(
        cls,
        fields: Mapping[str, FieldSpec],
        include_unmapped: bool,
        provider_out: Mapping[str, ParameterMapSpec],
        settings: Mapping[str, Any],
    ) -> RecordMapper:
        return cls(
            tuple(
                (
                    internal,
                    spec.source,
                    path_parts(spec.source),
                    spec.default,
                    resolve_steps(_steps(spec.transform, settings)) if spec.transform else (),
                )
                for internal, spec in fields.items()
            ),
            tuple(
                (
                    internal,
                    shared.external,
                    path_parts(shared.external),
                    resolve_steps(_steps(shared.transform, settings)),
                )
                for internal, shared in provider_out.items()
                if internal not in fields
            ),
            include_unmapped,
        )

    def __call__(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            return {"value": raw}
        if not self.fields and not self.shared:
            return dict(raw)
        record: dict[str, Any] = dict(raw) if self.include_unmapped else {}
        for internal, source, parts, default, steps in self.fields:
            value = get_parts(raw, parts)
            if value is None:
                value = default
            if value is not None and steps:
                try:
                    value = apply_resolved(value, steps)
                except TransformError as exc:
                    raise IntegrationError(
                        "permanent", f"the provider's {source} could not be read as {internal}: {exc}"
                    ) from None
            record[internal] = value
        for internal, external, parts, steps in self.shared:
            value = get_parts(raw, parts)
            if value is None:
                continue
            try:
                record[internal] = apply_resolved(value, steps)
            except TransformError as exc:
                raise IntegrationError(
                    "permanent", f"the provider's {external} could not be read as {internal}: {exc}"
                ) from None
        return record


def map_record(
    raw: Any,
    fields: Mapping[str, FieldSpec],
    include_unmapped: bool,
    provider_out: Mapping[str, ParameterMapSpec],
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    return RecordMapper.of(fields, include_unmapped, provider_out, settings)(raw)


def _body(response: httpx.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return response.text


# ---- the caller -------------------------------------------------------------------


def _transport_error(exc: httpx.TransportError, *, writes: bool) -> IntegrationError:
    """Was the request possibly seen by the provider? Only connect-phase failures say no.

    A write that may have arrived (a timeout or a reset once the request went out) is
    `outcome_unknown`: the provider may have committed it and lost only the answer, so the
    caller must look the record up before sending it again.
    """
    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return IntegrationError("timeout", f"could not connect in time ({name})", request_not_sent=True)
    if isinstance(exc, httpx.ConnectError):
        return IntegrationError("unavailable", f"cannot reach the provider ({name})", request_not_sent=True)
    timed_out = isinstance(exc, httpx.TimeoutException)
    if writes:
        lost = "did not answer in time" if timed_out else f"dropped the connection ({name})"
        return IntegrationError(
            "outcome_unknown",
            f"the provider {lost} after the write was sent; it may have been applied,"
            " so look the record up before sending it again",
        )
    if timed_out:
        return IntegrationError("timeout", f"the provider did not answer in time ({name})")
    return IntegrationError("unavailable", f"the connection failed ({name})")


class ProviderCaller:
    """Runs provider functions over HTTP for a resolved integration."""

    def __init__(self, sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        self._sleep = sleep

    async def execute(
        self,
        resolved: ResolvedIntegration,
        function: str,
        params: Mapping[str, Any] | None = None,
        *,
        max_records: int | None = None,
        priority: Priority = Priority.LIVE,
    ) -> CallResult:
        result = CallResult(function=function, records=[], pages=0, status_code=None)
        async for record in self._iterate(resolved, function, params or {}, max_records, result, priority):
            result.records.append(record)
        return result

    async def iterate(
        self,
        resolved: ResolvedIntegration,
        function: str,
        params: Mapping[str, Any] | None = None,
        *,
        max_records: int | None = None,
        priority: Priority = Priority.LIVE,
    ) -> AsyncIterator[dict[str, Any]]:
        """Records one by one, fetching further pages only as they are consumed."""
        result = CallResult(function=function, records=[], pages=0, status_code=None)
        async for record in self._iterate(resolved, function, params or {}, max_records, result, priority):
            yield record

    def endpoint(self, resolved: ResolvedIntegration, function: str) -> EndpointSpec:
        endpoint = resolved.definition.functions.get(function)
        if endpoint is None:
            offered = ", ".join(sorted(resolved.definition.functions))
            raise ValidationFailed(
                "function", f"{resolved.definition.key} has no function {function!r}; it offers: {offered}"
            )
        return endpoint

    async def pages(
        self,
        resolved: ResolvedIntegration,
        function: str,
        params: Mapping[str, Any] | None = None,
        *,
        priority: Priority = Priority.BACKGROUND,
        result: CallResult | None = None,
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        """The records page by page, one request each (retries aside), fetched as consumed: for
        callers that write and checkpoint a page at a time, or pass each page on. `result`, when
        given, counts the pages as they come."""
        if result is None:
            result = CallResult(function=function, records=[], pages=0, status_code=None)
        async with contextlib.aclosing(
            self._pages(resolved, function, params or {}, result, priority)
        ) as pages:
            async for page in pages:
                yield page

    async def _iterate(
        self,
        resolved: ResolvedIntegration,
        function: str,
        params: Mapping[str, Any],
        max_records: int | None,
        result: CallResult,
        priority: Priority,
    ) -> AsyncIterator[dict[str, Any]]:
        produced = 0
        async with contextlib.aclosing(self._pages(resolved, function, params, result, priority)) as pages:
            async for page in pages:
                for record in page:
                    yield record
                    produced += 1
                    if max_records is not None and produced >= max_records:
                        return

    async def _pages(
        self,
        resolved: ResolvedIntegration,
        function: str,
        params: Mapping[str, Any],
        result: CallResult,
        priority: Priority,
    ) -> AsyncGenerator[list[dict[str, Any]], None]:
        endpoint = self.endpoint(resolved, function)
        prepared = prepare_request(resolved, function, endpoint, params)
        runtime = runtime_for(resolved)
        pagination = resolved.definition.pagination_for(endpoint)
        paginator = (
            Paginator(pagination)
            if pagination.style is not PaginationStyle.NONE and not endpoint.response.single
            else None
        )
        provider_out = _provider_maps(resolved.definition, Direction.OUT)
        # Fields that name no transform take the provider-wide map's for their name.
        fields = {
            internal: resolved.definition.effective_field(internal, spec)
            for internal, spec in endpoint.response.fields.items()
        }
        mapper = RecordMapper.of(fields, endpoint.response.include_unmapped, provider_out, resolved.settings)
        page: PageRequest | None = paginator.first() if paginator else PageRequest()
        error: IntegrationError | None = None
        try:
            while page is not None:
                build = functools.partial(prepared.build, page)
                response = await self._send(runtime, resolved, endpoint, build, priority)
                result.pages += 1
                result.status_code = response.status_code
                body = _body(response)
                raw_records = select_records(body, endpoint.response)
                if endpoint.response.next_sync_token is not None and isinstance(body, dict):
                    token = get_path(body, endpoint.response.next_sync_token)
                    if token not in (None, ""):
                        result.sync_token = str(token)
                yield [mapper(raw) for raw in raw_records]
                page = paginator.next(body, len(raw_records)) if paginator else None
        except IntegrationError as exc:
            error = exc
            raise
        finally:
            runtime.note_outcome(error)

    async def _send(
        self,
        runtime: IntegrationRuntime,
        resolved: ResolvedIntegration,
        endpoint: EndpointSpec,
        build: Callable[[], httpx.Request],
        priority: Priority,
    ) -> httpx.Response:
        retry = resolved.definition.retry
        retry_safe = endpoint.is_retry_safe

        def should_retry(exc: BaseException) -> bool:
            if not isinstance(exc, IntegrationError) or not exc.transient:
                return False
            if exc.retry_after is not None and exc.retry_after > retry.max_retry_after:
                return False
            # A call that may have reached the provider is repeated only when repeating is harmless.
            return retry_safe or exc.request_not_sent

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            backoff = min(retry.max_delay, retry.base_delay * 2 ** (state.attempt_number - 1))
            backoff = random.uniform(backoff / 2, backoff)  # jitter keeps concurrent callers apart
            if isinstance(exc, IntegrationError) and exc.retry_after is not None:
                # Retry-After: 0 would otherwise spin through every attempt at once.
                return max(exc.retry_after, retry.base_delay / 10)
            return backoff

        def log_retry(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            log.info(
                "provider call retried",
                provider=resolved.definition.key,
                attempt=state.attempt_number,
                code=getattr(exc, "code", None),
            )

        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(retry.attempts),
            wait=wait,
            retry=retry_if_exception(should_retry),
            sleep=self._sleep,
            before_sleep=log_retry,
            reraise=True,
        ):
            with attempt:
                return await self._attempt(runtime, endpoint, build, priority)
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _attempt(
        self,
        runtime: IntegrationRuntime,
        endpoint: EndpointSpec,
        build: Callable[[], httpx.Request],
        priority: Priority,
    ) -> httpx.Response:
        renewed = False
        while True:
            request = build()
            await runtime.auth.apply(request, runtime.client)
            if runtime.budget is not None:
                await runtime.budget.acquire(priority)
            runtime.note_sent()
            try:
                response = await runtime.client.send(request)
            except httpx.TransportError as exc:
                raise _transport_error(exc, writes=not endpoint.is_retry_safe) from None
            if response.status_code in runtime.auth.reauth_statuses and not renewed:
                # The provider did not act on a rejected credential, so sending again is safe.
                renewed = await runtime.auth.renew(runtime.client, request)
                if renewed:
                    continue
            if response.status_code >= 400 or (300 <= response.status_code < 400):
                raise classify_response(response, endpoint.response.error_message_path)
            return response
