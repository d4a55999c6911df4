"""Where a backup's objects live in a store. Object keys are made and read here and
nowhere else.

A backup's objects are ``<container>/<backup uuid>/manifest.json`` and
``<container>/<backup uuid>/chunk-NNNNNNNN``; a store that writes through temporary objects
may leave ``<container>/<backup uuid>/<TEMP_PREFIX>…`` behind. An instance's archived log
(point-in-time restore) is ``<container>/<instance uuid>/wal/<batch uuid>/`` with the same
two kinds of object (``parse_archive`` reads those back; ``parse`` never takes them for a
backup's). Any other key is not the service's, even in a container its backups
use."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from enum import StrEnum

from strongroom.storage.base import TEMP_PREFIX

MANIFEST_NAME = "manifest.json"
_CHUNK_NAME = re.compile(r"chunk-[0-9]{8,}")


class ObjectKind(StrEnum):
    MANIFEST = "manifest"
    CHUNK = "chunk"
    TEMPORARY = "temporary"


@dataclass(frozen=True)
class BackupObject:
    """A key of the service's layout, read back."""

    container: str
    backup_id: str
    kind: ObjectKind


def backup_prefix(container: str, backup_id: str) -> str:
    return f"{container}/{backup_id}/"


def manifest_key(container: str, backup_id: str) -> str:
    return f"{container}/{backup_id}/{MANIFEST_NAME}"


def chunk_key(container: str, backup_id: str, index: int) -> str:
    return f"{container}/{backup_id}/chunk-{index:08d}"


def archive_prefix(container: str, instance_id: str) -> str:
    """An instance's archived log: ``<container>/<instance uuid>/wal/``. Both ids are the
    service's own UUIDs; anything else is refused, so no request can steer the key."""
    if not _is_backup_id(instance_id):
        raise ValueError("an archive key needs an instance id the service made")
    return f"{container}/{instance_id}/wal/"


def archive_manifest_key(container: str, instance_id: str, batch_id: str) -> str:
    """A batch's manifest; its chunks sit beside it (``chunk_key_beside``)."""
    if not _is_backup_id(batch_id):
        raise ValueError("an archive key needs a batch id the service made")
    return f"{archive_prefix(container, instance_id)}{batch_id}/{MANIFEST_NAME}"


def container_of(key: str) -> str:
    """The container of an object key."""
    return key.split("/", 1)[0]


def sibling_manifest_key(manifest: str, backup_id: str) -> str:
    """The manifest of ``backup_id`` in the same container as the ``manifest`` key."""
    return manifest_key(container_of(manifest), backup_id)


def chunk_key_beside(manifest: str, index: int) -> str:
    """The key of chunk ``index`` stored next to the ``manifest`` key."""
    directory = manifest.rsplit("/", 1)[0]
    return f"{directory}/chunk-{index:08d}"


def parse(key: str) -> BackupObject | None:
    """What ``key`` is in the service's layout, or ``None`` when it is not the service's."""
    parts = key.split("/")
    if len(parts) != 3:
        return None
    container, backup_id, name = parts
    if not _is_backup_id(backup_id):
        return None
    if name == MANIFEST_NAME:
        kind = ObjectKind.MANIFEST
    elif _CHUNK_NAME.fullmatch(name):
        kind = ObjectKind.CHUNK
    elif name.startswith(TEMP_PREFIX):
        kind = ObjectKind.TEMPORARY
    else:
        return None
    return BackupObject(container, backup_id, kind)


@dataclass(frozen=True)
class ArchiveObject:
    """A key of an instance's archived log, read back: ``batch_id`` is the id its batch
    manifest is sealed with (the manifest's ``backup_id``)."""

    container: str
    instance_id: str
    batch_id: str
    kind: ObjectKind


def parse_archive(key: str) -> ArchiveObject | None:
    """What ``key`` is in an instance's archive (``<container>/<instance uuid>/wal/<batch
    uuid>/<name>``), or ``None`` when it is not an archive object."""
    parts = key.split("/")
    if len(parts) != 5 or parts[2] != "wal":
        return None
    container, instance_id, _wal, batch_id, name = parts
    if not (_is_backup_id(instance_id) and _is_backup_id(batch_id)):
        return None
    inner = parse(f"{container}/{batch_id}/{name}")
    if inner is None:
        return None
    return ArchiveObject(container, instance_id, batch_id, inner.kind)


def is_service_id(text: str) -> bool:
    return _is_backup_id(text)


def _is_backup_id(text: str) -> bool:
    """Backup ids are UUIDs in their canonical lowercase form (as the service makes them)."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
