"""Imports every domain's tables so that Base.metadata is complete (Alembic, tests)."""

from clinicsync.agents import models as agent_models  # noqa: F401
from clinicsync.booking import models as booking_models  # noqa: F401
from clinicsync.db.base import Base
from clinicsync.integrations import models as integration_models  # noqa: F401
from clinicsync.realtime import models as realtime_models  # noqa: F401
from clinicsync.sync import inbound_models as sync_inbound_models  # noqa: F401
from clinicsync.sync import models as sync_models  # noqa: F401
from clinicsync.sync.runs import models as sync_run_models  # noqa: F401
from clinicsync.sync.slots import models as sync_slot_models  # noqa: F401
from clinicsync.tenancy import models as tenancy_models  # noqa: F401
from clinicsync.tenancy import throttle as tenancy_throttle  # noqa: F401

metadata = Base.metadata
