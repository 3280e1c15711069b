"""Routes for login, the caller's organization, users and tokens."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, status

from clinicsync.deps import PUBLIC, Requires, SessionDep, get_sessionmaker, writes_in_own_transactions
from clinicsync.tenancy import service
from clinicsync.tenancy.permissions import Capability
from clinicsync.tenancy.principal import Principal
from clinicsync.tenancy.schemas import (
    LoginRequest,
    OrganizationRead,
    OrganizationUpdate,
    TokenCreate,
    TokenIssued,
    TokenRead,
    UserCreate,
    UserRead,
)

router = APIRouter(prefix="/api/v1", tags=["tenancy"])

AccountReader = Annotated[Principal, Requires(Capability.ACCOUNT_READ)]
OrganizationReader = Annotated[Principal, Requires(Capability.ORGANIZATION_READ)]
OrganizationManager = Annotated[Principal, Requires(Capability.ORGANIZATION_MANAGE)]
UserManager = Annotated[Principal, Requires(Capability.USERS_MANAGE)]
TokenHolder = Annotated[Principal, Requires(Capability.TOKENS_OWN)]
TokenIssuer = Annotated[Principal, Requires(Capability.TOKENS_ISSUE)]


@router.post(
    "/auth/login", response_model=TokenIssued, dependencies=[PUBLIC, Depends(writes_in_own_transactions)]
)
async def login(body: LoginRequest, session: SessionDep, request: Request) -> TokenIssued:
    """Trades an email and password for a token. Repeated failures answer 429 with Retry-After."""
    return await service.login(
        session,
        body.email,
        body.password,
        body.organization,
        throttle=request.app.state.login_throttle,
        address=request.client.host if request.client else "unknown",
        sessionmaker=get_sessionmaker(request),
    )


@router.get("/me", response_model=UserRead)
async def me(principal: AccountReader, session: SessionDep) -> object:
    return await service.get_user(session, principal, principal.user_id)


@router.get("/organization", response_model=OrganizationRead)
async def read_organization(principal: OrganizationReader, session: SessionDep) -> object:
    return await service.get_organization(session, principal.organization_id)


@router.patch("/organization", response_model=OrganizationRead)
async def update_organization(
    body: OrganizationUpdate, principal: OrganizationManager, session: SessionDep
) -> object:
    return await service.update_organization(session, principal, body)


@router.get("/users", response_model=list[UserRead])
async def list_users(principal: UserManager, session: SessionDep) -> object:
    return await service.list_users(session, principal)


@router.post("/users", response_model=UserRead, status_code=status.HTTP_201_CREATED)
async def create_user(body: UserCreate, principal: UserManager, session: SessionDep) -> object:
    return await service.add_user(session, principal, body)


@router.get("/users/{user_id}", response_model=UserRead)
async def read_user(user_id: uuid.UUID, principal: UserManager, session: SessionDep) -> object:
    return await service.get_user(session, principal, user_id)


@router.delete("/users/{user_id}", status_code=status.HTTP_204_NO_CONTENT)
async def deactivate_user(user_id: uuid.UUID, principal: UserManager, session: SessionDep) -> None:
    await service.remove_user(session, principal, user_id)


@router.get("/tokens", response_model=list[TokenRead])
async def list_tokens(principal: TokenHolder, session: SessionDep) -> object:
    return await service.list_tokens(session, principal)


@router.post("/tokens", response_model=TokenIssued, status_code=status.HTTP_201_CREATED)
async def create_token(body: TokenCreate, principal: TokenIssuer, session: SessionDep) -> TokenIssued:
    return await service.create_token(session, principal, body)


@router.delete("/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
async def revoke_token(token_id: uuid.UUID, principal: TokenHolder, session: SessionDep) -> None:
    await service.revoke_token(session, principal, token_id)
