"""Per-client rate limit: a token bucket of GATEWAY_RATE_LIMIT requests per minute, per process.

>>> rl = RateLimiter(60); rl.take("c", now=0.0)
0.0
Bursts up to the limit pass; then one request per (60 / limit) seconds. ``take`` returns 0 when the
request may go, else the seconds to wait (the API answers 429 with that as Retry-After).
"""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    def __init__(self, per_minute: int):
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str, now: float | None = None) -> float:
        if self.capacity <= 0:
            return 0.0
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, at = self._buckets.get(client, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[client] = (tokens - 1.0, now)
                return 0.0
            self._buckets[client] = (tokens, now)
            return (1.0 - tokens) / self.rate

    @staticmethod
    def retry_after(wait: float) -> str:
        return str(max(1, math.ceil(wait)))
