"""The `sync:` section of a provider definition: which function serves each sync operation.

The SyncManager speaks one vocabulary (canonical operations, payloads and records, see
:mod:`clinicsync.integrations.canonical`); each provider speaks its own. This section is the
translation, as data: for every operation a provider supports it names the function, how the
canonical payload feeds that function's parameters (`params`), and how the function's records
become canonical records (`fields`). An operation the section leaves out is unsupported.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from clinicsync.integrations.steps import TransformStep, fold_transform

if TYPE_CHECKING:
    from clinicsync.integrations.definitions import EndpointSpec


class SyncOperation(StrEnum):
    APPOINTMENT_CREATE = "appointment.create"
    APPOINTMENT_UPDATE = "appointment.update"
    APPOINTMENT_CANCEL = "appointment.cancel"
    APPOINTMENT_GET = "appointment.get"
    APPOINTMENT_FIND = "appointment.find"
    APPOINTMENT_LIST_CHANGED = "appointment.list_changed"
    PATIENT_CREATE = "patient.create"
    PATIENT_UPDATE = "patient.update"
    PATIENT_FIND = "patient.find"
    PATIENT_GET = "patient.get"
    PATIENT_LIST_CHANGED = "patient.list_changed"
    PRACTITIONER_LIST = "practitioner.list"
    # Clinical notes of past visits (SOAP, discharge summary), read by sync runs' enrichment.
    CONSULTATION_LIST = "consultation.list"
    CONSULTATION_GET = "consultation.get"
    # The diary's grid for PMSs whose schedule is slots with a capacity (sync/slots).
    SCHEDULE_CONFIG = "schedule.config"

    @property
    def kind(self) -> str:
        """The canonical record kind the operation answers with."""
        return self.value.split(".", 1)[0]


APPOINTMENT_STATUSES = ("pending", "confirmed", "cancelled", "no_show", "completed")

# The canonical record keys per kind. `duration_minutes` is an aid for providers that keep a
# length instead of an end: a mapping may produce it and the end is computed from it.
RECORD_KEYS: dict[str, tuple[str, ...]] = {
    "appointment": (
        "id",
        "patient_id",
        "practitioner_id",
        "starts_at",
        "ends_at",
        "status",
        "note",
        "updated_at",
    ),
    "patient": ("id", "first_name", "last_name", "email", "phone", "date_of_birth", "updated_at"),
    "practitioner": ("id", "first_name", "last_name", "display_name"),
    "consultation": (
        "id",
        "appointment_id",
        "subjective",
        "objective",
        "assessment",
        "plan",
        "discharge_summary",
        "updated_at",
    ),
    "schedule": ("timezone", "slot_length_minutes", "capacity_per_slot", "business_hours"),
}
# `server_time`: the provider's own clock when it answered (OpenDental's serverDateTime); not part
# of a record, it is what an incremental pull's cursor moves to (OperationResult.server_time).
MAPPABLE_KEYS: dict[str, tuple[str, ...]] = {
    **RECORD_KEYS,
    "appointment": (*RECORD_KEYS["appointment"], "duration_minutes", "server_time"),
    "patient": (*RECORD_KEYS["patient"], "server_time"),
}

_APPOINTMENT_WRITE = (
    "patient_id",
    "practitioner_id",
    "starts_at",
    "ends_at",
    "duration_minutes",
    "status",
    "note",
)
_PATIENT_WRITE = ("first_name", "last_name", "email", "phone", "date_of_birth")

# What each operation's payload may carry (after the derived values are added), i.e. what a
# `params` entry may take its value `from`.
PAYLOAD_KEYS: dict[SyncOperation, tuple[str, ...]] = {
    SyncOperation.APPOINTMENT_CREATE: _APPOINTMENT_WRITE,
    SyncOperation.APPOINTMENT_UPDATE: ("id", *_APPOINTMENT_WRITE),
    SyncOperation.APPOINTMENT_CANCEL: ("id", "reason", "note"),
    SyncOperation.APPOINTMENT_GET: ("id",),
    # starts_from/starts_to: a window of a day either side of starts_at, for providers that
    # filter by a range (derived when not given).
    SyncOperation.APPOINTMENT_FIND: (
        "reference",
        "patient_id",
        "practitioner_id",
        "starts_at",
        "starts_from",
        "starts_to",
    ),
    # sync_token: the provider's own change cursor (a function whose answer declares
    # `response.next_sync_token`); asked alone, as such providers allow no other filter with it.
    SyncOperation.APPOINTMENT_LIST_CHANGED: ("updated_since", "starts_from", "starts_to", "sync_token"),
    SyncOperation.PATIENT_CREATE: _PATIENT_WRITE,
    SyncOperation.PATIENT_UPDATE: ("id", *_PATIENT_WRITE),
    SyncOperation.PATIENT_FIND: ("email", "phone", "date_of_birth", "first_name", "last_name"),
    SyncOperation.PATIENT_GET: ("id",),
    SyncOperation.PATIENT_LIST_CHANGED: ("updated_since",),
    SyncOperation.PRACTITIONER_LIST: ("updated_since",),
    SyncOperation.CONSULTATION_LIST: ("starts_from", "starts_to"),
    SyncOperation.CONSULTATION_GET: ("id",),
    SyncOperation.SCHEDULE_CONFIG: (),
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SyncParamSpec(_Strict):
    """Where one function parameter's value comes from: a payload key, a fixed value, or parts.

    `parts` build one value from several payload keys (Ascend's comma-joined `filter`): each
    part is a source of its own; the parts that have a value are joined with `join`.
    """

    source: str | None = Field(default=None, alias="from", description="canonical payload key")
    value: Any = Field(default=None, description="a fixed value; may use {settings.NAME}")
    parts: list[SyncParamSpec] | None = None
    join: str = ","
    transform: list[TransformStep] = Field(default_factory=list)

    def sources(self) -> list[str]:
        """Every payload key this value is made from."""
        own = [self.source] if self.source is not None else []
        return own + [key for part in self.parts or [] for key in part.sources()]

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"from": data}
        return fold_transform(data)

    @model_validator(mode="after")
    def _one_source(self) -> SyncParamSpec:
        given = [self.source is not None, self.value is not None, self.parts is not None]
        if sum(given) != 1:
            raise ValueError("give exactly one of `from` (a payload key), `value` or `parts`")
        return self


class SyncCase(_Strict):
    """`when` names a path in the function's record; the case holds when that value equals
    `equals` (one of them, for a list; may use {settings.NAME}), or, without `equals`, when it
    is set and not false."""

    when: str
    equals: Any = None
    value: Any


class SyncFieldSpec(_Strict):
    """How one canonical field is read from a function's record.

    `cases` are tried first (the first whose `when` holds gives its value), then `from` with its
    transform; `default` is the canonical value when nothing gave one.
    """

    source: str | None = Field(default=None, alias="from")
    transform: list[TransformStep] = Field(default_factory=list)
    cases: list[SyncCase] = Field(default_factory=list)
    default: Any = None

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"from": data}
        return fold_transform(data)

    @model_validator(mode="after")
    def _has_a_source(self) -> SyncFieldSpec:
        if self.source is None and not self.cases and self.default is None:
            raise ValueError("give `from`, `cases` or `default`")
        return self


class SyncOperationSpec(_Strict):
    function: str
    params: dict[str, SyncParamSpec] | None = Field(
        default=None,
        description="function parameter -> its source; without it, payload keys feed same-named parameters",
    )
    fields: dict[str, SyncFieldSpec] = Field(
        default_factory=dict,
        description="canonical field -> where it is in the function's record; others are read by name",
    )
    read_back: bool = Field(
        default=False,
        description="the function answers without the record (e.g. OpenDental's Break): read it back by id",
    )

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        return {"function": data} if isinstance(data, str) else data


def check_sync_section(
    sync: dict[SyncOperation, SyncOperationSpec], functions: dict[str, EndpointSpec]
) -> list[tuple[str, str]]:
    """Problems (path, reason) that make a sync section unusable with these functions."""
    problems: list[tuple[str, str]] = []
    for operation, spec in sync.items():
        where = f"sync.{operation.value}"
        endpoint = functions.get(spec.function)
        if endpoint is None:
            offered = ", ".join(sorted(functions)) or "none"
            problems.append(
                (f"{where}.function", f"{spec.function!r} is not one of the functions ({offered})")
            )
            continue
        allowed = PAYLOAD_KEYS[operation]
        declared = {param.name: param for param in endpoint.params}
        if spec.params is None:
            fed = {name for name in declared if name in allowed}
        else:
            fed = set(spec.params)
            for name, source in spec.params.items():
                if name not in declared:
                    problems.append((f"{where}.params.{name}", f"{spec.function} has no parameter {name!r}"))
                for key in source.sources():
                    if key.split(".", 1)[0] not in allowed:
                        problems.append(
                            (
                                f"{where}.params.{name}.from",
                                f"{key!r} is not in the {operation.value} payload ({', '.join(allowed)})",
                            )
                        )
        for name, param in declared.items():
            if param.required and param.constant is None and param.default is None and name not in fed:
                problems.append(
                    (
                        f"{where}.params",
                        f"{spec.function} requires {name!r} and nothing in the payload feeds it",
                    )
                )
        answers_token = endpoint.response.next_sync_token is not None and "sync_token" in allowed
        taken = (
            fed
            if spec.params is None
            else {key for source in spec.params.values() for key in source.sources()}
        )
        if answers_token and "sync_token" not in taken:
            problems.append(
                (
                    f"{where}.params",
                    f"{spec.function} answers a next sync token (response.next_sync_token)"
                    " but nothing feeds it back: map a parameter from sync_token",
                )
            )
        keys = MAPPABLE_KEYS[operation.kind]
        for name in spec.fields:
            if name not in keys:
                problems.append(
                    (f"{where}.fields.{name}", f"not a canonical {operation.kind} field ({', '.join(keys)})")
                )
        if spec.read_back:
            getter = SyncOperation(f"{operation.kind}.get")
            if operation not in (
                SyncOperation.APPOINTMENT_CREATE,
                SyncOperation.APPOINTMENT_UPDATE,
                SyncOperation.APPOINTMENT_CANCEL,
                SyncOperation.PATIENT_CREATE,
                SyncOperation.PATIENT_UPDATE,
            ):
                problems.append((f"{where}.read_back", "only writes addressed by id can be read back"))
            elif getter not in sync:
                problems.append((f"{where}.read_back", f"needs {getter.value} in the sync section"))
    return problems
