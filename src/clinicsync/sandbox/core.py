"""The sandbox framework: one ``SandboxServer`` subclass per simulated PMS.

Writing a provider
------------------
Subclass ``SandboxServer`` and set the class attributes, then implement the hooks::

    class ClinikoSandbox(SandboxServer):
        name = "cliniko"                 # registry key and CLI argument
        title = "Cliniko API"
        api_prefix = "/v1"               # the real path prefix; base_url = root_url + api_prefix

        def add_routes(self, router: APIRouter) -> None:        # required: the provider's endpoints
            @router.get("/patients")
            async def list_patients(request: Request) -> Response: ...

        def load_clinic(self, clinic: GeneratedClinic) -> None: # required: (re)build state from the generator
        def dump_state(self) -> dict[str, Any]: ...             # JSON-safe state for --state-file
        def load_state(self, state: dict[str, Any]) -> None: ...
        def state_summary(self) -> dict[str, Any]: ...          # counts for GET /_sandbox/state
        def render_error(self, status, message, *, reason) -> Response:  # the provider's error format
        def rate_limit_headers(self, retry_after: int) -> dict[str, str]:  # e.g. X-RateLimit-Reset
        def identify(self, headers: Headers) -> str | None:     # customer/key identity for the log
        def credentials(self) -> dict[str, str]:                 # what the CLI prints
        def actions(self) -> dict[str, ActionHandler]:           # front-desk actions (see below)
        async def on_start(self) / on_stop(self):                # background tasks (webhooks)

Then add one line to ``clinicsync.sandbox.registry.PROVIDERS``.

Inside handlers, raise ``SandboxError(status, message)`` for any documented error: it is rendered with
``render_error``. List endpoints page through ``self.paginate(request, rows, offset, limit)`` so the
duplicated/shuffled-page faults apply; authentication code calls ``self.consume_token_expiry(request)``
(True means: answer as if the token expired) and token issuers use ``self.token_ttl(default)`` and
``self.token_epoch`` (bumped by ``POST /_sandbox/tokens/expire``). Timestamps come from ``self.clock``.

Every request to the provider routes goes through ``FaultMiddleware`` (``faults.py`` describes each
fault) and lands in ``self.request_log``. Handlers run on one event loop and do not await between
reading and writing state, so each request's state change is atomic.

Control API (never faulted, never logged), all JSON:

==========================================  ============================================================
``GET /_sandbox/info``                      provider name, prefix, base URL, credentials
``GET|PUT /_sandbox/faults``                fault settings; PUT merges the given fields, 422 names bad ones
``POST /_sandbox/faults/reset``             all faults off
``GET|DELETE /_sandbox/requests``           the request log (``?limit=N&faulted=true``) / clear it
``GET|PUT /_sandbox/clock``                 ``{"now", "frozen", "advance_seconds", "timezone", "reset"}``
``GET|PUT /_sandbox/settings``              provider-specific settings (``Settings`` model), merged
``POST /_sandbox/seed``                     regenerate data from a ``ClinicSpec`` (fields merge)
``GET /_sandbox/state``                     summary counts; ``?full=true`` returns ``dump_state()``
``POST /_sandbox/save``                     write the state file now
``POST /_sandbox/tokens/expire``            invalidate every token issued so far
``GET /_sandbox/actions``                   the provider's front-desk actions
``POST /_sandbox/actions/{action}``         run one with a JSON body
==========================================  ============================================================

Control errors are ``{"detail": [{"field": ..., "message": ...}]}`` with status 422 (bad input) or
404 (unknown action).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clinicsync.sandbox.clock import SandboxClock, load_zone
from clinicsync.sandbox.faults import WRITE_METHODS, FaultDice, FaultSettings, merge_fault_settings
from clinicsync.sandbox.generator import ClinicSpec, GeneratedClinic, generate_clinic

CONTROL_PREFIX = "/_sandbox"
ActionHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
ModelT = TypeVar("ModelT", bound=BaseModel)
T = TypeVar("T")


class SandboxError(Exception):
    """A provider-level error; rendered by the server's ``render_error`` in the provider's format."""

    def __init__(
        self, status: int, message: str, *, reason: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason
        self.headers = headers or {}


class ControlError(Exception):
    """A bad control API request: 422 (or ``status``) with per-field messages."""

    def __init__(self, errors: list[dict[str, str]], status: int = 422) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors))
        self.errors = errors
        self.status = status


def validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    """pydantic errors as ``[{"field": "a.b", "message": ...}]``; 'field' names the offending input."""
    errors = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error.get("loc", ()) if part != "__root__") or "body"
        errors.append({"field": location, "message": error.get("msg", "invalid")})
    return errors


def parse_model(model: type[ModelT], data: Any) -> ModelT:
    """Validate ``data`` as ``model`` or raise ``ControlError`` naming each bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ControlError(validation_errors(exc)) from exc


@dataclass(slots=True)
class RequestLogEntry:
    """One request to a provider route, as the sandbox saw it."""

    time: str
    sandbox_time: str
    method: str
    path: str
    query: str
    status: int | None
    faults: list[str] = field(default_factory=list)
    identity: str | None = None
    duration_ms: float = 0.0

    @property
    def fault(self) -> str | None:
        """The first applied fault, or None."""
        return self.faults[0] if self.faults else None

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fault"] = self.fault
        return data


class NoSettings(BaseModel):
    """Providers without settings of their own."""

    model_config = ConfigDict(extra="forbid")


class ClockUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    now: datetime | None = None
    frozen: bool | None = None
    advance_seconds: float | None = None
    timezone: str | None = None
    reset: bool = False


class SandboxServer:
    """One running simulated PMS instance: state, clock, faults, request log and its ASGI app."""

    name: ClassVar[str] = "sandbox"
    title: ClassVar[str] = "Sandbox"
    api_prefix: ClassVar[str] = "/api"
    Settings: ClassVar[type[BaseModel]] = NoSettings

    def __init__(
        self,
        *,
        spec: ClinicSpec | dict[str, Any] | None = None,
        faults: FaultSettings | dict[str, Any] | None = None,
        settings: BaseModel | dict[str, Any] | None = None,
        timezone: str | None = None,
        clock: SandboxClock | None = None,
        state_file: str | Path | None = None,
        request_log_limit: int = 10_000,
    ) -> None:
        base_spec = spec if isinstance(spec, ClinicSpec) else ClinicSpec.model_validate(spec or {})
        if timezone is not None:
            load_zone(timezone)
            base_spec = base_spec.model_copy(update={"timezone": timezone})
        self.spec = base_spec
        self.clock = clock or SandboxClock(base_spec.timezone)
        self._dice = FaultDice()
        self._faults = FaultSettings()
        self.faults = (
            faults if isinstance(faults, FaultSettings) else FaultSettings.model_validate(faults or {})
        )
        self.settings: BaseModel = (
            settings if isinstance(settings, BaseModel) else self.Settings.model_validate(settings or {})
        )
        self.request_log: deque[RequestLogEntry] = deque(maxlen=request_log_limit)
        self.state_file = Path(state_file) if state_file is not None else None
        self.token_epoch = 0
        self.root_url: str | None = None
        self.base_url: str | None = None
        self._shutdown: asyncio.Event | None = None
        self._background: set[asyncio.Task[Any]] = set()
        if self.state_file is not None and self.state_file.exists():
            self._load_state_file(self.state_file)
        else:
            self.reseed(self.spec)

    # ----------------------------------------------------------------- hooks for providers

    def add_routes(self, router: APIRouter) -> None:
        """Register the provider's endpoints on ``router`` (mounted at ``api_prefix``)."""
        raise NotImplementedError

    def add_root_routes(self, router: APIRouter) -> None:
        """Endpoints outside ``api_prefix`` (an OAuth consent page, a token endpoint); none by default."""

    def load_clinic(self, clinic: GeneratedClinic) -> None:
        """Replace all state with records converted from ``clinic``."""
        raise NotImplementedError

    def dump_state(self) -> dict[str, Any]:
        """JSON-serialisable state for the state file (and ``GET /_sandbox/state?full=true``)."""
        raise NotImplementedError

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore what ``dump_state`` produced."""
        raise NotImplementedError

    def state_summary(self) -> dict[str, Any]:
        """Counts and highlights for ``GET /_sandbox/state``."""
        return {}

    def render_error(self, status: int, message: str, *, reason: str | None = None) -> Response:
        """The provider's error response for ``status``; override to match the real API's format."""
        return JSONResponse({"error": {"status": status, "message": message, "reason": reason}}, status)

    def rate_limit_headers(self, retry_after: int) -> dict[str, str]:
        """Headers sent with an injected 429."""
        return {"Retry-After": str(retry_after)}

    def identify(self, headers: Headers) -> str | None:
        """Who is calling (customer key, user, ...) for the request log; never a secret in full."""
        return None

    def credentials(self) -> dict[str, str]:
        """Credentials a client needs, shown by the CLI and ``GET /_sandbox/info``."""
        return {}

    def actions(self) -> dict[str, ActionHandler]:
        """Front-desk actions (``POST /_sandbox/actions/{name}``): name -> async handler(body) -> result."""
        return {}

    async def on_start(self) -> None:
        """Called once the app starts serving (start background tasks with ``spawn``)."""

    async def on_stop(self) -> None:
        """Called on shutdown, before background tasks are cancelled."""

    # ----------------------------------------------------------------- helpers for providers

    @property
    def faults(self) -> FaultSettings:
        return self._faults

    @faults.setter
    def faults(self, value: FaultSettings) -> None:
        self._faults = value
        if value.seed is not None:
            self._dice.reseed(value.seed)

    def reseed(self, spec: ClinicSpec | None = None) -> GeneratedClinic:
        """Regenerate all data from ``spec`` (default: the current one)."""
        if spec is not None:
            self.spec = spec
        self.clock.timezone = self.spec.timezone
        clinic = generate_clinic(self.spec)
        self.load_clinic(clinic)
        return clinic

    def note_fault(self, request: Request | Scope, fault: str) -> None:
        """Record that ``fault`` was applied to the current request (shows in the request log)."""
        scope = request.scope if isinstance(request, Request) else request
        faults = scope.get("state", {}).get("sandbox_faults")
        if isinstance(faults, list):
            faults.append(fault)

    def _faults_apply(self, request: Request) -> bool:
        return self.faults.matches(request.method, request.url.path)

    def paginate(self, request: Request, rows: list[T], offset: int, limit: int) -> list[T]:
        """``rows[offset:offset+limit]`` with the page faults applied (duplicates, shuffled order)."""
        start = offset
        settings = self.faults
        if self._faults_apply(request) and offset > 0 and self._dice.hit(settings.page_duplicate_rate):
            start = max(0, offset - settings.page_overlap)
            self.note_fault(request, f"page_duplicate:{offset - start}")
        # A duplicated page keeps the size the client asked for, so the repeat is not visible by length.
        page = rows[start : start + limit]
        if len(page) > 1 and self._faults_apply(request) and self._dice.hit(settings.page_shuffle_rate):
            page = list(page)
            self._dice.shuffle(page)
            self.note_fault(request, "page_shuffle")
        return page

    def consume_token_expiry(self, request: Request) -> bool:
        """True when this authenticated request must be answered as carrying an expired token."""
        settings = self.faults
        if settings.token_expire_next > 0 and self._faults_apply(request):
            settings.token_expire_next -= 1
            self.note_fault(request, "token_expired")
            return True
        return False

    def token_ttl(self, default_seconds: float) -> float:
        """Lifetime for newly issued tokens: the fault override, else the provider default."""
        return self.faults.token_ttl_seconds or default_seconds

    def spawn(self, coroutine: Awaitable[Any], *, name: str | None = None) -> asyncio.Task[Any]:
        """Run a background coroutine for the server's lifetime (cancelled on shutdown)."""
        task: asyncio.Task[Any] = asyncio.ensure_future(coroutine)
        if name:
            task.set_name(name)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    @property
    def shutdown_event(self) -> asyncio.Event:
        if self._shutdown is None:
            self._shutdown = asyncio.Event()
        return self._shutdown

    # ----------------------------------------------------------------- persistence

    def save_state(self, path: Path | None = None) -> Path:
        """Write the state file atomically (``path`` or the configured ``state_file``)."""
        target = path or self.state_file
        if target is None:
            raise ControlError([{"field": "state_file", "message": "no state file configured"}])
        document = {
            "provider": self.name,
            "format": 1,
            "spec": self.spec.model_dump(mode="json"),
            "clock": self.clock.describe(),
            "state": self.dump_state(),
        }
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(document, handle)
        os.replace(temporary, target)
        return target

    def _load_state_file(self, path: Path) -> None:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("provider") != self.name:
            raise ValueError(f"state file {path} belongs to provider {document.get('provider')!r}")
        self.spec = ClinicSpec.model_validate(document.get("spec", {}))
        self.clock.timezone = self.spec.timezone
        self.load_state(document["state"])

    # ----------------------------------------------------------------- the app

    def build_app(self) -> ASGIApp:
        """The ASGI app: provider routes at ``api_prefix``, control API at ``/_sandbox``, faults around it."""

        @asynccontextmanager
        async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
            self._shutdown = asyncio.Event()
            await self.on_start()
            try:
                yield
            finally:
                self.shutdown_event.set()
                await self.on_stop()
                for task in list(self._background):
                    task.cancel()
                for task in list(self._background):
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                if self.state_file is not None:
                    self.save_state()

        app = FastAPI(title=f"{self.title} (clinicsync sandbox)", lifespan=lifespan, openapi_url=None)
        router = APIRouter(prefix=self.api_prefix)
        self.add_routes(router)
        app.include_router(router)
        root_router = APIRouter()
        self.add_root_routes(root_router)
        app.include_router(root_router)
        app.include_router(self._control_router())

        @app.exception_handler(SandboxError)
        async def sandbox_error(_request: Request, exc: SandboxError) -> Response:
            response = self.render_error(exc.status, exc.message, reason=exc.reason)
            response.headers.update(exc.headers)
            return response

        @app.exception_handler(ControlError)
        async def control_error(_request: Request, exc: ControlError) -> Response:
            return JSONResponse({"detail": exc.errors}, exc.status)

        @app.exception_handler(RequestValidationError)
        async def request_validation(request: Request, exc: RequestValidationError) -> Response:
            errors = [
                {
                    "field": ".".join(str(p) for p in e.get("loc", ()) if p not in ("body", "query")),
                    "message": e.get("msg", "invalid"),
                }
                for e in exc.errors()
            ]
            if request.url.path.startswith(CONTROL_PREFIX):
                return JSONResponse({"detail": errors}, 422)
            message = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
            return self.render_error(400, message, reason="invalid_request")

        @app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
            if request.url.path.startswith(CONTROL_PREFIX):
                return JSONResponse(
                    {"detail": [{"field": "path", "message": str(exc.detail)}]}, exc.status_code
                )
            return self.render_error(exc.status_code, str(exc.detail), reason="http")

        self.fastapi_app = app
        return FaultMiddleware(app, self)

    def info(self) -> dict[str, Any]:
        return {
            "provider": self.name,
            "title": self.title,
            "api_prefix": self.api_prefix,
            "root_url": self.root_url,
            "base_url": self.base_url,
            "credentials": self.credentials(),
            "timezone": self.clock.timezone,
        }

    def _control_router(self) -> APIRouter:
        router = APIRouter(prefix=CONTROL_PREFIX)

        async def json_body(request: Request) -> Any:
            raw = await request.body()
            if not raw.strip():
                return {}
            try:
                return json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ControlError([{"field": "body", "message": f"invalid JSON: {exc.msg}"}]) from exc

        async def object_body(request: Request) -> dict[str, Any]:
            body = await json_body(request)
            if not isinstance(body, dict):
                raise ControlError([{"field": "body", "message": "expected a JSON object"}])
            return body

        @router.get("/info")
        async def get_info() -> dict[str, Any]:
            return self.info()

        @router.get("/faults")
        async def get_faults() -> dict[str, Any]:
            return self.faults.model_dump()

        @router.put("/faults")
        @router.patch("/faults")
        async def put_faults(request: Request) -> dict[str, Any]:
            changes = await object_body(request)
            try:
                self.faults = merge_fault_settings(self.faults, changes)
            except ValidationError as exc:
                raise ControlError(validation_errors(exc)) from exc
            return self.faults.model_dump()

        @router.post("/faults/reset")
        async def reset_faults() -> dict[str, Any]:
            self.faults = FaultSettings()
            return self.faults.model_dump()

        @router.get("/requests")
        async def get_requests(limit: int | None = None, faulted: bool = False) -> list[dict[str, Any]]:
            entries: Iterable[RequestLogEntry] = self.request_log
            if faulted:
                entries = [e for e in entries if e.faults]
            rows = [e.as_dict() for e in entries]
            return rows[-limit:] if limit else rows

        @router.delete("/requests")
        async def clear_requests() -> dict[str, Any]:
            cleared = len(self.request_log)
            self.request_log.clear()
            return {"cleared": cleared}

        @router.get("/clock")
        async def get_clock() -> dict[str, Any]:
            return self.clock.describe()

        @router.put("/clock")
        async def put_clock(request: Request) -> dict[str, Any]:
            update = parse_model(ClockUpdate, await object_body(request))
            if update.timezone is not None:
                try:
                    self.clock.timezone = update.timezone
                except ValueError as exc:
                    raise ControlError([{"field": "timezone", "message": str(exc)}]) from exc
            if update.reset:
                self.clock.reset()
            if update.now is not None:
                self.clock.set(update.now, frozen=update.frozen)
            elif update.frozen is True:
                self.clock.freeze()
            elif update.frozen is False:
                self.clock.unfreeze()
            if update.advance_seconds is not None:
                self.clock.advance(update.advance_seconds)
            return self.clock.describe()

        @router.get("/settings")
        async def get_settings() -> dict[str, Any]:
            return self.settings.model_dump(mode="json")

        @router.put("/settings")
        async def put_settings(request: Request) -> dict[str, Any]:
            merged = self.settings.model_dump() | await object_body(request)
            self.settings = parse_model(self.Settings, merged)
            return self.settings.model_dump(mode="json")

        @router.post("/seed")
        async def seed(request: Request) -> dict[str, Any]:
            merged = self.spec.model_dump() | await object_body(request)
            spec = parse_model(ClinicSpec, merged)
            try:
                clinic = self.reseed(spec)
            except ValueError as exc:
                raise ControlError([{"field": "body", "message": str(exc)}]) from exc
            return {"spec": spec.model_dump(mode="json"), "generated": clinic.summary()}

        @router.get("/state")
        async def state(full: bool = False) -> dict[str, Any]:
            summary = {"provider": self.name, "spec": self.spec.model_dump(mode="json")}
            summary["summary"] = self.state_summary()
            if full:
                summary["state"] = self.dump_state()
            return summary

        @router.post("/save")
        async def save() -> dict[str, Any]:
            return {"saved": str(self.save_state())}

        @router.post("/tokens/expire")
        async def expire_tokens() -> dict[str, Any]:
            self.token_epoch += 1
            return {"token_epoch": self.token_epoch}

        @router.get("/actions")
        async def list_actions() -> dict[str, Any]:
            return {
                name: (handler.__doc__ or "").strip().splitlines()[0] if handler.__doc__ else ""
                for name, handler in self.actions().items()
            }

        @router.post("/actions/{action}")
        async def run_action(action: str, request: Request) -> dict[str, Any]:
            handlers = self.actions()
            handler = handlers.get(action)
            if handler is None:
                known = ", ".join(sorted(handlers)) or "none"
                raise ControlError(
                    [{"field": "action", "message": f"unknown action {action!r}; available: {known}"}], 404
                )
            body = await object_body(request)
            try:
                return await handler(body)
            except ValidationError as exc:
                raise ControlError(validation_errors(exc)) from exc
            except SandboxError as exc:
                raise ControlError(
                    [{"field": exc.reason or "body", "message": exc.message}], exc.status
                ) from exc

        return router


def reset_connection(send: Send) -> bool:
    """Abort the client connection with a TCP RST, without any response.

    uvicorn passes its per-request cycle's bound ``send``; the cycle holds the asyncio transport.
    SO_LINGER(0) turns the close into a reset so the client sees ECONNRESET (httpx ``ReadError``)
    rather than a polite close. Returns False when the server is not uvicorn-like.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if transport is None:
        return False
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    return True


class FaultMiddleware:
    """Raw ASGI wrapper that applies ``SandboxServer.faults`` and writes the request log.

    It must be the outermost layer: resetting a connection needs uvicorn's own ``send``.
    """

    def __init__(self, app: ASGIApp, server: SandboxServer) -> None:
        self.app = app
        self.server = server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        server = self.server
        started = time.perf_counter()
        entry = RequestLogEntry(
            time=datetime.now(UTC).isoformat(),
            sandbox_time=server.clock.now().isoformat(),
            method=scope["method"],
            path=scope["path"],
            query=scope.get("query_string", b"").decode("latin-1"),
            status=None,
            identity=server.identify(Headers(scope=scope)),
        )
        state = scope.setdefault("state", {})
        state["sandbox_faults"] = entry.faults

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                entry.status = message["status"]
            await send(message)

        try:
            await self._handle(scope, receive, send, recording_send, entry)
        finally:
            entry.duration_ms = round((time.perf_counter() - started) * 1000, 3)
            server.request_log.append(entry)

    async def _respond(self, response: Response, scope: Scope, receive: Receive, send: Send) -> None:
        await response(scope, receive, send)

    async def _reset(self, send: Send, scope: Scope, receive: Receive, recording_send: Send) -> None:
        if reset_connection(send):
            # Let uvicorn process the lost connection so it does not try to answer with a 500.
            for _ in range(3):
                await asyncio.sleep(0)
            return
        # Not uvicorn: promise a body and break off, which clients also read as a broken connection.
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"1024")]})
        raise ConnectionAbortedError("sandbox fault: connection reset")

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, recording_send: Send, entry: RequestLogEntry
    ) -> None:
        server = self.server
        settings = server.faults
        dice = server._dice
        method = scope["method"]
        if not settings.matches(method, scope["path"]):
            await self.app(scope, receive, recording_send)
            return

        if settings.rate_limit_next > 0:
            settings.rate_limit_next -= 1
            entry.faults.append("rate_limited")
            response = server.render_error(429, "Too many requests", reason="rate_limited")
            response.headers.update(server.rate_limit_headers(settings.retry_after_seconds))
            await self._respond(response, scope, receive, recording_send)
            return

        delay = dice.latency_seconds(settings)
        if delay > 0:
            entry.faults.append(f"latency:{round(delay * 1000)}ms")
            await asyncio.sleep(delay)

        if dice.hit(settings.hang_rate):
            entry.faults.append("hang")
            if await self._hang(receive, settings.hang_seconds):
                return
            response = server.render_error(504, "Processing exceeded the time limit", reason="timeout")
            await self._respond(response, scope, receive, recording_send)
            return

        if dice.hit(settings.reset_rate):
            entry.faults.append("reset")
            await self._reset(send, scope, receive, recording_send)
            return

        if dice.hit(settings.error_rate):
            status = dice.choice(settings.error_statuses)
            entry.faults.append(f"error:{status}")
            phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
            await self._respond(
                server.render_error(status, phrase, reason="injected"), scope, receive, recording_send
            )
            return

        if method in WRITE_METHODS and dice.hit(settings.drop_after_commit_rate):
            entry.faults.append("drop_after_commit")

            async def swallow(message: Message) -> None:
                if message["type"] == "http.response.start":
                    entry.status = message["status"]

            await self.app(scope, receive, swallow)
            # The write is applied (when the handler succeeded); the client never learns the outcome:
            # log the status it would have seen, and no status actually sent.
            entry.faults.append(f"dropped_status:{entry.status}")
            entry.status = None
            await self._reset(send, scope, receive, recording_send)
            return

        await self.app(scope, receive, recording_send)

    async def _hang(self, receive: Receive, seconds: float) -> bool:
        """Wait ``seconds`` or until the client goes away / the server stops. True if the client left."""

        async def until_disconnect() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return

        waiter = asyncio.ensure_future(until_disconnect())
        stopper = asyncio.ensure_future(self.server.shutdown_event.wait())
        try:
            done, _pending = await asyncio.wait(
                {waiter, stopper}, timeout=seconds, return_when="FIRST_COMPLETED"
            )
        finally:
            for task in (waiter, stopper):
                task.cancel()
        return waiter in done or stopper in done
