"""Provider name -> sandbox server class.

To add a simulator, write ``clinicsync/sandbox/<provider>.py`` with a ``SandboxServer`` subclass and
add ONE line to ``PROVIDERS`` below (``"name": "module.path:ClassName"``). Classes are imported lazily
so one broken or slow provider module never stops the others from running.
"""

from __future__ import annotations

import importlib

from clinicsync.sandbox.core import SandboxServer

PROVIDERS: dict[str, str] = {
    "opendental": "clinicsync.sandbox.opendental:OpenDentalSandbox",
    "cliniko": "clinicsync.sandbox.cliniko:ClinikoSandbox",
    "google_calendar": "clinicsync.sandbox.google_calendar:GoogleCalendarSandbox",
    "dentrix_ascend": "clinicsync.sandbox.dentrix_ascend:DentrixAscendSandbox",
    "vet_pims": "clinicsync.sandbox.vet_pims:VetPimsSandbox",
}


class UnknownProviderError(LookupError):
    def __init__(self, name: str) -> None:
        known = ", ".join(sorted(PROVIDERS)) or "none"
        super().__init__(f"unknown sandbox provider {name!r}; available: {known}")
        self.name = name


def provider_names() -> list[str]:
    return list(PROVIDERS)


def get_server_class(name: str) -> type[SandboxServer]:
    """The server class registered as ``name``; raises ``UnknownProviderError``."""
    target = PROVIDERS.get(name)
    if target is None:
        raise UnknownProviderError(name)
    module_name, _, class_name = target.partition(":")
    server_class = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(server_class, type) and issubclass(server_class, SandboxServer)):
        raise TypeError(f"{target} is not a SandboxServer subclass")
    return server_class
