"""The wall clock, in naive UTC to the second (what the wire format shows)."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None, microsecond=0)

    def precise(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)
