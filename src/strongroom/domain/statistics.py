"""What the metadata says about the service as a whole, read at once for monitoring."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True)
class LastSuccess:
    instance_id: str
    project_id: str
    at: datetime  # when the instance's newest COMPLETED backup finished


@dataclass(frozen=True)
class ServiceStatistics:
    # (state, datastore name) → backups; deleted backups are gone from the metadata.
    backups: dict[tuple[str, str], int] = field(default_factory=dict)
    last_success: list[LastSuccess] = field(default_factory=list)
    jobs_running: int = 0
    jobs_queued: int = 0
    live_workers: list[str] = field(default_factory=list)
    workers_seen: dict[str, datetime] = field(default_factory=dict)  # host id → last beat


class StatisticsSource(Protocol):
    def read(self, *, live_since: datetime) -> ServiceStatistics:
        """A few aggregate queries; cheap enough for every scrape."""
        ...

    def ping(self) -> None:
        """Raise when the metadata database cannot answer a trivial query."""
        ...
