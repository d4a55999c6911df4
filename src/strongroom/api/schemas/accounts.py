"""Bodies of Trove's user, database and root calls: requests (Trove's JSON Schemas, as
python-troveclient sends them) and responses."""

from __future__ import annotations

from typing import Any

from strongroom.api.schemas.requests import NAME, NON_EMPTY_STRING, USER_HOST, request_body

# A character set or collation name (utf8mb4, utf8mb4_unicode_ci, UTF8, C, en_US.UTF-8).
CHARSET_NAME = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[A-Za-z0-9_.@-]+$"}
DATABASE_REF = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": NAME},
}
DATABASE_REFS = {"type": "array", "minItems": 1, "items": DATABASE_REF}
USER_DEF = {
    "type": "object",
    "required": ["name", "password"],
    "properties": {
        "name": NAME,
        "password": NON_EMPTY_STRING,
        "host": USER_HOST,
        "databases": {"type": "array", "items": DATABASE_REF},
    },
}

USERS_CREATE: dict[str, Any] = request_body(
    "users", {"type": "array", "minItems": 1, "items": USER_DEF}
)
# Trove's update of one user's attributes (troveclient's update_attributes): a new name,
# host or password; at least one.
USER_UPDATE: dict[str, Any] = request_body(
    "user",
    {
        "type": "object",
        "minProperties": 1,
        "properties": {"name": NAME, "password": NON_EMPTY_STRING, "host": USER_HOST},
    },
)
USERS_UPDATE_ALL: dict[str, Any] = request_body(
    "users",
    {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["name", "password"],
            "properties": {"name": NAME, "password": NON_EMPTY_STRING, "host": USER_HOST},
        },
    },
)
USER_ACCESS_UPDATE: dict[str, Any] = request_body("databases", DATABASE_REFS)
DATABASES_CREATE: dict[str, Any] = request_body(
    "databases",
    {
        "type": "array",
        "minItems": 1,
        "items": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": NAME,
                "character_set": CHARSET_NAME,
                "collate": CHARSET_NAME,
            },
        },
    },
)

ROOT_ENABLE: dict[str, Any] = {
    "type": "object",
    "properties": {"password": NON_EMPTY_STRING},
}

_DATABASE = {"type": "object", "properties": {"name": {"type": "string"}}}
_USER = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "host": {"type": "string"},
        "databases": {"type": "array", "items": _DATABASE},
    },
}
USER_LIST = {"type": "object", "properties": {"users": {"type": "array", "items": _USER}}}
USER_SINGLE = {"type": "object", "properties": {"user": _USER}}
DATABASE_LIST = {
    "type": "object",
    "properties": {"databases": {"type": "array", "items": _DATABASE}},
}
ROOT_CREATED = {
    "type": "object",
    "properties": {
        "user": {
            "type": "object",
            "properties": {"name": {"type": "string"}, "password": {"type": "string"}},
        }
    },
}
ROOT_STATUS = {"type": "object", "properties": {"rootEnabled": {"type": "boolean"}}}
