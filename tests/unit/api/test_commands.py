"""Trove's bodies become the services' typed commands: the wire's names, 0/1 flags and
string sizes stay in the API."""

from __future__ import annotations

from strongroom.api import commands
from strongroom.api.schemas import requests as schemas
from strongroom.services.commands import CreateBackup, CreateInstance, RestoreFrom

INSTANCE = "0f9e2a52-8a43-4c7e-9d39-6f1b1e6d2a10"
PARENT = "5d0a8a8e-3c1c-4b7f-8f4c-1c2d3e4f5a6b"


def _backup(**fields: object) -> CreateBackup:
    body = {"backup": {"name": "b", **fields}}
    schemas.validate(schemas.BACKUP_CREATE, body)
    return commands.create_backup(body["backup"])


def test_a_backup_body_becomes_create_backup() -> None:
    assert _backup(instance=INSTANCE) == CreateBackup(name="b", instance_id=INSTANCE)
    assert _backup(instance=INSTANCE, incremental=1).incremental is True
    assert _backup(instance=INSTANCE, incremental=0).incremental is False
    full = _backup(
        instance=INSTANCE,
        description="d",
        parent_id=PARENT,
        swift_container="c",
        storage_driver="s3",
    )
    assert (full.description, full.parent_id, full.swift_container, full.storage_driver) == (
        "d",
        PARENT,
        "c",
        "s3",
    )


def test_restore_from_is_typed() -> None:
    command = _backup(
        restore_from={
            "remote_location": "http://swift/v1/AUTH_x/c/id/manifest.json",
            "local_datastore_version_id": INSTANCE,
            "size": 2,
        }
    )
    assert command.restore_from == RestoreFrom(
        remote_location="http://swift/v1/AUTH_x/c/id/manifest.json",
        local_datastore_version_id=INSTANCE,
        size=2.0,
    )


def _instance(**fields: object) -> CreateInstance:
    body = {"instance": {"name": "i", **fields}}
    schemas.validate(schemas.INSTANCE_CREATE, body)
    return commands.create_instance(body["instance"])


def test_an_instance_body_becomes_create_instance() -> None:
    assert _instance() == CreateInstance(name="i")
    command = _instance(
        flavorRef=7,
        volume={"size": "5"},
        datastore={"type": "postgresql", "version": "16"},
        restorePoint={"backupRef": PARENT},
        databases=[{"name": "app"}],
        users=[{"name": "u", "password": "pw-secret-9", "databases": [{"name": "app"}]}],
    )
    assert (command.flavor_ref, command.volume_size) == ("7", 5)
    assert (command.datastore_type, command.datastore_version) == ("postgresql", "16")
    assert command.backup_ref == PARENT
    request = command.engine_request()
    assert [d.name for d in request.databases] == ["app"]
    assert [(u.name, u.databases) for u in request.users] == [("u", ("app",))]
    # What the create-instance job keeps sealed: Trove's own shapes, as before.
    assert command.job_payload() == {
        "databases": [{"name": "app"}],
        "users": [{"name": "u", "password": "pw-secret-9", "databases": [{"name": "app"}]}],
    }
    assert "pw-secret-9" not in repr(command)


def test_external_details_are_kept_out_of_repr() -> None:
    command = _instance(external={"host": "db", "user": "u", "password": "ext-secret-1"})
    assert command.external == {"host": "db", "user": "u", "password": "ext-secret-1"}
    assert "ext-secret-1" not in repr(command)
