"""Response bodies as JSON Schemas, for /openapi.json only (the views build the bodies).

They require what Trove clients read and allow additional keys, as
clients ignore keys they do not know."""

from __future__ import annotations

from typing import Any

STRING = {"type": "string"}
NULLABLE_STRING = {"type": ["string", "null"]}
TIMESTAMP = {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$"}
LINK = {
    "type": "object",
    "required": ["href", "rel"],
    "properties": {"href": STRING, "rel": STRING},
}
LINKS = {"type": "array", "items": LINK}


def _object(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def _single(key: str, item: dict[str, Any]) -> dict[str, Any]:
    return _object({key: item})


def _many(key: str, item: dict[str, Any], **optional: dict[str, Any]) -> dict[str, Any]:
    return _object({key: {"type": "array", "items": item}}, optional)


COPY = _object(
    {
        "storage_driver": STRING,
        "location_ref": NULLABLE_STRING,
        "state": {"enum": ["COPYING", "COMPLETED", "FAILED"]},
        "verified_at": {"oneOf": [TIMESTAMP, {"type": "null"}]},
    },
    {"error": NULLABLE_STRING},
)
BACKUP = _object(
    {
        "id": STRING,
        "name": STRING,
        "description": NULLABLE_STRING,
        "locationRef": NULLABLE_STRING,
        "instance_id": NULLABLE_STRING,
        "created": TIMESTAMP,
        "updated": TIMESTAMP,
        "size": {"type": ["number", "null"]},
        "status": {
            "enum": [
                "NEW",
                "BUILDING",
                "SAVING",
                "COMPLETED",
                "FAILED",
                "DELETE_FAILED",
                "RESTORED",
            ]
        },
        "parent_id": NULLABLE_STRING,
        "project_id": STRING,
    },
    {
        "datastore": _object({"type": STRING, "version": STRING, "version_id": STRING}),
        "storage_driver": STRING,
        "stored_bytes": {"type": "integer"},
        "fail_reason": STRING,
        "progress": {"type": "object"},
        "schedule_id": STRING,
        "verify_status": {"enum": ["RUNNING", "OK", "CORRUPT", "MISSING", "ERROR"]},
        "verified_at": TIMESTAMP,
        "verify_error": NULLABLE_STRING,
        "drill_status": {"enum": ["RUNNING", "OK", "FAILED"]},
        "drilled_at": TIMESTAMP,
        "drill_error": NULLABLE_STRING,
        "drill_report": {"type": ["object", "null"]},
        "copies": {"type": "array", "items": COPY},
    },
)
BACKUP_SINGLE = _single("backup", BACKUP)
BACKUP_LIST = _many("backups", BACKUP, links=LINKS)

STRATEGY = _object(
    {"project_id": STRING, "instance_id": STRING, "backend": STRING, "swift_container": STRING}
)
STRATEGY_SINGLE = _single("backup_strategy", STRATEGY)
STRATEGY_LIST = _many("backup_strategies", STRATEGY)

INSTANCE = _object(
    {
        "id": STRING,
        "name": STRING,
        "status": STRING,
        "links": LINKS,
        "flavor": _object({"id": STRING}, {"links": LINKS}),
        "datastore": _object({"type": NULLABLE_STRING, "version": NULLABLE_STRING}),
    },
    {
        "created": TIMESTAMP,
        "updated": TIMESTAMP,
        "volume": _object({"size": {"type": "integer"}}),
        "last_restorable_backup_id": NULLABLE_STRING,
        "last_verified_restorable_at": {"oneOf": [TIMESTAMP, {"type": "null"}]},
    },
)
INSTANCE_SINGLE = _single("instance", INSTANCE)
INSTANCE_LIST = _many("instances", INSTANCE)

FLAVOR = _object({"id": STRING, "name": STRING, "ram": {"type": "integer"}, "links": LINKS})
FLAVOR_SINGLE = _single("flavor", FLAVOR)
FLAVOR_LIST = _many("flavors", FLAVOR)

VERSION = _object({"id": STRING, "name": STRING, "links": LINKS}, {"datastore": STRING})
VERSION_SINGLE = _single("version", VERSION)
VERSION_LIST = _many("versions", VERSION)
DATASTORE = _object(
    {"id": STRING, "name": STRING, "links": LINKS, "versions": {"type": "array", "items": VERSION}},
    {"default_version": STRING},
)
DATASTORE_SINGLE = _single("datastore", DATASTORE)
DATASTORE_LIST = _many("datastores", DATASTORE)

API_VERSION = _object(
    {"id": {"const": "v1.0"}, "status": STRING, "updated": STRING, "links": LINKS}
)
API_VERSION_SINGLE = _single("version", API_VERSION)
API_VERSION_LIST = _many("versions", API_VERSION)
