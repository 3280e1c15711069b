"""A typed Python client for clinicsync's sync-run API (httpx, synchronous and asynchronous).

    from clinicsync.client import SyncClient

    with SyncClient("https://clinicsync.example", token) as sync:
        started = sync.trigger(backward_days=14, forward_days=14)
        done = sync.wait_for_completion(started.sync_id, timeout=600)
        print(done.status, done.records_processed)

`AsyncSyncClient` has the same methods as coroutines. Each method is described once, as a request
(`_Call`), and both clients send it; answers are the API's own schemas. An error answer raises
`SyncApiError` with the API's code, message and details (the reference's `error_type`,
`retry_after`, `error_code` for sync errors).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
from pydantic import BaseModel

from clinicsync.sync.runs.schemas import (
    CleanupResult,
    SchedulerStatus,
    SyncHistory,
    SyncProgress,
    SyncRunRead,
    SyncStarted,
)

T = TypeVar("T", bound=BaseModel)
FINISHED = frozenset({"completed", "failed", "cancelled"})


class SyncApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message, self.details = status, code, message, details


class SyncTimeout(TimeoutError):
    def __init__(self, progress: SyncProgress, timeout: float) -> None:
        super().__init__(f"sync {progress.sync_id} still {progress.status} after {timeout} s")
        self.progress = progress


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    model: type[T]
    params: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] | None = None


def _answer(call: _Call[T], response: httpx.Response) -> T:
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
        except (ValueError, KeyError, TypeError):
            raise SyncApiError(response.status_code, "http_error", response.text[:500]) from None
        raise SyncApiError(
            response.status_code, error.get("code", "error"), error.get("message", ""), error.get("details")
        )
    return call.model.model_validate(response.json())


def _ask(**fields: Any) -> dict[str, Any]:
    return {
        name: str(value) if isinstance(value, uuid.UUID) else value
        for name, value in fields.items()
        if value is not None
    }


class _Calls:
    """The API's sync-run requests, described once for both clients."""

    @staticmethod
    def trigger(integration_id: uuid.UUID | str | None = None, **ask: Any) -> _Call[SyncStarted]:
        return _Call(
            "POST", "/api/v1/sync/trigger", SyncStarted, body=_ask(integration_id=integration_id, **ask)
        )

    @staticmethod
    def preview(integration_id: uuid.UUID | str | None = None, **ask: Any) -> _Call[SyncStarted]:
        return _Call(
            "POST", "/api/v1/sync/preview", SyncStarted, body=_ask(integration_id=integration_id, **ask)
        )

    @staticmethod
    def full_sync(
        clinic_id: uuid.UUID | str,
        *,
        backward_days: int | None = None,
        forward_days: int | None = None,
        bidirectional: bool = True,
    ) -> _Call[SyncStarted]:
        body = _ask(
            clinicId=clinic_id,
            backwardDays=backward_days,
            forwardDays=forward_days,
            bidirectional=bidirectional,
        )
        return _Call("POST", "/api/sync/full", SyncStarted, body=body)

    @staticmethod
    def start(organization_id: uuid.UUID | str, sync_mode: str = "active") -> _Call[SyncStarted]:
        return _Call(
            "POST", f"/api/v1/sync/start/{organization_id}", SyncStarted, params={"sync_mode": sync_mode}
        )

    @staticmethod
    def progress(sync_id: uuid.UUID | str) -> _Call[SyncProgress]:
        return _Call("GET", f"/api/v1/sync/progress/{sync_id}", SyncProgress)

    @staticmethod
    def run(sync_id: uuid.UUID | str) -> _Call[SyncRunRead]:
        return _Call("GET", f"/api/v1/sync/runs/{sync_id}", SyncRunRead)

    @staticmethod
    def cancel(sync_id: uuid.UUID | str) -> _Call[SyncProgress]:
        return _Call("POST", f"/api/v1/sync/{sync_id}/cancel", SyncProgress)

    @staticmethod
    def history(organization_id: uuid.UUID | str, limit: int = 10) -> _Call[SyncHistory]:
        return _Call("GET", f"/api/v1/sync/history/{organization_id}", SyncHistory, params={"limit": limit})

    @staticmethod
    def cleanup() -> _Call[CleanupResult]:
        return _Call("POST", "/api/v1/sync/cleanup", CleanupResult)

    @staticmethod
    def scheduler_status() -> _Call[SchedulerStatus]:
        return _Call("GET", "/api/v1/sync/scheduler/status", SchedulerStatus)


class _Me(BaseModel):
    organization_id: uuid.UUID


def _headers(token: str, organization_id: uuid.UUID | str | None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if organization_id is not None:
        headers["X-Organization-ID"] = str(organization_id)
    return headers


class SyncClient:
    """Blocking client (httpx.Client)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        organization_id: uuid.UUID | str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers=_headers(token, organization_id), timeout=timeout, transport=transport
        )

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, call: _Call[T]) -> T:
        response = self._http.request(call.method, call.path, params=call.params, json=call.body)
        return _answer(call, response)

    def organization_id(self) -> uuid.UUID:
        return self._send(_Call("GET", "/api/v1/me", _Me)).organization_id

    def trigger(self, integration_id: uuid.UUID | str | None = None, **ask: Any) -> SyncStarted:
        return self._send(_Calls.trigger(integration_id, **ask))

    def preview(self, integration_id: uuid.UUID | str | None = None, **ask: Any) -> SyncStarted:
        return self._send(_Calls.preview(integration_id, **ask))

    def full_sync(self, clinic_id: uuid.UUID | str, **window: Any) -> SyncStarted:
        return self._send(_Calls.full_sync(clinic_id, **window))

    def start(self, organization_id: uuid.UUID | str, sync_mode: str = "active") -> SyncStarted:
        return self._send(_Calls.start(organization_id, sync_mode))

    def progress(self, sync_id: uuid.UUID | str) -> SyncProgress:
        return self._send(_Calls.progress(sync_id))

    def run(self, sync_id: uuid.UUID | str) -> SyncRunRead:
        return self._send(_Calls.run(sync_id))

    def cancel(self, sync_id: uuid.UUID | str) -> SyncProgress:
        return self._send(_Calls.cancel(sync_id))

    def history(self, organization_id: uuid.UUID | str | None = None, limit: int = 10) -> SyncHistory:
        return self._send(_Calls.history(organization_id or self.organization_id(), limit))

    def cleanup(self) -> CleanupResult:
        return self._send(_Calls.cleanup())

    def scheduler_status(self) -> SchedulerStatus:
        return self._send(_Calls.scheduler_status())

    def wait_for_completion(
        self,
        sync_id: uuid.UUID | str,
        timeout: float = 600.0,
        *,
        poll: float = 1.0,
        on_progress: Callable[[SyncProgress], None] | None = None,
    ) -> SyncProgress:
        """Polls the run's progress until it ends (completed, failed or cancelled)."""
        deadline = time.monotonic() + timeout
        while True:
            progress = self.progress(sync_id)
            if on_progress is not None:
                on_progress(progress)
            if progress.status in FINISHED:
                return progress
            if time.monotonic() >= deadline:
                raise SyncTimeout(progress, timeout)
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))


class AsyncSyncClient:
    """The same, for asyncio (httpx.AsyncClient)."""

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        organization_id: uuid.UUID | str | None = None,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url, headers=_headers(token, organization_id), timeout=timeout, transport=transport
        )

    async def __aenter__(self) -> AsyncSyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, call: _Call[T]) -> T:
        response = await self._http.request(call.method, call.path, params=call.params, json=call.body)
        return _answer(call, response)

    async def organization_id(self) -> uuid.UUID:
        return (await self._send(_Call("GET", "/api/v1/me", _Me))).organization_id

    async def trigger(self, integration_id: uuid.UUID | str | None = None, **ask: Any) -> SyncStarted:
        return await self._send(_Calls.trigger(integration_id, **ask))

    async def preview(self, integration_id: uuid.UUID | str | None = None, **ask: Any) -> SyncStarted:
        return await self._send(_Calls.preview(integration_id, **ask))

    async def full_sync(self, clinic_id: uuid.UUID | str, **window: Any) -> SyncStarted:
        return await self._send(_Calls.full_sync(clinic_id, **window))

    async def start(self, organization_id: uuid.UUID | str, sync_mode: str = "active") -> SyncStarted:
        return await self._send(_Calls.start(organization_id, sync_mode))

    async def progress(self, sync_id: uuid.UUID | str) -> SyncProgress:
        return await self._send(_Calls.progress(sync_id))

    async def run(self, sync_id: uuid.UUID | str) -> SyncRunRead:
        return await self._send(_Calls.run(sync_id))

    async def cancel(self, sync_id: uuid.UUID | str) -> SyncProgress:
        return await self._send(_Calls.cancel(sync_id))

    async def history(self, organization_id: uuid.UUID | str | None = None, limit: int = 10) -> SyncHistory:
        return await self._send(_Calls.history(organization_id or await self.organization_id(), limit))

    async def cleanup(self) -> CleanupResult:
        return await self._send(_Calls.cleanup())

    async def scheduler_status(self) -> SchedulerStatus:
        return await self._send(_Calls.scheduler_status())

    async def wait_for_completion(
        self,
        sync_id: uuid.UUID | str,
        timeout: float = 600.0,
        *,
        poll: float = 1.0,
        on_progress: Callable[[SyncProgress], None] | None = None,
    ) -> SyncProgress:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            progress = await self.progress(sync_id)
            if on_progress is not None:
                on_progress(progress)
            if progress.status in FINISHED:
                return progress
            if loop.time() >= deadline:
                raise SyncTimeout(progress, timeout)
            await asyncio.sleep(min(poll, max(0.0, deadline - loop.time())))


__all__ = ["AsyncSyncClient", "SyncApiError", "SyncClient", "SyncTimeout"]
