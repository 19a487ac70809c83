"""Timestamps in one comparable form: ISO 8601 UTC with microseconds."""

from datetime import UTC, datetime


def now_iso() -> str:
    """-> '2026-11-23T20:45:01.123456+00:00' (fixed width, so strings sort in time order)."""
    return datetime.now(UTC).isoformat(timespec="microseconds")
