"""Request bodies as Trove's JSON Schemas (Draft 4), and Trove's validation messages.

jsonschema, not Pydantic, validates these bodies: clients and tests read Trove's exact
messages (contract §1.5.4), which are jsonschema's own."""

from __future__ import annotations

from typing import Any

from jsonschema import Draft4Validator

from strongroom.domain.errors import ValidationError

UUID = {
    "type": "string",
    "minLength": 1,
    "maxLength": 64,
    "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}"
    "-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$",
}
NON_EMPTY_STRING = {
    "type": "string",
    "minLength": 1,
    "maxLength": 255,
    "pattern": "^.*[0-9a-zA-Z]+.*$",
}
BOOLEAN_STRING = {"type": "integer", "minimum": 0, "maximum": 1}

BACKUP_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["backup"],
    "properties": {
        "backup": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": NON_EMPTY_STRING,
                "description": NON_EMPTY_STRING,
                "instance": UUID,
                "parent_id": UUID,
                "incremental": BOOLEAN_STRING,
                "swift_container": NON_EMPTY_STRING,
                "storage_driver": {},
                "restore_from": {
                    "type": "object",
                    "required": ["remote_location", "local_datastore_version_id", "size"],
                    "properties": {
                        "remote_location": NON_EMPTY_STRING,
                        "local_datastore_version_id": UUID,
                        "size": {"type": "number"},
                    },
                },
            },
        }
    },
}

STRATEGY_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["backup_strategy"],
    "properties": {
        "backup_strategy": {
            "type": "object",
            "additionalProperties": False,
            "required": ["swift_container"],
            "properties": {"instance_id": UUID, "swift_container": NON_EMPTY_STRING},
        }
    },
}

VOLUME_SIZE = {
    "oneOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": "^[1-9][0-9]*$"},
    ]
}

INSTANCE_CREATE: dict[str, Any] = {
    "type": "object",
    "required": ["instance"],
    "properties": {
        "instance": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": NON_EMPTY_STRING,
                "flavorRef": {"oneOf": [NON_EMPTY_STRING, {"type": "integer"}]},
                "volume": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {"size": VOLUME_SIZE, "type": {"type": ["string", "null"]}},
                },
                "datastore": {
                    "type": "object",
                    "properties": {
                        "type": NON_EMPTY_STRING,
                        "version": NON_EMPTY_STRING,
                        "version_number": NON_EMPTY_STRING,
                    },
                },
                "restorePoint": {
                    "type": "object",
                    "required": ["backupRef"],
                    "properties": {"backupRef": UUID},
                },
                "databases": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {"name": NON_EMPTY_STRING},
                    },
                },
                "users": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "password"],
                        "properties": {
                            "name": NON_EMPTY_STRING,
                            "password": NON_EMPTY_STRING,
                            "host": NON_EMPTY_STRING,
                            "databases": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "required": ["name"],
                                    "properties": {"name": NON_EMPTY_STRING},
                                },
                            },
                        },
                    },
                },
                "nics": {
                    "type": "array",
                    "maxItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "net-id": UUID,
                            "network_id": UUID,
                            "subnet_id": UUID,
                            "ip_address": {"type": "string", "format": "ipv4"},
                        },
                    },
                },
                "replica_of": UUID,
                "replica_count": {"type": "integer", "minimum": 1, "maximum": 3},
                "external": {"type": "object"},
            },
        }
    },
}


def _path(parts: list[Any]) -> str:
    if not parts:
        return ""
    return str(parts[0]) + "".join(f"[{p!r}]" for p in parts[1:])


def validate(schema: dict[str, Any], body: Any) -> None:
    errors = sorted(
        Draft4Validator(schema).iter_errors(body), key=lambda err: [str(p) for p in err.path]
    )
    if not errors:
        return
    entries = []
    for err in errors:
        path = _path(list(err.path))
        entries.append(f"{path} {err.message}" if path else err.message)
    raise ValidationError("Validation error: " + "; ".join(entries))
