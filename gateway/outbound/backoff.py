"""The one back-off of everything outbound: the client's retries within a call and the outbox's retries
between attempts wait by the same rule."""

from __future__ import annotations

import random
from collections.abc import Callable


def backoff_seconds(attempts: int, base: float, cap: float, retry_after: float | None = None,
                    rng: Callable[[], float] = random.random) -> float:
    """Delay after ``attempts`` failed attempts: base*2**(n-1) capped at ``cap``, equal jitter (between half and
    all of that, so retries spread out yet never fire at once), at least the server's Retry-After.

    >>> backoff_seconds(3, 2.0, 600.0, rng=lambda: 1.0)
    8.0
    >>> backoff_seconds(1, 2.0, 600.0, retry_after=90)
    90
    """
    ceiling = min(cap, base * 2 ** max(0, attempts - 1))
    delay = ceiling / 2 + ceiling / 2 * rng()
    return max(delay, retry_after or 0.0)
