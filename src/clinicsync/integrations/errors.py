"""Failures of calls to providers, classified with stable codes.

Codes: auth_failed, not_found, gone, validation_failed, rate_limited, unavailable, timeout,
permanent, outcome_unknown. `gone` is the provider's 410: what was asked for is no longer
answered (a deleted resource, or a change cursor such as Google's sync token that it stopped
honouring; an incremental read then falls back to a full one). `transient` says whether trying
again later can succeed; `request_not_sent` says the provider certainly did not act on the
request (so even a non-idempotent call may be sent again).

`outcome` is what a caller that must never duplicate a write needs to know:

- ``not_sent``: the provider never saw the request; sending it again is safe.
- ``refused``: the provider saw it and said no (4xx); sending it again gives the same answer.
- ``unknown``: the request may have been applied (a timeout, a reset, a 5xx, or an answer lost
  after the provider committed); look the record up before sending it again.
"""

from __future__ import annotations

from typing import Any, Literal

from clinicsync.errors import ClinicSyncError

ErrorCode = Literal[
    "auth_failed",
    "not_found",
    "gone",
    "validation_failed",
    "rate_limited",
    "unavailable",
    "timeout",
    "permanent",
    "outcome_unknown",
]
Outcome = Literal["not_sent", "refused", "unknown"]

# How each code is reported to our own API callers: a provider refusing our credentials is
# not the caller's 401, so upstream problems are 5xx gateway statuses.
HTTP_STATUS_BY_CODE: dict[str, int] = {
    "auth_failed": 502,
    "not_found": 404,
    "gone": 502,
    "validation_failed": 422,
    "rate_limited": 429,
    "unavailable": 503,
    "timeout": 504,
    "permanent": 502,
    # A write whose answer was lost: neither a success nor a failure the caller may retry blindly.
    "outcome_unknown": 502,
}
TRANSIENT_CODES = frozenset({"rate_limited", "unavailable", "timeout", "outcome_unknown"})
REFUSED_CODES = frozenset({"validation_failed", "not_found", "gone", "auth_failed", "permanent"})


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
        body_details: dict[str, Any] = {
            "provider_status": provider_status,
            "provider_message": provider_message,
            "outcome": _outcome(code, request_not_sent),
        }
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

    @property
    def outcome(self) -> Outcome:
        return _outcome(self.code, self.request_not_sent)


def _outcome(code: str, request_not_sent: bool) -> Outcome:
    if request_not_sent:
        return "not_sent"
    if code in REFUSED_CODES:
        return "refused"
    return "unknown"
