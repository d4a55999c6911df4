"""What the API asks the services to do, typed: built from the schema-validated Trove body
in ``api/commands.py``, so no service reads the wire's field names or its 0/1 flags."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from strongroom.engines.base import InstanceRequest
from strongroom.services.instance_requests import instance_request


@dataclass(frozen=True, kw_only=True)
class RestoreFrom:
    """``restore_from``: register a backup another service (or region) wrote."""

    remote_location: str
    local_datastore_version_id: str
    size: float


@dataclass(frozen=True, kw_only=True)
class CreateBackup:
    name: str
    description: str | None = None
    instance_id: str | None = None
    parent_id: str | None = None
    incremental: bool = False
    swift_container: str | None = None
    storage_driver: object = None  # a store's name; anything else is refused by name
    restore_from: RestoreFrom | None = None


@dataclass(frozen=True, kw_only=True)
class CreateInstance:
    name: str
    datastore_type: str | None = None
    datastore_version: str | None = None
    flavor_ref: str | None = None
    volume_size: int | None = None
    backup_ref: str | None = None  # restorePoint.backupRef
    instance_ref: str | None = None  # restorePoint.instanceRef (with restore_time)
    restore_time: str | None = None  # restorePoint.restoreTime, as sent (ISO 8601)
    # Trove's own shapes, as the create-instance job's sealed payload keeps them.
    databases: tuple[Mapping[str, Any], ...] = ()
    users: tuple[Mapping[str, Any], ...] = field(default=(), repr=False)  # passwords
    external: Mapping[str, Any] | None = field(default=None, repr=False)  # may hold one
    host: str | None = None  # extension: the worker host to place it on (admins)

    def restore_point(self) -> dict[str, str]:
        """The ``restorePoint`` as sent, without its absent keys."""
        point = {
            "backupRef": self.backup_ref,
            "instanceRef": self.instance_ref,
            "restoreTime": self.restore_time,
        }
        return {key: value for key, value in point.items() if value is not None}

    def engine_request(self) -> InstanceRequest:
        return instance_request(self.name, self.job_payload())

    def job_payload(self) -> dict[str, Any]:
        return {
            "databases": [dict(d) for d in self.databases],
            "users": [dict(u) for u in self.users],
        }
