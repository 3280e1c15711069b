"""Tenancy rules: organizations, users, tokens, login and token authentication."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

from sqlalchemy import bindparam, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from clinicsync.config import get_settings
from clinicsync.db.base import utcnow
from clinicsync.db.engine import session_scope
from clinicsync.errors import (
    Conflict,
    Forbidden,
    NotFound,
    TooManyRequests,
    Unauthorized,
    ValidationFailed,
    partial_update,
)
from clinicsync.tenancy import permissions, security
from clinicsync.tenancy.models import ApiToken, Organization, Role, User
from clinicsync.tenancy.permissions import Capability, Scope
from clinicsync.tenancy.principal import Principal
from clinicsync.tenancy.schemas import (
    OrganizationCreate,
    OrganizationUpdate,
    TokenCreate,
    TokenIssued,
    UserCreate,
)
from clinicsync.tenancy.throttle import LoginThrottle

# Refresh last_used_at at most this often, so reads don't turn into writes on every request.
LAST_USED_RESOLUTION = timedelta(minutes=5)


def _slugify(name: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return (slug or "clinic")[:60]


async def create_organization(session: AsyncSession, data: OrganizationCreate) -> Organization:
    slug = data.slug or _slugify(data.name)
    if data.slug is None:
        # Derived slugs get a short suffix when the name is taken; explicit ones are refused instead.
        base = slug
        while await session.scalar(select(Organization.id).where(Organization.slug == slug)):
            slug = f"{base}-{uuid.uuid4().hex[:6]}"
    elif await session.scalar(select(Organization.id).where(Organization.slug == slug)):
        raise Conflict(f"slug: organization slug {slug!r} is already taken")
    organization = Organization(name=data.name, slug=slug, time_zone=data.time_zone)
    session.add(organization)
    await session.flush()
    return organization


async def get_organization(session: AsyncSession, organization_id: uuid.UUID) -> Organization:
    organization = await session.get(Organization, organization_id)
    if organization is None:
        raise NotFound("organization not found")
    return organization


async def update_organization(
    session: AsyncSession, principal: Principal, data: OrganizationUpdate
) -> Organization:
    organization = await get_organization(session, principal.organization_id)
    for field, value in partial_update(data).items():
        setattr(organization, field, value)
    await session.flush()
    return organization


async def create_user(session: AsyncSession, organization_id: uuid.UUID, data: UserCreate) -> User:
    email = data.email.lower()
    taken = await session.scalar(
        select(User.id).where(User.organization_id == organization_id, User.email == email)
    )
    if taken:
        raise Conflict(f"email: a user with email {email} already exists in this organization")
    user = User(
        organization_id=organization_id,
        email=email,
        full_name=data.full_name,
        role=data.role,
        password_hash=await security.hash_password_off_loop(data.password) if data.password else None,
    )
    session.add(user)
    await session.flush()
    return user


def _may_act_on(principal: Principal, role: Role, action: str) -> None:
    if not permissions.outranks_or_equals(principal.role, role):
        raise Forbidden(f"your role ({principal.role.value}) cannot {action} {role.value} users")


async def add_user(session: AsyncSession, principal: Principal, data: UserCreate) -> User:
    """A user created through the API: never of a role above the creator's (only owners add owners)."""
    _may_act_on(principal, data.role, "create")
    return await create_user(session, principal.organization_id, data)


async def list_users(session: AsyncSession, principal: Principal) -> list[User]:
    result = await session.scalars(
        select(User).where(User.organization_id == principal.organization_id).order_by(User.email)
    )
    return list(result)


async def get_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> User:
    user = await session.scalar(
        select(User).where(User.id == user_id, User.organization_id == principal.organization_id)
    )
    if user is None:
        raise NotFound(f"user {user_id} not found")
    return user


async def remove_user(session: AsyncSession, principal: Principal, user_id: uuid.UUID) -> None:
    user = await get_user(session, principal, user_id)
    if user.id == principal.user_id:
        raise ValidationFailed("user_id", "you cannot deactivate your own login; ask another owner or admin")
    _may_act_on(principal, user.role, "deactivate")
    await deactivate_user(session, user)


async def deactivate_user(session: AsyncSession, user: User) -> None:
    """Removes a login: the user can no longer sign in and every token stops working at once."""
    user.is_active = False
    user.password_hash = None
    await revoke_user_tokens(session, user.id)


async def revoke_user_tokens(session: AsyncSession, user_id: uuid.UUID) -> None:
    await session.execute(
        update(ApiToken)
        .where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )


def token_lifetime(role: Role, expires_in_days: int | None, *, login: bool = False) -> timedelta:
    """Every token expires: a login's after hours, others after days that depend on who holds them."""
    settings = get_settings()
    if login:
        return timedelta(hours=settings.login_token_hours)
    if role == Role.SERVICE:
        default, longest = settings.service_token_days, settings.max_service_token_days
    else:
        default, longest = settings.token_days, settings.max_token_days
    days = expires_in_days or default
    if days > longest:
        raise ValidationFailed("expires_in_days", f"a {role.value} token lives at most {longest} days")
    return timedelta(days=days)


async def issue_token(
    session: AsyncSession,
    user: User,
    *,
    name: str = "",
    expires_in_days: int | None = None,
    login: bool = False,
) -> TokenIssued:
    raw = security.new_token()
    now = utcnow()
    token = ApiToken(
        organization_id=user.organization_id,
        user_id=user.id,
        name=name,
        token_hash=security.hash_token(raw),
        prefix=raw[:10],
        created_at=now,
        expires_at=now + token_lifetime(user.role, expires_in_days, login=login),
    )
    session.add(token)
    await session.flush()
    return TokenIssued(
        id=token.id,
        token=raw,
        prefix=token.prefix,
        expires_at=token.expires_at,
        organization_id=user.organization_id,
        user_id=user.id,
        role=user.role,
    )


async def create_token(session: AsyncSession, principal: Principal, data: TokenCreate) -> TokenIssued:
    """Anyone but a service account issues tokens for themselves; owners and admins also for users
    up to their own role, which is the only way a service account gets one."""
    scope = permissions.scope_of(principal, Capability.TOKENS_ISSUE)
    target_id = data.user_id or principal.user_id
    if target_id != principal.user_id and scope != Scope.ALL:
        raise Forbidden("only an owner or admin may issue tokens for another user")
    user = await get_user(session, principal, target_id)
    if not user.is_active:
        raise ValidationFailed("user_id", "user is deactivated")
    if user.id != principal.user_id:
        _may_act_on(principal, user.role, "issue tokens for")
    return await issue_token(session, user, name=data.name, expires_in_days=data.expires_in_days)


async def list_tokens(session: AsyncSession, principal: Principal) -> list[ApiToken]:
    query = (
        select(ApiToken)
        .join(User, User.id == ApiToken.user_id)
        .where(ApiToken.organization_id == principal.organization_id)
    )
    if permissions.scope_of(principal, Capability.TOKENS_OWN) == Scope.OWN:
        query = query.where(ApiToken.user_id == principal.user_id)
    else:
        visible = [role for role in Role if permissions.outranks_or_equals(principal.role, role)]
        query = query.where((ApiToken.user_id == principal.user_id) | User.role.in_(visible))
    return list(await session.scalars(query.order_by(ApiToken.created_at)))


async def revoke_token(session: AsyncSession, principal: Principal, token_id: uuid.UUID) -> None:
    row = (
        await session.execute(
            select(ApiToken, User.role)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.id == token_id, ApiToken.organization_id == principal.organization_id)
        )
    ).first()
    scope = permissions.scope_of(principal, Capability.TOKENS_OWN)
    if row is None:
        raise NotFound(f"token {token_id} not found")
    token, holder_role = row
    own = token.user_id == principal.user_id
    if not own and (scope != Scope.ALL or not permissions.outranks_or_equals(principal.role, holder_role)):
        raise NotFound(f"token {token_id} not found")
    token.revoked_at = token.revoked_at or utcnow()


# Built once: every request runs it, and a prebuilt statement's cache key is computed only once.
_TOKEN_LOOKUP = (
    select(ApiToken, User, Organization)
    .join(User, User.id == ApiToken.user_id)
    .join(Organization, Organization.id == ApiToken.organization_id)
    .where(ApiToken.token_hash == bindparam("token_hash"))
)


async def authenticate(session: AsyncSession, raw_token: str) -> tuple[Principal, bool]:
    """Resolves a bearer token. Returns the principal and whether last_used_at is due a refresh."""
    # The organization comes along in the same round trip: it lands in the session's identity
    # map, so the route's own get_organization (session.get) costs no query.
    row = (await session.execute(_TOKEN_LOOKUP, {"token_hash": security.hash_token(raw_token)})).first()
    now = utcnow()
    if row is None:
        raise Unauthorized("invalid token")
    token, user, organization = row
    # The identity map holds objects weakly; pinning the organization to the session keeps it
    # there for the request, so get_organization (session.get) finds it without a query.
    session.info.setdefault("pinned", []).append(organization)
    if token.revoked_at is not None or not user.is_active:
        raise Unauthorized("token revoked")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthorized("token expired")
    principal = Principal(
        organization_id=token.organization_id, user_id=user.id, role=user.role, token_id=token.id
    )
    stale = token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION
    return principal, stale


async def organizations_of_same_email(
    session: AsyncSession, principal: Principal, capability: Capability
) -> list[Organization]:
    """The organizations where the signed-in person's email has an active account with a password
    whose role may use ``capability``, the principal's own among them, by name.

    Each is a separate account with its own password: a list to choose from, never a licence to
    switch (emails are not verified, so the same email is no proof of the same person)."""
    email = await session.scalar(
        select(User.email).where(
            User.id == principal.user_id, User.organization_id == principal.organization_id
        )
    )
    if email is None:
        return []
    roles = [role for role in Role if permissions.allows(role, capability)]
    found = await session.scalars(
        select(Organization)
        .join(User, User.organization_id == Organization.id)
        .where(
            User.email == email,
            User.is_active.is_(True),
            User.password_hash.is_not(None),
            User.role.in_(roles),
        )
        .order_by(Organization.name, Organization.slug)
    )
    return list(found)


async def touch_token(session: AsyncSession, token_id: uuid.UUID) -> None:
    await session.execute(update(ApiToken).where(ApiToken.id == token_id).values(last_used_at=utcnow()))


async def login(
    session: AsyncSession,
    email: str,
    password: str,
    organization: str | None,
    *,
    throttle: LoginThrottle,
    address: str,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> TokenIssued:
    """Checks the password and issues a token without holding a database connection or the
    SQLite write lock while argon2 runs: a burst of logins queues for the hasher, not for the pool."""
    account = f"{(organization or '').lower()}/{email.lower()}"
    wait = await throttle.retry_after(session, account, address)
    if wait is not None:
        raise TooManyRequests(f"too many failed logins; try again in {wait} seconds", retry_after=wait)
    query = select(User.id, User.password_hash).where(User.email == email.lower(), User.is_active.is_(True))
    if organization is not None:
        query = query.join(Organization, Organization.id == User.organization_id).where(
            Organization.slug == organization
        )
    users = list((await session.execute(query)).all())
    # The read is done: give the connection back before hashing.
    await session.rollback()
    if len(users) > 1:
        raise ValidationFailed("organization", "this email belongs to several organizations; give its slug")
    user_id, password_hash = users[0] if users else (None, None)
    # Verify even when the user is missing-or-passwordless so timing doesn't reveal which emails exist.
    verified = await security.verify_password_off_loop(password_hash or await _timing_hash(), password)
    if not verified or user_id is None or password_hash is None:
        await throttle.failed(sessionmaker, account, address)
        raise Unauthorized("email or password is wrong")
    await throttle.succeeded(sessionmaker, account)
    async with session_scope(sessionmaker) as write:
        holder = await write.get(User, user_id)
        if holder is None or not holder.is_active or holder.password_hash != password_hash:
            raise Unauthorized("email or password is wrong")
        return await issue_token(write, holder, name="login", login=True)


_timing_hashes: list[str] = []


async def _timing_hash() -> str:
    """A hash to verify against when the user has none. Made at the first login that needs it, not
    at import: a hash costs about half a second of CPU, which every process (each CLI command, each
    worker) would pay on start."""
    if not _timing_hashes:
        _timing_hashes.append(await security.hash_password_off_loop("not-a-real-password-just-timing"))
    return _timing_hashes[0]
