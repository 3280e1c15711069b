"""The sync fixtures (the app with fast delivery settings, a clinic on the OpenDental sandbox)."""

from tests.sync.conftest import opendental, sandboxes, server  # noqa: F401
