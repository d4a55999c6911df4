"""Backup schedules: what a schedule asks for, and what its last run did."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NewType

from strongroom.domain.errors import BadRequestError
from strongroom.domain.model import BackupId, InstanceId, ProjectId

ScheduleId = NewType("ScheduleId", str)

RETENTION_COUNTS = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)
RETENTION_KEYS = (*RETENTION_COUNTS, "keep_within")
MAX_COUNT = 100_000
# Seven digits a part: a unit's parts are stored summed ("900000h900000h" as "1800000h"),
# and a keep_within of the thousand years allowed (api.schemas) is 8.8 million hours.
DURATION_RE = re.compile(r"^(?:\d{1,7}[ymdh])+$")
DURATION_PART_RE = re.compile(r"(\d+)([ymdh])")


class RunStatus(StrEnum):
    """What the schedule's last run did."""

    STARTED = "STARTED"  # the backup was created and runs
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"  # the backup ran and failed
    SKIPPED = "SKIPPED"  # the run could not start (instance busy, quota...): see last_error


@dataclass(frozen=True)
class Duration:
    """A restic-style duration ("7d", "36h", "1y6m"): calendar years, months, days, hours."""

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> Duration:
        if not isinstance(text, str) or not DURATION_RE.match(text):
            raise BadRequestError(
                f"keep_within must be a duration such as 7d, 36h or 1y6m (got {text!r})."
            )
        parts = {"y": 0, "m": 0, "d": 0, "h": 0}
        for number, unit in DURATION_PART_RE.findall(text):
            parts[unit] += int(number)
        return cls(parts["y"], parts["m"], parts["d"], parts["h"])

    @property
    def in_years(self) -> float:
        """Its length in years, a month and a day taken at their Gregorian mean."""
        return self.years + self.months / 12 + (self.days + self.hours / 24) / 365.2425

    def __str__(self) -> str:
        units = (("y", self.years), ("m", self.months), ("d", self.days), ("h", self.hours))
        return "".join(f"{n}{u}" for u, n in units if n) or "0h"


@dataclass(frozen=True)
class RetentionPolicy:
    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0
    keep_within: Duration | None = None

    @property
    def empty(self) -> bool:
        return self == RetentionPolicy()

    @classmethod
    def parse(cls, spec: Any) -> RetentionPolicy:
        """From the request's ``retention`` object; unknown keys and negative or
        non-integer counts are refused."""
        if spec is None:
            return cls()
        if not isinstance(spec, dict):
            raise BadRequestError("retention must be an object.")
        unknown = sorted(set(spec) - set(RETENTION_KEYS))
        if unknown:
            raise BadRequestError(
                f"Unknown retention keys: {', '.join(unknown)} "
                f"(allowed: {', '.join(RETENTION_KEYS)})."
            )
        counts: dict[str, int] = {}
        for key in RETENTION_COUNTS:
            value = spec.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadRequestError(f"retention {key} must be an integer.")
            if value < 0 or value > MAX_COUNT:
                raise BadRequestError(f"retention {key} must be between 0 and {MAX_COUNT}.")
            counts[key] = value
        within = spec.get("keep_within")
        return cls(**counts, keep_within=Duration.parse(within) if within is not None else None)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: getattr(self, k) for k in RETENTION_COUNTS if getattr(self, k)}
        if self.keep_within is not None:
            out["keep_within"] = str(self.keep_within)
        return out


@dataclass
class Schedule:
    id: ScheduleId
    project_id: ProjectId
    instance_id: InstanceId
    name: str
    cron: str
    timezone: str
    created: datetime
    updated: datetime
    next_run_at: datetime
    incremental: bool = False
    full_every: int = 7
    storage_driver: str | None = None
    swift_container: str | None = None
    retention: RetentionPolicy = field(default_factory=RetentionPolicy)
    verify: bool = False
    drill_cron: str | None = None
    user_id: str = ""
    roles: tuple[str, ...] = ()  # the creator's roles (never admin): scheduled runs act so
    last_run_at: datetime | None = None
    last_backup_id: BackupId | None = None
    last_status: RunStatus | None = None
    last_error: str | None = None
    # The backup whose completion the scheduler still has to act on (retention, verify).
    pending_backup_id: BackupId | None = None
    next_drill_at: datetime | None = None  # when drill_cron next restores the newest backup
    # The last drill drill_cron asked for, apart from the backup runs' last_*: when, of
    # which backup, and why it was skipped (None: it started; its outcome is the backup's).
    last_drill_at: datetime | None = None
    last_drill_backup_id: BackupId | None = None
    last_drill_error: str | None = None
    # Where each backup of the schedule is copied ({"storage_driver", "swift_container"}),
    # and how many of those copies are kept there (the primary's ``retention`` is apart).
    copy_to: dict[str, str] | None = None
    copy_retention: RetentionPolicy = field(default_factory=RetentionPolicy)

    def definition(self) -> dict[str, Any]:
        """What a schedule's owner sets (and a PUT replaces), JSON-safe."""
        return {
            "instance_id": self.instance_id,
            "name": self.name,
            "cron": self.cron,
            "timezone": self.timezone,
            "incremental": self.incremental,
            "full_every": self.full_every,
            "storage_driver": self.storage_driver,
            "swift_container": self.swift_container,
            "retention": self.retention.to_dict(),
            "verify": self.verify,
            "drill_cron": self.drill_cron,
            "copy_to": self.copy_to,
            "copy_retention": self.copy_retention.to_dict() if self.copy_to else None,
        }
