"""Provider definitions: the schema a provider's YAML file (or an admin payload) must follow.

A definition says everything clinicsync needs to talk to one kind of external system:
where it lives, how to authenticate, how it pages, how fast it may be called, and for
each function the HTTP method, path, parameters (internal name -> provider name, where
it goes, how it is transformed) and how to read records back. Nothing about a provider
is in code; this module only checks that a definition is coherent, and says precisely
where it is not (file, path inside the document, field).
"""

from __future__ import annotations

import functools
import re
import string
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clinicsync.integrations.steps import TransformStep, fold_transform
from clinicsync.integrations.sync_spec import SyncOperation, SyncOperationSpec, check_sync_section
from clinicsync.integrations.webhook_spec import WebhookSpec

PROVIDER_KEY_PATTERN = r"^[a-z][a-z0-9_]{1,62}$"
FUNCTION_NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,99}$")
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


class DefinitionError(Exception):
    """A definition that cannot be used, with every problem located."""

    def __init__(self, source: str, problems: list[tuple[str, str]]) -> None:
        self.source = source
        self.problems = problems
        lines = [f"{source}: {path or '<root>'}: {message}" for path, message in problems]
        super().__init__("\n".join(lines))

    def as_details(self) -> list[dict[str, str]]:
        return [{"field": path or "<root>", "reason": message} for path, message in self.problems]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ParamLocation(StrEnum):
    PATH = "path"
    QUERY = "query"
    BODY = "body"
    HEADER = "header"


class Direction(StrEnum):
    IN = "in"
    OUT = "out"


class ParameterSpec(_Strict):
    """One input of a function, named as clinicsync names it."""

    name: str
    external: str | None = Field(default=None, description="provider's name; dotted for nested body fields")
    location: ParamLocation = Field(default=ParamLocation.QUERY, alias="in")
    required: bool = False
    default: Any = None
    constant: Any = None
    transform: list[TransformStep] = Field(default_factory=list)
    description: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _fold_transform(cls, data: Any) -> Any:
        return fold_transform(data)

    @property
    def external_name(self) -> str:
        return self.external or self.name


class FieldSpec(_Strict):
    """One field of a returned record: where it comes from in the provider's record."""

    source: str = Field(alias="from")
    transform: list[TransformStep] = Field(default_factory=list)
    default: Any = None

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"from": data}
        return fold_transform(data)


class ParameterMapSpec(_Strict):
    """A provider-wide rename/transform, applied to every function that does not say otherwise."""

    internal: str
    external: str
    direction: Direction = Direction.IN
    transform: list[TransformStep] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _fold_transform(cls, data: Any) -> Any:
        return fold_transform(data)


# Bounds on the numbers a definition carries. A definition comes from an admin (or a YAML file
# they upload), and an unbounded number either overflows a database column (a 500 on PostgreSQL)
# or makes a limiter, a retry or a page loop wait or spin for ever; out of range is a 422 naming
# the field. Each bound is far beyond any real provider's figure.
MAX_RATE_REQUESTS = 100_000
DAY_SECONDS = 86_400
MAX_WAIT_SECONDS = 3_600
MAX_TIMEOUT_SECONDS = 600
MAX_PAGES = 1_000_000


class PaginationStyle(StrEnum):
    NONE = "none"
    OFFSET = "offset"
    PAGE = "page"
    TOKEN = "token"
    CURSOR = "cursor"


class PaginationSpec(_Strict):
    style: PaginationStyle = PaginationStyle.NONE
    page_size: int = Field(default=100, ge=1, le=100_000)
    limit_param: str | None = Field(default="limit", description="page size for offset and cursor paging")
    offset_param: str = "offset"
    page_param: str = "page"
    per_page_param: str | None = "per_page"
    start_page: int = Field(default=1, ge=0, le=MAX_PAGES)
    next_link_path: str | None = Field(default=None, description="response path of the next page's URL")
    total_path: str | None = Field(default=None, description="response path of the total record count")
    token_param: str = "pageToken"
    token_path: str = "nextPageToken"
    cursor_param: str = "cursor"
    cursor_path: str = "next_cursor"
    has_more_path: str | None = None
    max_pages: int = Field(default=10_000, ge=1, le=MAX_PAGES)


class ResponseSpec(_Strict):
    records: str | None = Field(default=None, description="path of the record list; empty = the whole body")
    single: bool = False
    fields: dict[str, FieldSpec] = Field(default_factory=dict)
    include_unmapped: bool = False
    error_message_path: str | None = None
    next_sync_token: str | None = Field(
        default=None,
        description="path of the token an answer gives for asking only what changed since"
        " (Google's nextSyncToken, on the last page); sync runs keep it as their cursor",
    )


class EndpointSpec(_Strict):
    """One function a provider offers."""

    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    path: str
    description: str | None = None
    params: list[ParameterSpec] = Field(default_factory=list)
    pagination: PaginationSpec | None = None
    response: ResponseSpec = Field(default_factory=ResponseSpec)
    retry_safe: bool | None = Field(
        default=None,
        description="may a failed call be sent again? Defaults to true for idempotent methods only",
    )
    body_encoding: Literal["json", "form", "multipart"] = "json"
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("method", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _path_params_declared(self) -> EndpointSpec:
        placeholders = {
            name
            for _, name, _, _ in string.Formatter().parse(self.path)
            if name and not name.startswith("settings.")
        }
        by_external = {p.external_name: p for p in self.params if p.location is ParamLocation.PATH}
        by_name = {p.name: p for p in self.params if p.location is ParamLocation.PATH}
        for placeholder in placeholders:
            if placeholder not in by_external and placeholder not in by_name:
                raise ValueError(f"path placeholder {{{placeholder}}} has no parameter with in: path")
        for param in by_name.values():
            if param.external_name not in placeholders and param.name not in placeholders:
                raise ValueError(f"path parameter {param.name!r} does not appear in path {self.path!r}")
        names = [p.name for p in self.params]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"parameter declared twice: {', '.join(duplicates)}")
        return self

    @property
    def is_retry_safe(self) -> bool:
        if self.retry_safe is not None:
            return self.retry_safe
        return self.method in IDEMPOTENT_METHODS


AuthType = Literal[
    "none",
    "api_key",
    "bearer",
    "basic",
    "oauth2_client_credentials",
    "oauth2_refresh_token",
    "odfhir",
    "cookie_login",
]


class AuthSpec(_Strict):
    """How requests are authenticated; secret values come from the stored credential, by field name."""

    type: AuthType = "none"
    # api_key
    location: Literal["header", "query"] = Field(default="header", alias="in")
    name: str = "X-API-Key"
    prefix: str = ""
    key_field: str = "api_key"
    # bearer
    token_field: str = "token"
    # basic
    username_field: str = "username"
    password_field: str | None = "password"
    # oauth2
    token_url: str | None = None
    client_id_field: str = "client_id"
    client_secret_field: str = "client_secret"
    refresh_token_field: str = "refresh_token"
    scope: str | None = None
    client_auth: Literal["body", "basic"] = "body"
    token_params_in: Literal["body", "query"] = "body"
    refresh_margin_seconds: float = Field(default=60, ge=0, le=DAY_SECONDS)
    # oauth2_refresh_token connected by a person (authorization-code grant with PKCE)
    authorization_url: str | None = Field(default=None, description="the provider's consent page")
    authorization_params: dict[str, str] = Field(
        default_factory=dict, description="extra consent-page parameters, e.g. Google's access_type: offline"
    )
    # odfhir
    developer_key_field: str = "developer_key"
    customer_key_field: str = "customer_key"
    # cookie_login
    login_url: str | None = None
    login_method: Literal["POST", "GET"] = "POST"
    login_encoding: Literal["form", "json"] = "form"
    login_fields: dict[str, str] = Field(
        default_factory=lambda: {"username": "username", "password": "password"},
        description="login form field -> credential field",
    )
    reauth_statuses: list[int] = Field(default_factory=lambda: [401])

    @model_validator(mode="after")
    def _needs(self) -> AuthSpec:
        if self.type.startswith("oauth2") and not self.token_url:
            raise ValueError(f"auth type {self.type} needs token_url")
        if self.type == "cookie_login" and not self.login_url:
            raise ValueError("auth type cookie_login needs login_url")
        return self

    def credential_fields(self) -> list[str]:
        match self.type:
            case "api_key":
                return [self.key_field]
            case "bearer":
                return [self.token_field]
            case "basic":
                return [self.username_field] + ([self.password_field] if self.password_field else [])
            case "oauth2_client_credentials":
                return [self.client_id_field, self.client_secret_field]
            case "oauth2_refresh_token":
                return [self.client_id_field, self.client_secret_field, self.refresh_token_field]
            case "odfhir":
                return [self.developer_key_field, self.customer_key_field]
            case "cookie_login":
                return list(dict.fromkeys(self.login_fields.values()))
        return []


class RateLimitSpec(_Strict):
    requests: int = Field(ge=1, le=MAX_RATE_REQUESTS)
    per_seconds: float = Field(gt=0, le=DAY_SECONDS)
    burst: int | None = Field(
        default=None,
        ge=1,
        le=MAX_RATE_REQUESTS,
        description="requests allowed at once; the rest are spread out",
    )


class RetrySpec(_Strict):
    attempts: int = Field(default=4, ge=1, le=20)
    base_delay: float = Field(default=0.5, ge=0, le=MAX_WAIT_SECONDS)
    max_delay: float = Field(default=30, ge=0, le=MAX_WAIT_SECONDS)
    max_retry_after: float = Field(
        default=120, ge=0, le=MAX_WAIT_SECONDS, description="longest Retry-After honoured"
    )


class ProviderDefinition(_Strict):
    key: str = Field(pattern=PROVIDER_KEY_PATTERN)
    display_name: str
    category: Literal["pms", "calendar", "sms", "llm", "other"] = "pms"
    description: str | None = None
    base_url: str
    auth: AuthSpec = Field(default_factory=AuthSpec)
    headers: dict[str, str] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="per-integration variables and their defaults, used as {settings.NAME}",
    )
    rate_limit: RateLimitSpec | None = None
    retry: RetrySpec = Field(default_factory=RetrySpec)
    timeout_seconds: float = Field(default=30, gt=0, le=MAX_TIMEOUT_SECONDS)
    pagination: PaginationSpec = Field(default_factory=PaginationSpec)
    test_function: str | None = None
    parameter_maps: list[ParameterMapSpec] = Field(default_factory=list)
    functions: dict[str, EndpointSpec] = Field(default_factory=dict)
    sync: dict[SyncOperation, SyncOperationSpec] = Field(
        default_factory=dict, description="which function serves each canonical sync operation"
    )
    webhooks: WebhookSpec | None = Field(
        default=None, description="how the provider's change notifications are verified and read"
    )

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://", value):
            raise ValueError("base_url must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("functions")
    @classmethod
    def _function_names(cls, value: dict[str, EndpointSpec]) -> dict[str, EndpointSpec]:
        # An integration being built through the admin API may have no function yet; a
        # definition file must have one (checked in parse_definition_text).
        for name in value:
            if not FUNCTION_NAME_PATTERN.match(name):
                raise ValueError(f"function name {name!r} must be letters, digits and _")
        return value

    @model_validator(mode="after")
    def _test_function_exists(self) -> ProviderDefinition:
        if self.test_function and self.test_function not in self.functions:
            raise ValueError(f"test_function {self.test_function!r} is not one of the functions")
        for call in self.webhooks.subscribe if self.webhooks else []:
            if call.function not in self.functions:
                raise ValueError(
                    f"webhooks.subscribe names {call.function!r}, which is not one of the functions"
                )
        return self

    def pagination_for(self, endpoint: EndpointSpec) -> PaginationSpec:
        return endpoint.pagination if endpoint.pagination is not None else self.pagination

    def shared_map(self, internal: str, direction: Direction) -> ParameterMapSpec | None:
        """The provider-wide map for `internal` in `direction`, if there is one."""
        for shared in self.parameter_maps:
            if shared.internal == internal and shared.direction is direction:
                return shared
        return None

    def effective_param(self, param: ParameterSpec) -> tuple[str, list[TransformStep]]:
        """Where a parameter goes and how it is transformed: its own map, else the provider-wide one."""
        shared = self.shared_map(param.name, Direction.IN)
        external = param.external or (shared.external if shared else None) or param.name
        steps = param.transform or (shared.transform if shared else [])
        return external, steps

    def effective_field(self, internal: str, field: FieldSpec) -> FieldSpec:
        """A returned field with the provider-wide transform when it names none of its own."""
        shared = self.shared_map(internal, Direction.OUT)
        if field.transform or shared is None:
            return field
        return field.model_copy(update={"transform": shared.transform})

    def effective_endpoint(self, endpoint: EndpointSpec) -> dict[str, Any]:
        """A function as it is run: every parameter and field with the map that applies to it."""
        params = []
        for param in endpoint.params:
            external, steps = self.effective_param(param)
            entry = param.model_dump(mode="json", by_alias=True, exclude_defaults=True)
            entry["external"] = external
            entry["transform"] = [step.model_dump(mode="json") for step in steps]
            params.append(entry)
        fields = {
            internal: self.effective_field(internal, field).model_dump(mode="json", by_alias=True)
            for internal, field in endpoint.response.fields.items()
        }
        response = endpoint.response.model_dump(mode="json", by_alias=True, exclude={"fields"})
        return {
            "method": endpoint.method,
            "path": endpoint.path,
            "params": params,
            "pagination": self.pagination_for(endpoint).model_dump(mode="json"),
            "response": {**response, "fields": fields},
            "retry_safe": endpoint.is_retry_safe,
        }


def _location(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def parse_definition(data: Any, source: str = "<definition>") -> ProviderDefinition:
    """Validate a parsed document; every error names the source, the path and the reason."""
    if not isinstance(data, dict):
        raise DefinitionError(source, [("", "a provider definition must be a mapping")])
    try:
        definition = ProviderDefinition.model_validate(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            message = error["msg"].removeprefix("Value error, ")
            problems.append((_location(error["loc"]), message))
        raise DefinitionError(source, problems) from None
    sync_problems = check_sync_section(definition.sync, definition.functions)
    if sync_problems:
        raise DefinitionError(source, sync_problems)
    return definition


def parse_definition_text(text: str, source: str = "<definition>") -> ProviderDefinition:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(source, [(where, f"not valid YAML: {problem}")]) from None
    definition = parse_definition(data, source)
    if not definition.functions:
        raise DefinitionError(source, [("functions", "a provider needs at least one function")])
    return definition


def load_definition_file(path: Path) -> ProviderDefinition:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(str(path), [("", f"cannot read file: {exc.strerror}")]) from None
    return parse_definition_text(text, str(path))


PROVIDERS_DIR = Path(__file__).parent / "providers"


def shipped_definitions() -> list[ProviderDefinition]:
    """The definitions packaged with clinicsync, in file-name order (read-only: callers share them)."""
    return list(_read_shipped_definitions())


@functools.cache
def _read_shipped_definitions() -> tuple[ProviderDefinition, ...]:
    # The files ship inside the installed package and change only with it, so a process parses
    # them once; every server start (and a test suite starts hundreds) syncs the catalogue from them.
    return tuple(load_definition_file(path) for path in sorted(PROVIDERS_DIR.glob("*.yaml")))
