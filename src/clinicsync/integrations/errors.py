"""Failures of calls to providers, classified with stable codes.

Codes: auth_failed, not_found, validation_failed, rate_limited, unavailable, timeout,
permanent. `transient` says whether trying again later can succeed; `request_not_sent`
says the provider certainly did not act on the request (so even a non-idempotent call
may be sent again).
"""

from __future__ import annotations

from typing import Any, Literal

from clinicsync.errors import ClinicSyncError

ErrorCode = Literal[
    "auth_failed", "not_found", "validation_failed", "rate_limited", "unavailable", "timeout", "permanent"
]

# How each code is reported to our own API callers: a provider refusing our credentials is
# not the caller's 401, so upstream problems are 5xx gateway statuses.
HTTP_STATUS_BY_CODE: dict[str, int] = {
    "auth_failed": 502,
    "not_found": 404,
    "validation_failed": 422,
    "rate_limited": 429,
    "unavailable": 503,
    "timeout": 504,
    "permanent": 502,
}
TRANSIENT_CODES = frozenset({"rate_limited", "unavailable", "timeout"})


class IntegrationError(ClinicSyncError):
    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        provider_status: int | None = None,
        provider_message: str | None = None,
        retry_after: float | None = None,
        request_not_sent: bool = False,
        details: Any = None,
    ) -> None:
        body_details = {"provider_status": provider_status, "provider_message": provider_message}
        if isinstance(details, dict):
            body_details.update(details)
        super().__init__(message, details=body_details, code=code)
        self.status_code = HTTP_STATUS_BY_CODE[code]
        self.provider_status = provider_status
        self.provider_message = provider_message
        self.retry_after = retry_after
        self.request_not_sent = request_not_sent

    @property
    def transient(self) -> bool:
        return self.code in TRANSIENT_CODES
