"""Per-client request budgets in one process: at most ``limit`` hits per ``window`` seconds.

Used where an outsider's requests cost us work or guesses: WebSub subscription requests
(each makes the hub call a URL they chose) and failed logins. Memory is bounded: at most
``max_keys`` clients are tracked, the least recently seen forgotten first.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Throttle:
    limit: int
    window: float  # seconds
    max_keys: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _hits: OrderedDict[str, deque[float]] = field(default_factory=OrderedDict)

    def _recent(self, key: str) -> deque[float]:
        now = self.clock()
        hits = self._hits.get(key)
        if hits is None:
            hits = self._hits[key] = deque()
            while len(self._hits) > self.max_keys:
                self._hits.popitem(last=False)
        else:
            self._hits.move_to_end(key)
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def allow(self, key: str) -> bool:
        """Count one hit for ``key``; False (and not counted) when its budget is spent."""
        hits = self._recent(key)
        if len(hits) >= self.limit:
            return False
        hits.append(self.clock())
        return True

    def blocked(self, key: str) -> bool:
        """Whether ``key`` has spent its budget (without counting a hit)."""
        return len(self._recent(key)) >= self.limit

    def record(self, key: str) -> None:
        """Count one hit for ``key`` (e.g. a failure), whatever its budget."""
        self._recent(key).append(self.clock())

    def retry_after(self, key: str) -> int:
        """Seconds until ``key`` has room again (0: now)."""
        hits = self._recent(key)
        if len(hits) < self.limit:
            return 0
        return max(1, int(hits[len(hits) - self.limit] + self.window - self.clock()) + 1)
