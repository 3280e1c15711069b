"""Who is calling: the authenticated subject every service call is scoped by."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from clinicsync.tenancy.models import ADMIN_ROLES, Role


@dataclass(frozen=True, slots=True)
class Principal:
    organization_id: uuid.UUID
    user_id: uuid.UUID
    role: Role
    token_id: uuid.UUID | None = None

    @property
    def is_admin(self) -> bool:
        return self.role in ADMIN_ROLES
