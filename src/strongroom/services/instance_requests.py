"""Trove's ``databases`` and ``users`` of a create-instance request, as the engines take them."""

from __future__ import annotations

from typing import Any

from strongroom.engines.base import DatabaseSpec, InstanceRequest, UserSpec


def instance_request(name: str, payload: dict[str, Any]) -> InstanceRequest:
    databases = tuple(
        DatabaseSpec(d["name"]) for d in payload.get("databases", []) if isinstance(d, dict)
    )
    users = tuple(
        UserSpec(
            name=u["name"],
            password=u.get("password", ""),
            databases=tuple(d["name"] for d in u.get("databases", []) if isinstance(d, dict)),
            host=u.get("host", "%"),
        )
        for u in payload.get("users", [])
        if isinstance(u, dict)
    )
    return InstanceRequest(name=name, databases=databases, users=users)
