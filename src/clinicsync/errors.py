"""Domain errors and their JSON shape: {"error": {"code", "message", "details"}}.

Services raise these; the app turns them into responses with the right status, so
routes never build error bodies by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel


class ClinicSyncError(Exception):
    status_code = 400
    code = "bad_request"
    headers: dict[str, str] | None = None  # sent with the error response

    def __init__(self, message: str, *, details: Any = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        if code is not None:
            self.code = code

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


class ValidationFailed(ClinicSyncError):
    """Input that names a field and the reason it is refused."""

    status_code = 422
    code = "validation_failed"

    def __init__(self, field: str, reason: str, *, details: Any = None) -> None:
        super().__init__(
            f"{field}: {reason}",
            details=details if details is not None else [{"field": field, "reason": reason}],
        )
        self.field = field
        self.reason = reason


class NotFound(ClinicSyncError):
    status_code = 404
    code = "not_found"


class Conflict(ClinicSyncError):
    status_code = 409
    code = "conflict"


class PreconditionFailed(ClinicSyncError):
    status_code = 412
    code = "precondition_failed"


class Unauthorized(ClinicSyncError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ClinicSyncError):
    status_code = 403
    code = "forbidden"


class TooManyRequests(ClinicSyncError):
    status_code = 429
    code = "too_many_requests"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, details={"retry_after_seconds": retry_after})
        self.headers = {"Retry-After": str(retry_after)}


def partial_update(data: BaseModel, required: Iterable[str] | None = None) -> dict[str, Any]:
    """The fields a PATCH body set, refusing an explicit null for ``required`` ones (all if None).

    Optional fields default to None so they can be left out; sending null for one that the
    record cannot lack is a mistake we name rather than store.
    """
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None and (required is None or field in required):
            raise ValidationFailed(field, "may not be null")
    return changes
