"""The wall clock in naive UTC. Kept to the microsecond so that "most recently updated"
orders correctly within a second; views show whole seconds."""

from __future__ import annotations

from datetime import UTC, datetime


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC).replace(tzinfo=None)
