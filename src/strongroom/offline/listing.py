"""The backups a container holds, read from their manifests (each verified with the master
key): what ``strongroom ls`` shows."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from strongroom.pipeline.errors import FormatError
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.reader import open_manifest
from strongroom.services import object_layout
from strongroom.storage.base import StorageBackend
from strongroom.storage.errors import StorageError


@dataclass(frozen=True)
class ListedBackup:
    id: str
    project: str | None = None
    instance: str | None = None
    datastore: str | None = None
    datastore_version: str | None = None
    created: str | None = None
    parent: str | None = None
    size: int | None = None  # plaintext bytes of this backup's stream
    stored: int | None = None  # bytes its objects take in the store
    location: str = ""
    problem: str | None = None  # why the manifest was not read, when it was not

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def list_backups(store: StorageBackend, container: str, key: MasterKey) -> list[ListedBackup]:
    """Every backup with a manifest in ``container``, oldest first; a manifest that does
    not verify is listed with its problem, never skipped silently."""
    found: list[ListedBackup] = []
    for name in store.list(f"{container}/"):
        parsed = object_layout.parse(name)
        if parsed is None or parsed.kind != object_layout.ObjectKind.MANIFEST:
            continue
        location = store.url_for(name)
        try:
            manifest = open_manifest(
                store.get(name), key, expected_backup_id=parsed.backup_id
            ).manifest
        except (FormatError, StorageError) as exc:
            found.append(ListedBackup(parsed.backup_id, location=location, problem=str(exc)))
            continue
        found.append(
            ListedBackup(
                id=manifest.backup_id,
                project=manifest.project_id,
                instance=manifest.instance_id,
                datastore=manifest.datastore,
                datastore_version=manifest.datastore_version,
                created=manifest.created,
                parent=manifest.parent_id,
                size=manifest.plain_bytes,
                stored=manifest.stored_bytes,
                location=location,
            )
        )
    found.sort(key=lambda b: (b.created or "", b.id))
    return found
