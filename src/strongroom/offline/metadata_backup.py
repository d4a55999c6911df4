"""Back up the service's own metadata database into a store, encrypted like any backup.

The SQLite metadata file is copied with SQLite's online backup API into a private
temporary directory in data_dir (a consistent copy while the service runs), then streamed
through the SQLite engine and the same pipeline as a tenant's backup. The offline
``strongroom restore`` therefore rebuilds it into a file with the master key alone.
"""

from __future__ import annotations

import sqlite3
import tempfile
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from strongroom.domain.model import SERVICE_PROJECT
from strongroom.engines.base import Connection
from strongroom.engines.sqlite.engine import SqliteEngine
from strongroom.engines.sqlite.files import FileLocation, open_database
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.writer import BackupWriter
from strongroom.services import object_layout
from strongroom.storage.base import StorageBackend

# The manifest's project: no tenant has it, so no tenant's listing shows these backups.
METADATA_PROJECT = SERVICE_PROJECT


class MetadataBackupError(Exception):
    """The metadata database cannot be backed up this way (the message says why)."""


@dataclass(frozen=True)
class MetadataBackup:
    backup_id: str
    location: str
    plain_bytes: int
    stored_bytes: int


def backup_metadata(
    database: Path,
    *,
    data_dir: Path,
    store: StorageBackend,
    container: str,
    master_key: MasterKey,
) -> MetadataBackup:
    if not database.is_file():
        raise MetadataBackupError(f"no metadata database at {database}")
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".metadata-backup-") as tmp:
        copy = Path(tmp) / "strongroom.db"
        _online_copy(database, copy)
        with open_database(FileLocation(str(copy.parent), str(copy)), None) as files:
            dev, ino = files.identity
        connection = {"path": str(copy), "root": str(copy.parent), "dev": dev, "ino": ino}
        return _write(connection, store=store, container=container, master_key=master_key)


def _online_copy(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
    try:
        dst = sqlite3.connect(target)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _write(
    connection: Connection, *, store: StorageBackend, container: str, master_key: MasterKey
) -> MetadataBackup:
    backup_id = str(uuid.uuid4())

    def emit(index: int, blob: bytes) -> None:
        store.put(object_layout.chunk_key(container, backup_id, index), blob)

    writer = BackupWriter(backup_id=backup_id, master_key=master_key, emit=emit)
    try:
        result = SqliteEngine().backup(connection, writer, parent=None)
        writer.close()
        manifest = writer.manifest(
            project_id=METADATA_PROJECT,
            instance_id=None,
            datastore="sqlite",
            datastore_version=sqlite3.sqlite_version,
            engine=result.metadata,
            parent_id=None,
            parent_manifest_sha256=None,
            created=datetime.now(UTC).isoformat(),
        )
        key = object_layout.manifest_key(container, backup_id)
        store.put(key, manifest.to_bytes())
    except BaseException:
        writer.abort()
        for name in store.list(object_layout.backup_prefix(container, backup_id)):
            store.delete(name)
        raise
    return MetadataBackup(backup_id, store.url_for(key), writer.plain_bytes, writer.stored_bytes)
