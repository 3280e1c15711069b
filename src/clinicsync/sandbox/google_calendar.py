"""Google Calendar API v3 simulator (``/calendar/v3``): events and push notifications.

What it reproduces, and why each matters to a sync client:

- ``events.list`` pages by ``maxResults``/``pageToken``; pages may come back short or even empty
  while ``nextPageToken`` is still present (``short_page_rate``/``empty_page_rate`` settings).
- Incremental sync: ``nextSyncToken`` only on the last page; a later ``syncToken`` returns every
  change since, deletions as ``status: "cancelled"`` entries; invalid or invalidated tokens answer
  ``410 fullSyncRequired``. Purging an event (the front desk's hard delete) invalidates older
  tokens, because the server can no longer report that deletion.
- Client-supplied event ids (base32hex, 5-1024 characters) with ``409 duplicate``: the idempotent
  create.
- ETags with ``If-Match`` (412 ``conditionNotMet``) on update, patch and delete.
- Event times come back in the event's ``timeZone``, else the list's ``timeZone`` parameter, else the
  calendar's zone (``2030-03-04T09:00:00-06:00``), never as the client wrote them.
- Google's error envelope for 400/401/403/404/409/410/412/429, including the rate-limit reasons.
- OAuth: static bearer tokens (settings ``access_tokens``), and Google's consent, token and revoke
  endpoints at the server's root (``google_oauth.py``): authorization code with PKCE, refresh, optional
  strict rotation, revocation; the tokens they issue are accepted too.
- ``events.watch`` channels: a ``sync`` message first, then ``exists`` on every change, with the
  ``X-Goog-*`` headers; ``channels.stop``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
import re
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field
from starlette.datastructures import Headers

from clinicsync.sandbox.core import ActionHandler, ControlError, SandboxServer
from clinicsync.sandbox.generator import GeneratedClinic
from clinicsync.sandbox.google_oauth import GoogleOAuth
from clinicsync.sandbox.state import StateCodec

EVENT_ID = re.compile(r"^[a-v0-9]{5,1024}$")
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$", re.IGNORECASE)
LOCAL_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?$")
DEFAULT_MAX_RESULTS = 250
MAX_MAX_RESULTS = 2500
DEFAULT_TOKEN = "ya29.sandbox-google-calendar-token"
DEFAULT_CALENDAR_ID = "clinic@sandbox.example.com"
DEFAULT_CLIENT_ID = "1234-sandbox.apps.googleusercontent.com"
DEFAULT_CLIENT_SECRET = "GOCSPX-sandbox-client-secret"
# Parameters a syncToken request may not carry (the discovery document's list).
SYNC_INCOMPATIBLE = (
    "iCalUID",
    "orderBy",
    "privateExtendedProperty",
    "q",
    "sharedExtendedProperty",
    "timeMin",
    "timeMax",
    "updatedMin",
)
# Fields a client may write; everything else on an event is the server's.
WRITABLE_FIELDS = (
    "summary",
    "description",
    "location",
    "colorId",
    "start",
    "end",
    "status",
    "attendees",
    "extendedProperties",
    "reminders",
    "transparency",
    "visibility",
    "source",
    "recurrence",
    "guestsCanModify",
)
RESOURCE_STATE_SYNC = "sync"
RESOURCE_STATE_EXISTS = "exists"


class GoogleError(Exception):
    """An error in Google's envelope: ``{"error": {"errors": [...], "code", "message"}}``."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        domain: str = "global",
        location: str | None = None,
        location_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message
        self.domain = domain
        self.location = location
        self.location_type = location_type
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        detail: dict[str, Any] = {"domain": self.domain, "reason": self.reason, "message": self.message}
        if self.location is not None:
            detail["locationType"] = self.location_type or "parameter"
            detail["location"] = self.location
        return {"error": {"errors": [detail], "code": self.status, "message": self.message}}

    def response(self) -> Response:
        return JSONResponse(self.body(), self.status, headers=self.headers)


def bad_request(message: str, *, reason: str = "invalid", location: str | None = None) -> GoogleError:
    return GoogleError(
        400, reason, message, location=location, location_type="parameter" if location else None
    )


def full_sync_required() -> GoogleError:
    return GoogleError(
        410,
        "fullSyncRequired",
        "Sync token is no longer valid, a full sync is required.",
        domain="calendar",
        location="syncToken",
        location_type="parameter",
    )


NOT_FOUND = ("notFound", "Not Found")


def format_rfc3339(instant: datetime) -> str:
    utc = instant.astimezone(UTC)
    millis = f".{instant.microsecond // 1000:03d}Z"
    # isoformat is several times faster than strftime (a 50,000-event clinic formats 200,000 stamps)
    # and gives the same text, except that it zero-pads years below 1000 where strftime does not.
    if utc.year >= 1000:
        return utc.replace(tzinfo=None, microsecond=0).isoformat() + millis
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + millis


def parse_rfc3339(value: str, name: str) -> datetime:
    """A timestamp with an offset, as timeMin/timeMax/updatedMin require; 400 names the parameter."""
    if not RFC3339.match(value):
        raise bad_request(f"Invalid value for {name}: {value!r} needs an RFC3339 offset.", location=name)
    return datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))


def event_time(value: Any, name: str) -> tuple[datetime, bool]:
    """Read an event's ``start``/``end``: (UTC instant, all-day?). All-day dates are read as UTC midnight."""
    if not isinstance(value, dict):
        raise bad_request(f"Missing {name} time.", reason="required")
    if "date" in value and value["date"] is not None:
        try:
            day = date.fromisoformat(str(value["date"]))
        except ValueError:
            raise bad_request(f"Invalid {name} date.")
        return datetime(day.year, day.month, day.day, tzinfo=UTC), True
    raw = value.get("dateTime")
    if not isinstance(raw, str):
        raise bad_request(f"Missing {name} time.", reason="required")
    zone_name = value.get("timeZone")
    if RFC3339.match(raw):
        return datetime.fromisoformat(raw.replace("Z", "+00:00").replace("z", "+00:00")).astimezone(
            UTC
        ), False
    if LOCAL_DATETIME.match(raw) and isinstance(zone_name, str):
        try:
            zone = ZoneInfo(zone_name)
        except (KeyError, ValueError):
            raise bad_request(f"Invalid time zone definition for {name} time.", reason="timeRangeEmpty")
        return datetime.fromisoformat(raw).replace(tzinfo=zone).astimezone(UTC), False
    raise bad_request(f"Missing time zone definition for {name} time.", reason="required")


def in_zone(value: Any, name: str, default_zone: str) -> Any:
    """An event time as Google answers it: the wall clock and offset of the event's own zone.

    Google returns ``dateTime`` in the zone the event names (``timeZone``), else in the zone the
    list asked for, else in the calendar's, whatever form the client wrote it in: a client that
    compares the text with what it sent, instead of the instant, sees a change that is none.
    """
    if not isinstance(value, dict) or not isinstance(value.get("dateTime"), str):
        return value
    try:
        instant, _all_day = event_time(value, name)
        zone = ZoneInfo(str(value.get("timeZone") or default_zone))
    except (GoogleError, KeyError, ValueError):
        return value
    return {**value, "dateTime": instant.astimezone(zone).isoformat(timespec="seconds")}


def merge_patch(target: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """PATCH semantics: objects merge field by field, arrays and scalars replace, null removes."""
    merged = dict(target)
    for name, value in changes.items():
        if value is None:
            merged.pop(name, None)
        elif isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = merge_patch(merged[name], value)
        else:
            merged[name] = value
    return merged


@dataclass
class StoredEvent:
    id: str
    data: dict[str, Any]
    created: datetime
    updated: datetime
    change_seq: int
    sequence: int = 0
    order: int = 0

    @property
    def status(self) -> str:
        return str(self.data.get("status", "confirmed"))

    @property
    def cancelled(self) -> bool:
        return self.status == "cancelled"

    @property
    def etag(self) -> str:
        # Unique per version: the change sequence is global and strictly increasing.
        return f'"{int(self.updated.timestamp() * 1000)}{self.change_seq:06d}"'

    def start(self) -> datetime:
        return event_time(self.data.get("start"), "start")[0]

    def end(self) -> datetime:
        return event_time(self.data.get("end"), "end")[0]


# Event stamps are stored as the API shows them: UTC to the millisecond.
STATE = StateCodec(encode_datetime=format_rfc3339)


@dataclass
class CalendarData:
    id: str
    summary: str
    time_zone: str
    events: dict[str, StoredEvent] = field(default_factory=dict)
    # Sync tokens minted before these are refused with 410.
    generation: int = 0
    purged_through_seq: int = 0


@dataclass
class PageCursor:
    calendar_id: str
    signature: tuple[tuple[str, str], ...]
    event_ids: list[str]
    offset: int
    snapshot_seq: int
    sync_seq: int | None


@dataclass
class Channel:
    id: str
    resource_id: str
    calendar_id: str
    address: str
    token: str | None
    expiration: datetime
    message_number: int = 0
    queue: asyncio.Queue[str] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[Any] | None = None
    stopped: bool = False


@dataclass
class Delivery:
    channel_id: str
    message_number: int
    resource_state: str
    status: int | None
    error: str | None
    time: str


class GoogleCalendarSettings(BaseModel):
    """Live-tunable behaviour (``PUT /_sandbox/settings``)."""

    model_config = ConfigDict(extra="forbid")

    access_tokens: list[str] = Field(default_factory=lambda: [DEFAULT_TOKEN], min_length=1)
    primary_calendar_id: str = DEFAULT_CALENDAR_ID
    user_rate_limit_per_minute: int = Field(
        0, ge=0, description="Per-token requests a minute; 0 = unlimited."
    )
    rate_limit_response: Literal["userRateLimitExceeded", "rateLimitExceeded", "429"] = Field(
        "userRateLimitExceeded", description="403 with either reason, or 429 rateLimitExceeded."
    )
    short_page_rate: float = Field(
        0.0, ge=0.0, le=1.0, description="Chance a page holds fewer rows than asked."
    )
    empty_page_rate: float = Field(0.0, ge=0.0, le=1.0, description="Chance a non-final page is empty.")
    page_seed: int = 0
    updated_min_max_age_days: int = Field(28, ge=1, description="Older updatedMin answers 410.")
    channel_ttl_seconds: int = Field(604_800, ge=1, description="Default watch channel lifetime.")
    oauth_clients: dict[str, str] = Field(
        default_factory=lambda: {DEFAULT_CLIENT_ID: DEFAULT_CLIENT_SECRET},
        description="OAuth clients the token endpoint knows: client id -> client secret.",
    )
    oauth_consent: Literal["approve", "deny"] = Field(
        "approve", description="What the person answers on the consent page."
    )
    oauth_rotate_refresh_tokens: bool = Field(
        False, description="Each refresh returns a new refresh token and retires the old one at once."
    )


def _encode_token(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str) -> dict[str, Any] | None:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        payload = json.loads(raw)
    except (ValueError, json.JSONDecodeError):
        return None
    return payload if isinstance(payload, dict) else None


class GoogleCalendarSandbox(SandboxServer):
    """The Google Calendar v3 simulator; see the module docstring for what it reproduces."""

    name = "google_calendar"
    title = "Google Calendar API v3"
    api_prefix = "/calendar/v3"
    Settings = GoogleCalendarSettings

    def __init__(self, **options: Any) -> None:
        self.calendars: dict[str, CalendarData] = {}
        self.change_seq = 0
        self.insert_order = 0
        self.cursors: OrderedDict[str, PageCursor] = OrderedDict()
        self.channels: dict[str, Channel] = {}
        self.deliveries: list[Delivery] = []
        self.rate_windows: dict[str, tuple[float, int]] = {}
        self.page_dice_seed: int | None = None
        self.page_dice = random.Random(0)
        self._http: httpx.AsyncClient | None = None
        self.oauth = GoogleOAuth(self)
        super().__init__(**options)

    # ------------------------------------------------------------------ OAuth host

    def oauth_clients(self) -> dict[str, str]:
        return dict(self.config.oauth_clients)

    def oauth_consent(self) -> str:
        return self.config.oauth_consent

    def oauth_rotates(self) -> bool:
        return self.config.oauth_rotate_refresh_tokens

    def add_root_routes(self, router: APIRouter) -> None:
        self.oauth.add_routes(router)

    @property
    def config(self) -> GoogleCalendarSettings:
        assert isinstance(self.settings, GoogleCalendarSettings)
        return self.settings

    def now(self) -> datetime:
        # Google timestamps carry milliseconds.
        instant = self.clock.now().astimezone(UTC)
        return instant.replace(microsecond=instant.microsecond // 1000 * 1000)

    # ------------------------------------------------------------------ state

    def next_seq(self) -> int:
        self.change_seq += 1
        return self.change_seq

    def calendar(self, calendar_id: str) -> CalendarData:
        resolved = self.config.primary_calendar_id if calendar_id == "primary" else calendar_id
        calendar = self.calendars.get(resolved)
        if calendar is None:
            raise GoogleError(404, *NOT_FOUND)
        return calendar

    def ensure_calendar(self, calendar_id: str, summary: str, time_zone: str) -> CalendarData:
        calendar = self.calendars.get(calendar_id)
        if calendar is None:
            calendar = self.calendars[calendar_id] = CalendarData(calendar_id, summary, time_zone)
        return calendar

    def store_event(self, calendar: CalendarData, event_id: str | None, data: dict[str, Any]) -> StoredEvent:
        """Validate and insert; 409 when the id is taken (deleted events keep their id)."""
        if event_id is not None and not EVENT_ID.match(event_id):
            raise bad_request("Invalid resource id value.", location="id")
        clean = self.validated(data)
        if event_id is None:
            # Hex digits are a subset of base32hex, so a random hex id is a valid event id.
            event_id = uuid.uuid4().hex
        if event_id in calendar.events:
            raise GoogleError(409, "duplicate", "The requested identifier already exists.")
        now = self.now()
        self.insert_order += 1
        event = StoredEvent(event_id, clean, now, now, self.next_seq(), order=self.insert_order)
        calendar.events[event_id] = event
        self.changed(calendar)
        return event

    def validated(self, data: Mapping[str, Any]) -> dict[str, Any]:
        clean = {name: data[name] for name in WRITABLE_FIELDS if name in data and data[name] is not None}
        if "end" not in clean:
            raise bad_request("Missing end time.", reason="required")
        if "start" not in clean:
            raise bad_request("Missing start time.", reason="required")
        start, start_all_day = event_time(clean["start"], "start")
        end, end_all_day = event_time(clean["end"], "end")
        if start_all_day != end_all_day:
            raise bad_request("Start and end times must either both be date or both be dateTime.")
        if end < start:
            raise bad_request("The specified time range is empty.", reason="timeRangeEmpty")
        if clean.get("status", "confirmed") not in ("confirmed", "tentative", "cancelled"):
            raise bad_request("Invalid value for status.", location="status")
        extended = clean.get("extendedProperties")
        if extended is not None and not (
            isinstance(extended, dict)
            and all(isinstance(extended.get(kind, {}), dict) for kind in ("private", "shared"))
        ):
            raise bad_request("Invalid extendedProperties.", location="extendedProperties")
        return clean

    def revise(self, calendar: CalendarData, event: StoredEvent, data: dict[str, Any]) -> None:
        """Replace an event's client data, bump its version and tell the watchers."""
        clean = self.validated(data)
        significant = any(clean.get(name) != event.data.get(name) for name in ("start", "end", "status"))
        event.data = clean
        event.updated = self.now()
        event.change_seq = self.next_seq()
        if significant:
            event.sequence += 1
        self.changed(calendar)

    def delete_event(self, calendar: CalendarData, event: StoredEvent) -> None:
        if event.cancelled:
            raise GoogleError(410, "deleted", "Resource has been deleted")
        self.revise(calendar, event, event.data | {"status": "cancelled"})

    def purge_event(self, calendar: CalendarData, event_id: str) -> None:
        """Remove every trace; older sync tokens can no longer report it, so they turn invalid."""
        calendar.events.pop(event_id)
        calendar.purged_through_seq = self.next_seq()
        self.changed(calendar)

    def changed(self, calendar: CalendarData) -> None:
        for channel in self.channels.values():
            if channel.calendar_id == calendar.id and not channel.stopped:
                channel.queue.put_nowait(RESOURCE_STATE_EXISTS)

    def event_json(
        self,
        calendar: CalendarData,
        event: StoredEvent,
        *,
        minimal: bool = False,
        time_zone: str | None = None,
    ) -> dict[str, Any]:
        if minimal:
            # What a list shows for a deleted event: Google only promises the id.
            return {"kind": "calendar#event", "etag": event.etag, "id": event.id, "status": "cancelled"}
        data = dict(event.data)
        data.setdefault("status", "confirmed")
        for name in ("start", "end"):
            data[name] = in_zone(data.get(name), name, time_zone or calendar.time_zone)
        return {
            "kind": "calendar#event",
            "etag": event.etag,
            "id": event.id,
            "status": data.pop("status"),
            "htmlLink": f"https://calendar.google.com/calendar/event?eid={event.id}",
            "created": format_rfc3339(event.created),
            "updated": format_rfc3339(event.updated),
            **data,
            "creator": {"email": calendar.id, "self": True},
            "organizer": {"email": calendar.id, "self": True},
            "iCalUID": f"{event.id}@google.com",
            "sequence": event.sequence,
            "reminders": data.get("reminders", {"useDefault": True}),
            "eventType": "default",
        }

    # ------------------------------------------------------------------ list

    def list_events(self, request: Request, calendar: CalendarData) -> dict[str, Any]:
        params = request.query_params
        page_token = params.get("pageToken")
        signature = tuple(
            sorted((name, value) for name, value in params.multi_items() if name != "pageToken")
        )
        try:
            max_results = int(params.get("maxResults", DEFAULT_MAX_RESULTS))
        except ValueError:
            raise bad_request("Invalid value for maxResults.", location="maxResults")
        if max_results < 1:
            raise bad_request("Invalid value for maxResults.", location="maxResults")
        max_results = min(max_results, MAX_MAX_RESULTS)
        sync_token = params.get("syncToken")
        sync_seq = self.check_sync_token(calendar, sync_token) if sync_token is not None else None

        if page_token is None:
            cursor = self.open_cursor(request, calendar, signature, sync_seq)
        else:
            found = self.cursors.get(page_token)
            if found is None or found.signature != signature or found.calendar_id != calendar.id:
                raise bad_request("Invalid pageToken value.", location="pageToken")
            cursor = found

        # One generator per page_seed, so a seed replays the same short and empty pages.
        if self.page_dice_seed != self.config.page_seed:
            self.page_dice_seed = self.config.page_seed
            self.page_dice = random.Random(self.config.page_seed)
        dice = self.page_dice
        size = max_results
        remaining = len(cursor.event_ids) - cursor.offset
        last_page = remaining <= max_results
        if not last_page and dice.random() < self.config.empty_page_rate:
            size = 0
            self.note_fault(request, "empty_page")
        elif not last_page and dice.random() < self.config.short_page_rate:
            size = dice.randint(1, max(1, max_results - 1))
            self.note_fault(request, f"short_page:{size}")
        page_ids = self.paginate(request, cursor.event_ids, cursor.offset, size) if size else []
        last_page = cursor.offset + size >= len(cursor.event_ids)
        items = []
        for event_id in page_ids:
            event = calendar.events.get(event_id)
            if event is not None:
                items.append(
                    self.event_json(
                        calendar, event, minimal=event.cancelled, time_zone=params.get("timeZone")
                    )
                )

        body: dict[str, Any] = {
            "kind": "calendar#events",
            "etag": f'"{cursor.snapshot_seq}"',
            "summary": calendar.summary,
            "description": "",
            "updated": format_rfc3339(self.now()),
            "timeZone": params.get("timeZone", calendar.time_zone),
            "accessRole": "owner",
            "defaultReminders": [],
        }
        if page_token is not None:
            self.cursors.pop(page_token, None)
        if last_page:
            body["nextSyncToken"] = _encode_token(
                {
                    "c": calendar.id,
                    "s": cursor.snapshot_seq,
                    "g": calendar.generation,
                    "n": secrets.token_hex(4),
                }
            )
        else:
            next_token = secrets.token_urlsafe(18)
            self.cursors[next_token] = PageCursor(
                cursor.calendar_id,
                cursor.signature,
                cursor.event_ids,
                cursor.offset + size,
                cursor.snapshot_seq,
                cursor.sync_seq,
            )
            while len(self.cursors) > 256:
                self.cursors.popitem(last=False)
            body["nextPageToken"] = next_token
        body["items"] = items
        return body

    def check_sync_token(self, calendar: CalendarData, token: str) -> int:
        payload = _decode_token(token)
        if payload is None or payload.get("c") != calendar.id or not isinstance(payload.get("s"), int):
            raise full_sync_required()
        if payload.get("g") != calendar.generation or payload["s"] < calendar.purged_through_seq:
            raise full_sync_required()
        return int(payload["s"])

    def open_cursor(
        self,
        request: Request,
        calendar: CalendarData,
        signature: tuple[tuple[str, str], ...],
        sync_seq: int | None,
    ) -> PageCursor:
        params = request.query_params
        show_deleted = params.get("showDeleted", "false").lower() == "true"
        single_events = params.get("singleEvents", "false").lower() == "true"
        order_by = params.get("orderBy")
        if sync_seq is not None:
            clashing = [name for name in SYNC_INCOMPATIBLE if name in params]
            if clashing:
                raise bad_request(
                    f"Sync token cannot be used with {', '.join(clashing)}.", location=clashing[0]
                )
            if params.get("showDeleted", "").lower() == "false":
                raise bad_request(
                    "showDeleted=false cannot be used with a sync token.", location="showDeleted"
                )
        if order_by not in (None, "startTime", "updated"):
            raise bad_request("Invalid value for orderBy.", location="orderBy")
        if order_by == "startTime" and not single_events:
            raise bad_request(
                "The requested ordering is not available for the particular query.", location="orderBy"
            )
        time_min = parse_rfc3339(params["timeMin"], "timeMin") if "timeMin" in params else None
        time_max = parse_rfc3339(params["timeMax"], "timeMax") if "timeMax" in params else None
        updated_min = parse_rfc3339(params["updatedMin"], "updatedMin") if "updatedMin" in params else None
        if updated_min is not None and updated_min < self.now() - timedelta(
            days=self.config.updated_min_max_age_days
        ):
            raise GoogleError(
                410,
                "updatedMinTooLongAgo",
                "The requested minimum modification time lies too far in the past.",
                location="updatedMin",
                location_type="parameter",
            )
        text = params.get("q", "").lower()
        ical_uid = params.get("iCalUID")
        private_wanted = [item.partition("=") for item in params.getlist("privateExtendedProperty")]
        shared_wanted = [item.partition("=") for item in params.getlist("sharedExtendedProperty")]
        # Deleted events appear on incremental reads (syncToken, updatedMin) or when asked for.
        include_deleted = sync_seq is not None or updated_min is not None or show_deleted

        def keep(event: StoredEvent) -> bool:
            if event.cancelled and not include_deleted:
                return False
            if sync_seq is not None and event.change_seq <= sync_seq:
                return False
            if updated_min is not None and event.updated < updated_min:
                return False
            if time_min is not None and event.end() <= time_min:
                return False
            if time_max is not None and event.start() >= time_max:
                return False
            if ical_uid is not None and f"{event.id}@google.com" != ical_uid:
                return False
            extended = event.data.get("extendedProperties") or {}
            for kind, wanted in (("private", private_wanted), ("shared", shared_wanted)):
                stored = extended.get(kind) or {}
                if any(stored.get(name) != value for name, _, value in wanted):
                    return False
            if text:
                haystack = " ".join(
                    str(event.data.get(name, "")) for name in ("summary", "description", "location")
                ).lower()
                if text not in haystack:
                    return False
            return True

        rows = [event for event in calendar.events.values() if keep(event)]
        if order_by == "startTime":
            rows.sort(key=lambda event: (event.start(), event.order))
        elif order_by == "updated":
            rows.sort(key=lambda event: (event.updated, event.change_seq))
        elif sync_seq is not None:
            rows.sort(key=lambda event: event.change_seq)
        else:
            rows.sort(key=lambda event: event.order)
        return PageCursor(calendar.id, signature, [event.id for event in rows], 0, self.change_seq, sync_seq)

    # ------------------------------------------------------------------ auth, limits

    def check_request(self, request: Request) -> None:
        authorization = request.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        invalid = GoogleError(
            401,
            "authError",
            "Invalid Credentials",
            location="Authorization",
            location_type="header",
            headers={
                "WWW-Authenticate": 'Bearer realm="https://accounts.google.com/", error="invalid_token"'
            },
        )
        token = token.strip()
        if scheme.lower() != "bearer" or (
            token not in self.config.access_tokens and not self.oauth.accepts(token)
        ):
            raise invalid
        if self.consume_token_expiry(request):
            raise invalid
        limit = self.config.user_rate_limit_per_minute
        if limit:
            now = time.time()
            started, count = self.rate_windows.get(token, (now, 0))
            if now - started >= 60.0:
                started, count = now, 0
            self.rate_windows[token] = (started, count + 1)
            if count >= limit:
                self.note_fault(request, "google_rate_limit")
                raise self.rate_limit_error()

    def rate_limit_error(self) -> GoogleError:
        style = self.config.rate_limit_response
        if style == "429":
            return GoogleError(429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits")
        message = "User Rate Limit Exceeded" if style == "userRateLimitExceeded" else "Rate Limit Exceeded"
        return GoogleError(403, style, message, domain="usageLimits")

    # ------------------------------------------------------------------ framework hooks

    def load_clinic(self, clinic: GeneratedClinic) -> None:
        """One calendar for the clinic; each generated appointment becomes an event."""
        self.calendars = {}
        self.cursors.clear()
        self.change_seq = 0
        calendar = self.ensure_calendar(self.config_primary(), "Clinic appointments", clinic.timezone)
        patients = {patient.id: patient for patient in clinic.patients}
        types = {kind.id: kind for kind in clinic.appointment_types}
        practitioners = {person.id: person for person in clinic.practitioners}
        for appointment in clinic.appointments:
            patient = patients[appointment.patient_id]
            practitioner = practitioners[appointment.practitioner_id]
            self.insert_order += 1
            created = appointment.created_at.replace(microsecond=0)
            updated = appointment.updated_at.replace(microsecond=0)
            kind = types[appointment.appointment_type_id].name
            data: dict[str, Any] = {
                "summary": f"{kind}: {patient.first_name} {patient.last_name}",
                "description": appointment.note,
                "location": f"Room {appointment.room_id}",
                "start": {"dateTime": format_rfc3339(appointment.start), "timeZone": clinic.timezone},
                "end": {"dateTime": format_rfc3339(appointment.end), "timeZone": clinic.timezone},
                "status": "cancelled" if appointment.status == "cancelled" else "confirmed",
                "extendedProperties": {
                    "private": {
                        "clinic_appointment_id": str(appointment.id),
                        "practitioner": f"{practitioner.first_name} {practitioner.last_name}",
                    }
                },
            }
            event_id = f"appt{appointment.id:08d}"
            calendar.events[event_id] = StoredEvent(
                event_id, data, created, updated, self.next_seq(), order=self.insert_order
            )

    def config_primary(self) -> str:
        # load_clinic runs inside the base constructor, before settings may exist.
        settings = getattr(self, "settings", None)
        if isinstance(settings, GoogleCalendarSettings):
            return settings.primary_calendar_id
        return DEFAULT_CALENDAR_ID

    def dump_state(self) -> dict[str, Any]:
        oauth = self.oauth.dump()
        return {
            **({"oauth": oauth} if oauth is not None else {}),
            "change_seq": self.change_seq,
            "insert_order": self.insert_order,
            "calendars": [
                {
                    "id": calendar.id,
                    "summary": calendar.summary,
                    "time_zone": calendar.time_zone,
                    "generation": calendar.generation,
                    "purged_through_seq": calendar.purged_through_seq,
                    "events": STATE.dump_rows(calendar.events.values()),
                }
                for calendar in self.calendars.values()
            ],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        self.oauth.load(state.get("oauth"))
        self.calendars = {}
        self.change_seq = int(state["change_seq"])
        self.insert_order = int(state["insert_order"])
        for saved in state["calendars"]:
            calendar = self.ensure_calendar(saved["id"], saved["summary"], saved["time_zone"])
            calendar.generation = saved["generation"]
            calendar.purged_through_seq = saved["purged_through_seq"]
            calendar.events.update(STATE.load_table(StoredEvent, saved["events"]))

    def state_summary(self) -> dict[str, Any]:
        return {
            "calendars": {
                calendar.id: {
                    "events": len(calendar.events),
                    "cancelled": sum(1 for event in calendar.events.values() if event.cancelled),
                    "generation": calendar.generation,
                }
                for calendar in self.calendars.values()
            },
            "channels": len([channel for channel in self.channels.values() if not channel.stopped]),
            "deliveries": len(self.deliveries),
            "oauth": self.oauth.summary(),
        }

    def render_error(self, status: int, message: str, *, reason: str | None = None) -> Response:
        if status == 429:
            return GoogleError(
                429, "rateLimitExceeded", "Rate Limit Exceeded", domain="usageLimits"
            ).response()
        google_reason = {400: "badRequest", 401: "authError", 403: "forbidden", 404: "notFound"}.get(
            status, "backendError"
        )
        return GoogleError(status, google_reason, message).response()

    def rate_limit_headers(self, retry_after: int) -> dict[str, str]:
        return {"Retry-After": str(retry_after)}

    def identify(self, headers: Headers) -> str | None:
        token = headers.get("authorization", "").partition(" ")[2]
        return f"bearer:{hashlib.sha256(token.encode()).hexdigest()[:8]}" if token else None

    def credentials(self) -> dict[str, str]:
        return {
            "access_token": self.config.access_tokens[0],
            "calendar_id": self.config.primary_calendar_id,
            "auth": "Authorization: Bearer <access_token> (static), or OAuth at /o/oauth2/v2/auth and /token",
            "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET,
        }

    async def on_start(self) -> None:
        self._http = httpx.AsyncClient(timeout=5.0)

    async def on_stop(self) -> None:
        for channel in self.channels.values():
            channel.stopped = True
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # ------------------------------------------------------------------ push notifications

    def open_channel(self, request: Request, calendar: CalendarData, body: Mapping[str, Any]) -> Channel:
        channel_id = body.get("id")
        address = body.get("address")
        if not isinstance(channel_id, str) or not channel_id:
            raise bad_request("Required channel id.", reason="required", location="id")
        if body.get("type") not in ("web_hook", "webhook"):
            raise bad_request("Invalid channel type; expected web_hook.", location="type")
        if not isinstance(address, str) or not address.startswith(("https://", "http://")):
            raise bad_request(
                "Invalid notification address.", reason="push.webhookUrlNotHttps", location="address"
            )
        if channel_id in self.channels and not self.channels[channel_id].stopped:
            raise bad_request(f"Channel id {channel_id} not unique", reason="channelIdNotUnique")
        ttl = self.config.channel_ttl_seconds
        params = body.get("params") or {}
        if isinstance(params, dict) and str(params.get("ttl", "")).isdigit():
            ttl = int(params["ttl"])
        expiration = self.now() + timedelta(seconds=ttl)
        if isinstance(body.get("expiration"), (int, str)) and str(body["expiration"]).isdigit():
            expiration = min(expiration, datetime.fromtimestamp(int(body["expiration"]) / 1000, tz=UTC))
        token = body.get("token")
        channel = Channel(
            id=channel_id,
            resource_id=hashlib.sha1(f"{calendar.id}/events".encode()).hexdigest()[:27],
            calendar_id=calendar.id,
            address=address,
            token=token if isinstance(token, str) else None,
            expiration=expiration,
        )
        self.channels[channel_id] = channel
        # The first message on every channel is "sync": the channel works, nothing changed yet.
        channel.queue.put_nowait(RESOURCE_STATE_SYNC)
        channel.task = self.spawn(
            self.deliver(channel, self.resource_uri(request, calendar)), name=f"watch-{channel_id}"
        )
        return channel

    @staticmethod
    def resource_uri(request: Request, calendar: CalendarData) -> str:
        base = str(request.base_url).rstrip("/") + GoogleCalendarSandbox.api_prefix
        return f"{base}/calendars/{calendar.id}/events?alt=json"

    async def deliver(self, channel: Channel, resource_uri: str) -> None:
        """Post each queued notification in order; a slow or failing receiver only delays its own channel."""
        while not channel.stopped:
            state = await channel.queue.get()
            if channel.stopped:
                return
            if self.now() >= channel.expiration:
                channel.stopped = True
                return
            channel.message_number += 1
            headers = {
                "X-Goog-Channel-ID": channel.id,
                "X-Goog-Channel-Expiration": format_datetime(channel.expiration.astimezone(UTC), usegmt=True),
                "X-Goog-Resource-ID": channel.resource_id,
                "X-Goog-Resource-URI": resource_uri,
                "X-Goog-Resource-State": state,
                "X-Goog-Message-Number": str(channel.message_number),
            }
            if channel.token is not None:
                headers["X-Goog-Channel-Token"] = channel.token
            status: int | None = None
            error: str | None = None
            try:
                if self._http is not None:
                    response = await self._http.post(channel.address, headers=headers, content=b"")
                else:
                    # Served without a lifespan (no shared client): a short-lived one per message.
                    async with httpx.AsyncClient(timeout=5.0) as client:
                        response = await client.post(channel.address, headers=headers, content=b"")
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            self.deliveries.append(
                Delivery(channel.id, channel.message_number, state, status, error, format_rfc3339(self.now()))
            )

    def stop_channel(self, body: Mapping[str, Any]) -> None:
        channel = self.channels.get(str(body.get("id")))
        if channel is None or channel.stopped or channel.resource_id != body.get("resourceId"):
            raise GoogleError(404, "notFound", f"Channel '{body.get('id')}' not found for project")
        channel.stopped = True
        channel.queue.put_nowait(RESOURCE_STATE_EXISTS)

    # ------------------------------------------------------------------ routes

    def add_routes(self, router: APIRouter) -> None:
        server = self

        class GoogleRoute(APIRoute):
            """Checks the bearer token and quota first; renders ``GoogleError`` in Google's envelope."""

            def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
                handler = super().get_route_handler()

                async def guarded(request: Request) -> Response:
                    try:
                        server.check_request(request)
                        return await handler(request)
                    except GoogleError as error:
                        return error.response()

                return guarded

        router.route_class = GoogleRoute

        async def json_object(request: Request) -> dict[str, Any]:
            try:
                body = json.loads(await request.body() or b"{}")
            except json.JSONDecodeError:
                raise GoogleError(400, "parseError", "Parse Error")
            if not isinstance(body, dict):
                raise GoogleError(400, "parseError", "Parse Error")
            return body

        def find(calendar: CalendarData, event_id: str) -> StoredEvent:
            event = calendar.events.get(event_id)
            if event is None:
                raise GoogleError(404, *NOT_FOUND)
            return event

        def check_if_match(request: Request, event: StoredEvent) -> None:
            wanted = request.headers.get("if-match")
            if wanted is not None and wanted.strip() not in ("*", event.etag):
                raise GoogleError(
                    412,
                    "conditionNotMet",
                    "Precondition Failed",
                    location="If-Match",
                    location_type="header",
                )

        @router.get("/calendars/{calendar_id}/events")
        async def list_events(calendar_id: str, request: Request) -> Response:
            return JSONResponse(self.list_events(request, self.calendar(calendar_id)))

        @router.post("/calendars/{calendar_id}/events")
        async def insert_event(calendar_id: str, request: Request) -> Response:
            calendar = self.calendar(calendar_id)
            body = await json_object(request)
            event_id = body.get("id")
            if event_id is not None and not isinstance(event_id, str):
                raise bad_request("Invalid resource id value.", location="id")
            event = self.store_event(calendar, event_id, body)
            return JSONResponse(self.event_json(calendar, event))

        @router.post("/calendars/{calendar_id}/events/watch")
        async def watch_events(calendar_id: str, request: Request) -> Response:
            calendar = self.calendar(calendar_id)
            channel = self.open_channel(request, calendar, await json_object(request))
            body = {
                "kind": "api#channel",
                "id": channel.id,
                "resourceId": channel.resource_id,
                "resourceUri": self.resource_uri(request, calendar),
                "expiration": str(int(channel.expiration.timestamp() * 1000)),
            }
            if channel.token is not None:
                body["token"] = channel.token
            return JSONResponse(body)

        @router.post("/channels/stop")
        async def stop_channel(request: Request) -> Response:
            self.stop_channel(await json_object(request))
            return Response(status_code=204)

        @router.get("/calendars/{calendar_id}/events/{event_id}")
        async def get_event(calendar_id: str, event_id: str, request: Request) -> Response:
            calendar = self.calendar(calendar_id)
            event = find(calendar, event_id)
            if request.headers.get("if-none-match", "").strip() == event.etag:
                return Response(status_code=304, headers={"ETag": event.etag})
            return JSONResponse(self.event_json(calendar, event), headers={"ETag": event.etag})

        @router.put("/calendars/{calendar_id}/events/{event_id}")
        async def update_event(calendar_id: str, event_id: str, request: Request) -> Response:
            calendar = self.calendar(calendar_id)
            event = find(calendar, event_id)
            check_if_match(request, event)
            # PUT replaces the event: fields left out are cleared.
            self.revise(calendar, event, await json_object(request))
            return JSONResponse(self.event_json(calendar, event))

        @router.patch("/calendars/{calendar_id}/events/{event_id}")
        async def patch_event(calendar_id: str, event_id: str, request: Request) -> Response:
            calendar = self.calendar(calendar_id)
            event = find(calendar, event_id)
            check_if_match(request, event)
            changes = {
                name: value for name, value in (await json_object(request)).items() if name in WRITABLE_FIELDS
            }
            self.revise(calendar, event, merge_patch(event.data, changes))
            return JSONResponse(self.event_json(calendar, event))

        @router.delete("/calendars/{calendar_id}/events/{event_id}")
        async def delete_event(calendar_id: str, event_id: str, request: Request) -> Response:
            calendar = self.calendar(calendar_id)
            event = find(calendar, event_id)
            check_if_match(request, event)
            self.delete_event(calendar, event)
            return Response(status_code=204)

    # ------------------------------------------------------------------ front desk

    def actions(self) -> dict[str, ActionHandler]:
        return {
            "move": self._action_move,
            "cancel": self._action_cancel,
            "hard_delete": self._action_hard_delete,
            "invalidate_sync_tokens": self._action_invalidate,
            "create": self._action_create,
            "deliveries": self._action_deliveries,
            "revoke_access": self._action_revoke_access,
        }

    async def _action_revoke_access(self, body: dict[str, Any]) -> dict[str, Any]:
        """The person removes the app in their Google account: every grant and its tokens end."""
        return {"revoked": self.oauth.revoke_all()}

    def _desk_event(self, body: Mapping[str, Any]) -> tuple[CalendarData, StoredEvent]:
        calendar_id = str(body.get("calendar_id") or self.config.primary_calendar_id)
        event_id = body.get("event_id")
        if not isinstance(event_id, str):
            raise ControlError([{"field": "event_id", "message": "is required"}])
        try:
            calendar = self.calendar(calendar_id)
        except GoogleError:
            raise ControlError([{"field": "calendar_id", "message": "unknown calendar"}], 404)
        event = calendar.events.get(event_id)
        if event is None:
            raise ControlError([{"field": "event_id", "message": "unknown event"}], 404)
        return calendar, event

    def _desk(self, work: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return work()
        except GoogleError as error:
            raise ControlError([{"field": error.location or "body", "message": error.message}], error.status)

    async def _action_move(self, body: dict[str, Any]) -> dict[str, Any]:
        """Move an event: {event_id, start, end (RFC3339), calendar_id?}; etag, updated and sequence move."""
        calendar, event = self._desk_event(body)

        def work() -> dict[str, Any]:
            changes: dict[str, Any] = {
                name: {"dateTime": body[name], "timeZone": calendar.time_zone}
                for name in ("start", "end")
                if name in body
            }
            self.revise(calendar, event, merge_patch(event.data, changes))
            return self.event_json(calendar, event)

        return self._desk(work)

    async def _action_cancel(self, body: dict[str, Any]) -> dict[str, Any]:
        """Cancel (delete in the Calendar UI): {event_id, calendar_id?}; syncs report status cancelled."""
        calendar, event = self._desk_event(body)

        def work() -> dict[str, Any]:
            self.delete_event(calendar, event)
            return self.event_json(calendar, event)

        return self._desk(work)

    async def _action_hard_delete(self, body: dict[str, Any]) -> dict[str, Any]:
        """Purge an event without a trace: {event_id, calendar_id?}; older sync tokens then answer 410."""
        calendar, event = self._desk_event(body)
        self.purge_event(calendar, event.id)
        return {"purged": event.id, "calendar_id": calendar.id}

    async def _action_invalidate(self, body: dict[str, Any]) -> dict[str, Any]:
        """Invalidate every sync token of a calendar ({calendar_id?}): the next incremental sync gets 410."""
        calendar_id = str(body.get("calendar_id") or self.config.primary_calendar_id)
        calendar = self.calendars.get(calendar_id)
        if calendar is None:
            raise ControlError([{"field": "calendar_id", "message": "unknown calendar"}], 404)
        calendar.generation += 1
        return {"calendar_id": calendar.id, "generation": calendar.generation}

    async def _action_create(self, body: dict[str, Any]) -> dict[str, Any]:
        """Add an event at the desk: {summary, start, end (RFC3339), calendar_id?, id?}."""
        calendar_id = str(body.get("calendar_id") or self.config.primary_calendar_id)

        def work() -> dict[str, Any]:
            calendar = self.calendar(calendar_id)
            data = {
                "summary": body.get("summary", "Walk-in"),
                "start": {"dateTime": body.get("start"), "timeZone": calendar.time_zone},
                "end": {"dateTime": body.get("end"), "timeZone": calendar.time_zone},
            }
            event = self.store_event(calendar, body.get("id"), data)
            return self.event_json(calendar, event)

        return self._desk(work)

    async def _action_deliveries(self, body: dict[str, Any]) -> dict[str, Any]:
        """Push notifications sent so far (optionally {channel_id}), oldest first."""
        wanted = body.get("channel_id")
        return {
            "deliveries": [
                delivery.__dict__
                for delivery in self.deliveries
                if wanted is None or delivery.channel_id == wanted
            ]
        }
