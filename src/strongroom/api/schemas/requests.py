"""Request bodies as Trove's JSON Schemas (Draft 4), and Trove's validation messages.

jsonschema, not Pydantic, validates these bodies: clients and tests read Trove's exact
messages, which are jsonschema's own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
from jsonschema import Draft4Validator, validators

from strongroom.domain.errors import BadRequestError, ValidationError
from strongroom.domain.schedules import Duration

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
# Names, descriptions and containers are shown, logged and stored as text: no control
# characters (Unicode Cc: C0, DEL, C1).
NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"
NAME = {**NON_EMPTY_STRING, "allOf": [{"pattern": NO_CONTROL}]}
# Trove's own rule for a database user's host (e.g. "%", "%.example.com", "10.0.0.%").
USER_HOST = {"type": "string", "maxLength": 255, "pattern": r"^[%]?[\w(-).]*[%]?$"}
BOOLEAN_STRING = {"type": "integer", "minimum": 0, "maximum": 1}


def request_body(key: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Trove's request body: one required member ``key`` that ``schema`` describes."""
    return {"type": "object", "required": [key], "properties": {key: schema}}


BACKUP_CREATE: dict[str, Any] = request_body(
    "backup",
    {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": NAME,
            "description": NAME,
            "instance": UUID,
            "parent_id": UUID,
            "incremental": BOOLEAN_STRING,
            "swift_container": NAME,
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
    },
)

COPY_TARGET: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["storage_driver"],
    "properties": {
        "storage_driver": {"type": "string", "minLength": 1, "maxLength": 64},
        "swift_container": NAME,
    },
}
COPY_CREATE: dict[str, Any] = request_body("copy", COPY_TARGET)

STRATEGY_CREATE: dict[str, Any] = request_body(
    "backup_strategy",
    {
        "type": "object",
        "additionalProperties": False,
        "required": ["swift_container"],
        "properties": {"instance_id": UUID, "swift_container": NAME},
    },
)

VOLUME_SIZE = {
    "oneOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": "^[1-9][0-9]*$"},
    ]
}

INSTANCE_CREATE: dict[str, Any] = request_body(
    "instance",
    {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": NAME,
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
                "properties": {
                    "backupRef": UUID,
                    "instanceRef": UUID,
                    "restoreTime": {"type": "string", "maxLength": 64},
                },
                # A backup; or, to a time, a backup or the instance it came from.
                "anyOf": [
                    {"required": ["backupRef"], "not": {"required": ["instanceRef"]}},
                    {
                        "required": ["instanceRef", "restoreTime"],
                        "not": {"required": ["backupRef"]},
                    },
                ],
            },
            "databases": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {"name": NAME},
                },
            },
            "users": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "password"],
                    "properties": {
                        "name": NAME,
                        "password": NON_EMPTY_STRING,
                        "host": USER_HOST,
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
    },
)


def _path(parts: list[Any]) -> str:
    if not parts:
        return ""
    return str(parts[0]) + "".join(f"[{p!r}]" for p in parts[1:])


def _max_years(
    validator: Any, limit: int, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """``x-max-years``: a duration ("7d", "1y6m") at most ``limit`` years long. What is no
    duration is left to the service, whose message says what one is."""
    try:
        duration = Duration.parse(instance)
    except BadRequestError:
        return
    if duration.in_years > limit:
        yield jsonschema.ValidationError(f"{instance!r} is longer than {limit} years")


# Draft 4 and the keywords it lacks (an ``x-`` extension, as OpenAPI lets documents carry).
Validator = validators.extend(Draft4Validator, {"x-max-years": _max_years})


def validate(schema: dict[str, Any], body: Any) -> None:
    errors = sorted(Validator(schema).iter_errors(body), key=lambda err: [str(p) for p in err.path])
    if not errors:
        return
    entries = []
    for err in errors:
        path = _path(list(err.path))
        message = err.message
        if err.validator == "pattern" and err.validator_value == NO_CONTROL:
            message = "contains a control character"
        entries.append(f"{path} {message}" if path else message)
    raise ValidationError("Validation error: " + "; ".join(entries))
