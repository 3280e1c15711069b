"""Agent administration: the clinic's agent policy, voice-platform channels and the booking trail.

No HTTP here. A channel is how a voice platform reaches the tools for one clinic: it owns a
service user (so every booking is attributable), a token Vapi presents, and for Retell the
API key Retell signs each request with (encrypted at rest, never returned).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from clinicsync.agents import policy
from clinicsync.agents.models import AgentChannel, AgentSettings
from clinicsync.agents.schemas import (
    AgentBookingRead,
    AgentSettingsRead,
    AgentSettingsUpdate,
    ChannelCreate,
    ChannelIssued,
    ChannelRead,
)
from clinicsync.booking import appointment_types, appointments
from clinicsync.booking import service as booking
from clinicsync.booking.models import BookingSource
from clinicsync.errors import NotFound, Unauthorized, ValidationFailed
from clinicsync.integrations.credentials import SecretCipher
from clinicsync.sync import external_only
from clinicsync.tenancy import permissions, security
from clinicsync.tenancy import service as tenancy_service
from clinicsync.tenancy.models import Role
from clinicsync.tenancy.permissions import Capability, Scope
from clinicsync.tenancy.principal import Principal
from clinicsync.tenancy.schemas import UserCreate

# Retell stamps its signature with the time; older ones are refused so a captured request
# can't be replayed later.
SIGNATURE_MAX_AGE_SECONDS = 5 * 60


async def get_settings(session: AsyncSession, principal: Principal) -> AgentSettingsRead:
    rules = await policy.load(session, principal.organization_id)
    return AgentSettingsRead(
        booking_enabled=rules.booking_enabled,
        practitioner_ids=sorted(rules.practitioner_ids, key=str)
        if rules.practitioner_ids is not None
        else None,
        appointment_types=list(rules.appointment_types) if rules.appointment_types is not None else None,
        phone_region=rules.phone_region,
    )


async def update_settings(
    session: AsyncSession, principal: Principal, data: AgentSettingsUpdate
) -> AgentSettingsRead:
    row = await session.get(AgentSettings, principal.organization_id)
    if row is None:
        row = AgentSettings(organization_id=principal.organization_id, booking_enabled=True)
        session.add(row)
    changes = data.model_dump(exclude_unset=True)
    if "booking_enabled" in changes:
        if changes["booking_enabled"] is None:
            raise ValidationFailed("booking_enabled", "may not be null")
        row.booking_enabled = changes["booking_enabled"]
    if "practitioner_ids" in changes:
        ids = changes["practitioner_ids"]
        if ids is not None:
            for practitioner_id in ids:
                try:
                    await booking.get_practitioner(session, principal, practitioner_id)
                except NotFound:
                    raise ValidationFailed(
                        "practitioner_ids", f"practitioner {practitioner_id} not found"
                    ) from None
        row.practitioner_ids = [str(value) for value in ids] if ids is not None else None
    if "appointment_types" in changes:
        row.appointment_types = await _type_ids(session, principal, changes["appointment_types"])
    if "phone_region" in changes:
        row.phone_region = changes["phone_region"].upper() if changes["phone_region"] else None
    await session.flush()
    return await get_settings(session, principal)


async def _type_ids(session: AsyncSession, principal: Principal, given: list[str] | None) -> list[str] | None:
    """Each entry an appointment type's id or name in this clinic; stored as ids, so a rename keeps it."""
    if given is None:
        return None
    types = await appointment_types.list_types(session, principal, limit=1000)
    by_name = {kind.name.strip().lower(): kind for kind in types}
    by_id = {str(kind.id): kind for kind in types}
    ids: list[str] = []
    for entry in given:
        kind = by_id.get(entry.strip().lower()) or by_name.get(entry.strip().lower())
        if kind is None:
            raise ValidationFailed("appointment_types", f"no appointment type {entry!r} in this clinic")
        if str(kind.id) not in ids:
            ids.append(str(kind.id))
    return ids


# --- channels --------------------------------------------------------------------------------------


async def create_channel(
    session: AsyncSession, principal: Principal, data: ChannelCreate, cipher: SecretCipher
) -> ChannelIssued:
    if data.platform == "retell" and not data.signing_secret:
        raise ValidationFailed(
            "signing_secret", "Retell channels need the Retell API key that signs requests"
        )
    user = await tenancy_service.create_user(
        session,
        principal.organization_id,
        UserCreate(
            email=f"{data.platform}-{uuid.uuid4().hex[:10]}@agents.clinicsync.example",
            full_name=data.name or f"{data.platform} voice agent",
            role=Role.SERVICE,
        ),
    )
    token = security.new_token()
    channel = AgentChannel(
        organization_id=principal.organization_id,
        platform=data.platform,
        name=data.name,
        service_user_id=user.id,
        token_hash=security.hash_token(token),
        token_prefix=token[:10],
        signing_secret_ciphertext=(
            cipher.encrypt({"signing_secret": data.signing_secret}) if data.signing_secret else None
        ),
        booking_source=data.booking_source,
    )
    session.add(channel)
    await session.flush()
    return ChannelIssued(**ChannelRead.model_validate(channel).model_dump(), token=token)


async def list_channels(session: AsyncSession, principal: Principal) -> list[AgentChannel]:
    rows = await session.scalars(
        select(AgentChannel)
        .where(AgentChannel.organization_id == principal.organization_id)
        .order_by(AgentChannel.created_at)
    )
    return list(rows)


async def revoke_channel(session: AsyncSession, principal: Principal, channel_id: uuid.UUID) -> None:
    channel = await session.scalar(
        select(AgentChannel).where(
            AgentChannel.id == channel_id, AgentChannel.organization_id == principal.organization_id
        )
    )
    if channel is None:
        raise NotFound(f"channel {channel_id} not found")
    channel.is_active = False
    user = await tenancy_service.get_user(session, principal, channel.service_user_id)
    await tenancy_service.deactivate_user(session, user)
    await session.flush()


def channel_principal(channel: AgentChannel) -> Principal:
    return Principal(
        organization_id=channel.organization_id, user_id=channel.service_user_id, role=Role.SERVICE
    )


def channel_source(channel: AgentChannel) -> BookingSource:
    return BookingSource(channel.booking_source)


async def channel_by_token(session: AsyncSession, platform: str, token: str | None) -> AgentChannel:
    if not token:
        raise Unauthorized("missing channel token")
    channel = await session.scalar(
        select(AgentChannel).where(AgentChannel.token_hash == security.hash_token(token.strip()))
    )
    if channel is None or not channel.is_active or channel.platform != platform:
        raise Unauthorized("invalid channel token")
    return channel


def retell_signature(body: bytes, secret: str, timestamp_ms: int) -> str:
    """Retell's X-Retell-Signature: v=<ms timestamp>,d=<hex HMAC-SHA256 of body + timestamp>.

    The HMAC key is the clinic's Retell API key."""
    digest = hmac.new(secret.encode(), body + str(timestamp_ms).encode(), hashlib.sha256).hexdigest()
    return f"v={timestamp_ms},d={digest}"


async def verified_retell_channel(
    session: AsyncSession, channel_id: str | None, body: bytes, signature: str | None, cipher: SecretCipher
) -> AgentChannel:
    """The Retell channel a request claims, only if the body carries that channel's valid, fresh signature."""
    try:
        wanted = uuid.UUID(channel_id or "")
    except ValueError:
        raise Unauthorized("channel: give the agent channel id as ?channel=") from None
    channel = await session.get(AgentChannel, wanted)
    if channel is None or not channel.is_active or channel.platform != "retell":
        raise Unauthorized("unknown Retell channel")
    if not signature or channel.signing_secret_ciphertext is None:
        raise Unauthorized("missing X-Retell-Signature")
    parts = dict(part.split("=", 1) for part in signature.split(",") if "=" in part)
    try:
        stamp = int(parts.get("v", ""))
    except ValueError:
        raise Unauthorized("malformed X-Retell-Signature") from None
    if abs(time.time() * 1000 - stamp) > SIGNATURE_MAX_AGE_SECONDS * 1000:
        raise Unauthorized("X-Retell-Signature has expired")
    secret = cipher.decrypt(channel.signing_secret_ciphertext)["signing_secret"]
    if not hmac.compare_digest(retell_signature(body, secret, stamp), signature.strip()):
        raise Unauthorized("X-Retell-Signature does not match")
    return channel


# --- the trail staff see ---------------------------------------------------------------------------


async def agent_bookings(
    session: AsyncSession, principal: Principal, limit: int = 100
) -> list[AgentBookingRead]:
    items: list[AgentBookingRead] = []
    own = permissions.scope_of(principal, Capability.APPOINTMENTS_LIST) == Scope.OWN
    actor = principal.user_id if own and principal.role == Role.SERVICE else None
    for entry in await policy.bookings_of(session, principal.organization_id, limit, actor):
        try:
            appointment = await appointments.get_appointment(session, principal, entry.appointment_id)
        except NotFound:
            held = await external_only.get_view(session, principal, entry.appointment_id)
            if held is None or principal.role == Role.PRACTITIONER:
                continue  # gone, or not in a practitioner's own diary
            appointment = held
        items.append(
            AgentBookingRead(
                appointment_id=appointment.id,
                booking_reference=appointment.booking_reference,
                action=entry.action,
                surface=entry.surface,
                booking_source=entry.booking_source,
                call_id=entry.call_id,
                start=appointment.starts_at,
                status=appointment.status.value,
                practitioner_name=appointment.practitioner_name,
                created_at=entry.created_at,
            )
        )
    return items
