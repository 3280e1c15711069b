"""Contract-faithful simulators of practice-management-system APIs, with fault injection.

The framework (``core``, ``faults``, ``clock``, ``generator``, ``runner``, ``registry``) is provider
neutral; each simulated PMS is one module with a ``SandboxServer`` subclass, registered by name in
``registry.PROVIDERS``. See docs/sandbox.md.
"""

from clinicsync.sandbox.clock import SandboxClock
from clinicsync.sandbox.core import (
    ActionHandler,
    ControlError,
    RequestLogEntry,
    SandboxError,
    SandboxServer,
)
from clinicsync.sandbox.faults import FaultSettings
from clinicsync.sandbox.generator import ClinicSpec, GeneratedClinic, generate_clinic
from clinicsync.sandbox.registry import PROVIDERS, UnknownProviderError, get_server_class, provider_names
from clinicsync.sandbox.runner import run_sandbox

__all__ = [
    "PROVIDERS",
    "ActionHandler",
    "ClinicSpec",
    "ControlError",
    "FaultSettings",
    "GeneratedClinic",
    "RequestLogEntry",
    "SandboxClock",
    "SandboxError",
    "SandboxServer",
    "UnknownProviderError",
    "generate_clinic",
    "get_server_class",
    "provider_names",
    "run_sandbox",
]
