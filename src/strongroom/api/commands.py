"""Trove's request bodies, once their JSON Schema passed, as the services' typed commands."""

from __future__ import annotations

from typing import Any

from strongroom.services.commands import CreateBackup, CreateInstance, RestoreFrom


def create_backup(body: dict[str, Any]) -> CreateBackup:
    """``body`` is the ``backup`` object of a valid ``POST /backups``."""
    source = body.get("restore_from")
    return CreateBackup(
        name=body["name"],
        description=body.get("description"),
        instance_id=body.get("instance"),
        parent_id=body.get("parent_id"),
        incremental=body.get("incremental") == 1,
        swift_container=body.get("swift_container"),
        storage_driver=body.get("storage_driver"),
        restore_from=None
        if source is None
        else RestoreFrom(
            remote_location=source["remote_location"],
            local_datastore_version_id=source["local_datastore_version_id"],
            size=float(source["size"]),
        ),
    )


def create_instance(body: dict[str, Any]) -> CreateInstance:
    """``body`` is the ``instance`` object of a valid ``POST /instances``."""
    datastore = body.get("datastore") or {}
    volume = body.get("volume")
    flavor_ref = body.get("flavorRef")
    host = body.get("host")
    restore_point = body.get("restorePoint") or {}
    return CreateInstance(
        name=body["name"],
        datastore_type=datastore.get("type"),
        datastore_version=datastore.get("version"),
        flavor_ref=None if flavor_ref is None else str(flavor_ref),
        volume_size=int(volume["size"]) if volume else None,
        backup_ref=restore_point.get("backupRef"),
        instance_ref=restore_point.get("instanceRef"),
        restore_time=restore_point.get("restoreTime"),
        databases=tuple(body.get("databases") or ()),
        users=tuple(body.get("users") or ()),
        external=body.get("external"),
        host=None if host is None else str(host),
    )
