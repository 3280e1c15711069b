"""The sync fixtures (the app with fast delivery settings, sandbox PMSs) for slot tests."""

from tests.sync.conftest import sandboxes, server  # noqa: F401
