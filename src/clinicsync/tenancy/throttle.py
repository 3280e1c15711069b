"""Login throttling: failed logins counted per account and per client address.

After ``account_limit`` failures for one account (or ``address_limit`` from one address, which
catches one client trying many accounts) within ``window_seconds``, further attempts are
refused with 429 and Retry-After until the oldest failure leaves the window. A refused attempt
is not checked at all, so it costs no password hashing. A successful login clears its account.

The counts live in the process: a deployment with several processes throttles each one
separately (the limits then apply per process).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_TRACKED_KEYS = 100_000


@dataclass
class LoginThrottle:
    account_limit: int = 10
    address_limit: int = 50
    window_seconds: float = 15 * 60
    clock: Callable[[], float] = time.monotonic
    _failures: dict[str, deque[float]] = field(default_factory=dict)

    def _recent(self, key: str, now: float) -> deque[float]:
        failures = self._failures.get(key)
        if failures is None:
            return deque()
        while failures and failures[0] <= now - self.window_seconds:
            failures.popleft()
        if not failures:
            del self._failures[key]
        return failures

    def retry_after(self, account: str, address: str) -> int | None:
        """Seconds until ``account`` from ``address`` may try again, or None if it may now."""
        now = self.clock()
        waits = []
        for key, limit in (
            (f"account:{account}", self.account_limit),
            (f"address:{address}", self.address_limit),
        ):
            failures = self._recent(key, now)
            if len(failures) >= limit:
                waits.append(failures[-limit] + self.window_seconds - now)
        return max(1, math.ceil(max(waits))) if waits else None

    def failed(self, account: str, address: str) -> None:
        now = self.clock()
        if len(self._failures) > MAX_TRACKED_KEYS:
            for key in list(self._failures):
                self._recent(key, now)
        for key in (f"account:{account}", f"address:{address}"):
            self._failures.setdefault(key, deque()).append(now)

    def succeeded(self, account: str) -> None:
        self._failures.pop(f"account:{account}", None)
