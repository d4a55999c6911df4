"""Trove's user and database views, and the ``name@host`` of a user in a URL."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from strongroom.api.views import next_link
from strongroom.domain.errors import BadRequestError
from strongroom.services.accounts import AccountInfo, DatabaseSpec, UserSpec


def user_view(user: AccountInfo) -> dict[str, Any]:
    return {
        "name": user.name,
        "host": user.host,
        "databases": [{"name": db} for db in user.databases],
    }


def database_view(name: str) -> dict[str, Any]:
    return {"name": name}


def user_and_host(user_id: str) -> tuple[str, str]:
    """Trove's reading of ``name@host`` (troveclient quotes it; the path arrives decoded):
    the host is after the last ``@``; no host, or an empty one, is ``%``."""
    if "@" not in user_id or user_id.endswith("@"):
        return user_id, "%"
    name, _, host = user_id.rpartition("@")
    return name, host


def database_specs(items: list[dict[str, Any]]) -> list[DatabaseSpec]:
    return [
        DatabaseSpec(
            name=str(d["name"]),
            character_set=str(d["character_set"]) if d.get("character_set") else None,
            collate=str(d["collate"]) if d.get("collate") else None,
        )
        for d in items
    ]


def user_specs(items: list[dict[str, Any]]) -> list[UserSpec]:
    return [
        UserSpec(
            name=str(u["name"]),
            password=str(u["password"]),
            host=str(u.get("host") or "%"),
            databases=tuple(str(d["name"]) for d in u.get("databases", [])),
        )
        for u in items
    ]


PAGE_SIZE = 20  # Trove's users_page_size and databases_page_size


def page(
    request: Request, key: str, items: list[dict[str, Any]], offset: int, limit: int | None
) -> dict[str, Any]:
    """One page of ``items`` sorted as the server listed them, with Trove's ``next`` link
    (its marker is the offset of the next page, as for backups)."""
    if limit is not None and limit <= 0:
        raise BadRequestError("limit must be a positive integer.")
    size = min(limit or PAGE_SIZE, PAGE_SIZE)
    body: dict[str, Any] = {key: items[offset : offset + size]}
    if offset + size < len(items):
        body["links"] = next_link(request, offset, size)
    return body
