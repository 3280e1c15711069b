"""Change events: one row per committed change, delivered live over Server-Sent Events.

Importing the package installs the session hook (see ``hooks``), so every session that writes a
tracked model records its events in the same transaction.
"""

from clinicsync.realtime import hooks as _hooks  # noqa: F401  (installs the session hook)
