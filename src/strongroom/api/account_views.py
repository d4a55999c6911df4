"""Trove's user and database views, and the ``name@host`` of a user in a URL."""

from __future__ import annotations

from typing import Any

from strongroom.services.accounts import AccountInfo, UserSpec


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
