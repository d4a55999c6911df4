"""Point-in-time restore's records: an instance's archiving policy and its archived log
batches. Positions are the engine's (PostgreSQL: LSNs as integers); times naive UTC."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass
class PitrPolicy:
    """``next_start``: where the next batch starts (everything before it is stored);
    ``None`` until archiving has started, and again after a gap."""

    instance_id: str
    project_id: str
    enabled: bool
    store_name: str
    container: str
    updated: datetime
    next_start: int | None = None
    started_at: datetime | None = None  # when archiving from next_start began (a run's start)
    last_error: str | None = None


@dataclass(frozen=True)
class WalBatch:
    """One stored batch: log ``[start, stop)``, every commit in ``(archived_from,
    archived_through]``."""

    id: str
    project_id: str
    instance_id: str
    store_name: str
    container: str
    start: int
    stop: int
    archived_from: datetime
    archived_through: datetime
    created: datetime


@dataclass(frozen=True)
class ArchivedRun:
    """Batches that join, each starting where the one before it stopped: every commit in
    ``(archived_from, archived_through]`` is archived."""

    archived_from: datetime
    archived_through: datetime


@dataclass(frozen=True)
class ArchiveSummary:
    """An instance's archive as its view needs it: the runs oldest first (a hole, from a
    lost slot or archiving stopped, starts another) and the newest archived commit."""

    runs: tuple[ArchivedRun, ...]
    last_archived: datetime | None
