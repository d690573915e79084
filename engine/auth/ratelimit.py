"""Login rate limiting: a sliding window of attempts per key (IP, or email).

In memory, per server process; several replicas each allow the limit.
"""

from __future__ import annotations

from collections import deque


class SlidingWindow:
    """At most `limit` hits per `window` seconds for each key."""

    def __init__(self, limit: int, window: float, *, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._hits: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        hits = self._hits.get(key)
        if hits is None:
            if len(self._hits) >= self.max_keys:
                self._prune(now)
            hits = self._hits[key] = deque()
        while hits and hits[0] <= now - self.window:
            hits.popleft()
        return hits

    def _prune(self, now: float) -> None:
        for key in [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]:
            del self._hits[key]
        if len(self._hits) >= self.max_keys:
            self._hits.clear()

    def blocked(self, key: str, now: float) -> float | None:
        """Seconds until `key` may try again, or None if it may now."""
        hits = self._recent(key, now)
        if len(hits) < self.limit:
            return None
        return max(hits[0] + self.window - now, 0.0)

    def hit(self, key: str, now: float) -> None:
        """Count one attempt of `key`."""
        self._recent(key, now).append(now)

    def reset(self, key: str) -> None:
        """Forget `key` (a successful login clears its failures)."""
        self._hits.pop(key, None)
