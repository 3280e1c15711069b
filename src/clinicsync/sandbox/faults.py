"""Fault settings for a sandbox server and the random draws that apply them.

Every knob is off by default. Rates are probabilities per request in [0, 1]; ``*_next`` counters
apply to the next N matching requests and count down. Settings can be given at start
(``run_sandbox(..., faults={...})`` or CLI flags) and changed live with ``PUT /_sandbox/faults``
(fields merge into the current settings; ``POST /_sandbox/faults/reset`` restores the defaults).

Fault kinds and what a client sees:

=====================  ==========================================================================
``error_rate``         an error response, status drawn from ``error_statuses``, in the provider's
                       own error format; nothing is applied
``latency_ms``         every matching request waits ``latency_ms`` (fixed), or a uniform draw in
                       ``[latency_ms, latency_max_ms]`` when ``latency_max_ms`` is set
``hang_rate``          no response for ``hang_seconds`` (longer than any sane client timeout); the
                       client times out. The hang ends early when the client disconnects
``reset_rate``         the connection is reset (TCP RST) before any response: httpx raises
                       ``ReadError`` / ``RemoteProtocolError``; nothing is applied
``rate_limit_next``    the next N requests get 429 (provider format and headers, with
                       ``retry_after_seconds``)
``drop_after_commit``  write requests (POST/PUT/PATCH/DELETE) are applied, then the connection is
                       reset instead of sending the response: the classic "did my write happen?"
``page_duplicate_rate`` list endpoints start a page ``page_overlap`` rows early, repeating rows
                       the client saw on the previous page
``page_shuffle_rate``  list endpoints return a page's rows in a random order
``token_expire_next``  the next N authenticated requests are treated as carrying an expired token
                       (providers call ``SandboxServer.consume_token_expiry``)
``token_ttl_seconds``  overrides the lifetime of tokens issued by providers that issue them
=====================  ==========================================================================

``match_path`` (a regular expression searched in the request path) and ``match_methods`` narrow
which requests the per-request faults apply to. Control API requests (``/_sandbox/...``) are never
faulted. ``seed`` makes the random draws reproducible.
"""

from __future__ import annotations

import random
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class FaultSettings(BaseModel):
    """Live-tunable fault injection for one sandbox server (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    error_rate: float = Field(0.0, ge=0.0, le=1.0)
    error_statuses: list[int] = Field(default_factory=lambda: [500, 502, 503])
    latency_ms: float = Field(0.0, ge=0.0, le=600_000.0)
    latency_max_ms: float | None = Field(None, ge=0.0, le=600_000.0)
    hang_rate: float = Field(0.0, ge=0.0, le=1.0)
    hang_seconds: float = Field(300.0, gt=0.0, le=3600.0)
    reset_rate: float = Field(0.0, ge=0.0, le=1.0)
    rate_limit_next: int = Field(0, ge=0)
    retry_after_seconds: int = Field(1, ge=0, le=3600)
    drop_after_commit_rate: float = Field(0.0, ge=0.0, le=1.0)
    page_duplicate_rate: float = Field(0.0, ge=0.0, le=1.0)
    page_overlap: int = Field(1, ge=1, le=1000)
    page_shuffle_rate: float = Field(0.0, ge=0.0, le=1.0)
    token_expire_next: int = Field(0, ge=0)
    token_ttl_seconds: float | None = Field(None, gt=0.0)
    match_path: str | None = None
    match_methods: list[str] | None = None
    seed: int | None = None

    @field_validator("error_statuses")
    @classmethod
    def _statuses_are_errors(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("must list at least one status code")
        bad = [code for code in value if not 400 <= code <= 599]
        if bad:
            raise ValueError(f"status codes must be 400-599, got {bad}")
        return value

    @field_validator("match_path")
    @classmethod
    def _path_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value

    @field_validator("match_methods")
    @classmethod
    def _methods_upper(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        methods = [method.upper() for method in value]
        known = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"}
        unknown = [method for method in methods if method not in known]
        if unknown:
            raise ValueError(f"unknown HTTP methods {unknown}")
        return methods

    @model_validator(mode="after")
    def _latency_range(self) -> FaultSettings:
        if self.latency_max_ms is not None and self.latency_max_ms < self.latency_ms:
            raise ValueError("latency_max_ms must be >= latency_ms")
        return self

    def matches(self, method: str, path: str) -> bool:
        if self.match_methods is not None and method.upper() not in self.match_methods:
            return False
        return self.match_path is None or re.search(self.match_path, path) is not None


def merge_fault_settings(current: FaultSettings, changes: dict[str, Any]) -> FaultSettings:
    """Validate ``changes`` on top of ``current``; raises pydantic ``ValidationError``."""
    merged = current.model_dump()
    merged.update(changes)
    return FaultSettings.model_validate(merged)


class FaultDice:
    """Random draws for fault decisions; reseeded whenever settings carry a ``seed``."""

    def __init__(self, seed: int | None = None) -> None:
        self._random = random.Random(seed)

    def reseed(self, seed: int | None) -> None:
        self._random = random.Random(seed)

    def hit(self, rate: float) -> bool:
        return rate > 0.0 and (rate >= 1.0 or self._random.random() < rate)

    def choice(self, values: list[int]) -> int:
        return self._random.choice(values)

    def uniform(self, low: float, high: float) -> float:
        return self._random.uniform(low, high)

    def shuffle(self, values: list[Any]) -> None:
        self._random.shuffle(values)

    def latency_seconds(self, settings: FaultSettings) -> float:
        if settings.latency_max_ms is not None:
            return self.uniform(settings.latency_ms, settings.latency_max_ms) / 1000.0
        return settings.latency_ms / 1000.0
