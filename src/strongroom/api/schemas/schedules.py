"""Backup schedules on the wire: the request body's JSON Schema and the documented views."""

from __future__ import annotations

from typing import Any

from strongroom.api.schemas.requests import (
    COPY_TARGET,
    NAME,
    UUID,
    request_body,
)
from strongroom.api.schemas.responses import (
    NULLABLE_STRING,
    STRING,
    TIMESTAMP,
    _many,
    _object,
    _single,
)

COUNT = {"type": "integer", "minimum": 0, "maximum": 100_000}
CRON = {"type": "string", "minLength": 9, "maxLength": 255}
# keep_within reaches back from the newest backup: no date comes before year 1, and no
# backup is kept for a thousand years.
MAX_KEEP_WITHIN_YEARS = 1000
# Keys and counts are checked by the service (its messages name the keys allowed).
RETENTION: dict[str, Any] = {
    "type": "object",
    "properties": {"keep_within": {"x-max-years": MAX_KEEP_WITHIN_YEARS}},
}

SCHEDULE_BODY: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["instance_id", "name", "cron"],
    "properties": {
        "instance_id": UUID,
        "name": NAME,  # each run's backup is named after it
        "cron": CRON,
        "timezone": {"type": "string", "minLength": 1, "maxLength": 64},
        "incremental": {"type": "boolean"},
        "full_every": {"type": "integer", "minimum": 1, "maximum": 1000},
        "storage_driver": {"type": "string", "minLength": 1, "maxLength": 64},
        "swift_container": NAME,
        "retention": RETENTION,
        "verify": {"type": "boolean"},
        "drill_cron": {"oneOf": [CRON, {"type": "null"}]},
        "copy_to": {"oneOf": [COPY_TARGET, {"type": "null"}]},
        # Same keys as retention, applied to the copies in the copy_to store.
        "copy_retention": {**RETENTION, "type": ["object", "null"]},
    },
}
SCHEDULE_CREATE: dict[str, Any] = request_body("backup_schedule", SCHEDULE_BODY)

NULLABLE_TIMESTAMP = {"oneOf": [TIMESTAMP, {"type": "null"}]}
SCHEDULE = _object(
    {
        "id": STRING,
        "project_id": STRING,
        "instance_id": STRING,
        "name": STRING,
        "cron": STRING,
        "timezone": STRING,
        "incremental": {"type": "boolean"},
        "full_every": {"type": "integer"},
        "retention": {"type": "object"},
        "verify": {"type": "boolean"},
        "next_run_at": TIMESTAMP,
        "last_run_at": NULLABLE_TIMESTAMP,
        "last_backup_id": NULLABLE_STRING,
        "last_status": {"enum": [None, "STARTED", "COMPLETED", "FAILED", "SKIPPED"]},
        "last_error": NULLABLE_STRING,
    },
    {
        "storage_driver": NULLABLE_STRING,
        "swift_container": NULLABLE_STRING,
        "drill_cron": NULLABLE_STRING,
        "next_drill_at": NULLABLE_TIMESTAMP,
        "last_drill_at": NULLABLE_TIMESTAMP,
        "last_drill_backup_id": NULLABLE_STRING,
        "last_drill_error": NULLABLE_STRING,
        "copy_to": {"type": ["object", "null"]},
        "copy_retention": {"type": ["object", "null"]},
        "created": TIMESTAMP,
        "updated": TIMESTAMP,
    },
)
SCHEDULE_SINGLE = _single("backup_schedule", SCHEDULE)
SCHEDULE_LIST = _many("backup_schedules", SCHEDULE)

DECISION = _object(
    {"id": STRING}, {"reason": STRING, "reasons": {"type": "array", "items": STRING}}
)
PRUNE = _single(
    "prune",
    _object(
        {
            "delete": {"type": "array", "items": DECISION},
            "keep": {"type": "array", "items": DECISION},
        },
        {"dry_run": {"type": "boolean"}},
    ),
)
