"""Archived log batches in the store, in the backups' format: chunks, zstd, AES-256-GCM
with the batch id in the associated data, and a signed manifest per batch that also names
the project and instance. Keys come from ids the service makes (object_layout)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from strongroom.domain.pitr import WalBatch
from strongroom.engines.base import Connection, PointInTimeEngine, RestoreInput
from strongroom.pipeline.errors import IntegrityError
from strongroom.pipeline.reader import open_manifest
from strongroom.pipeline.writer import BackupWriter
from strongroom.services import object_layout
from strongroom.services.transfer import ChainLink, Transfer


@dataclass(frozen=True)
class StoredBatch:
    """What the catalog keeps of one archived batch."""

    batch_id: str
    project_id: str
    instance_id: str
    store_name: str
    container: str
    start: int
    stop: int
    archived_through: datetime

    @property
    def manifest_key(self) -> str:
        return object_layout.archive_manifest_key(self.container, self.instance_id, self.batch_id)


class WalArchive:
    """Writes an instance's next batch to its store and reads batches back for a restore."""

    def __init__(self, transfer: Transfer) -> None:
        self.transfer = transfer

    def store_batch(
        self,
        *,
        engine: PointInTimeEngine,
        connection: Connection,
        project_id: str,
        instance_id: str,
        datastore: str,
        store_name: str,
        container: str,
        start: int,
    ) -> StoredBatch:
        """Archive from ``start`` (everything before it is stored) to now. The manifest is
        written last: a batch without one was never finished and is not in the archive."""
        batch_id = str(uuid.uuid4())
        manifest_key = object_layout.archive_manifest_key(container, instance_id, batch_id)
        store = self.transfer.stores.backend(store_name)
        rules = self.transfer.rules

        def emit(index: int, blob: bytes) -> None:
            store.put(object_layout.chunk_key_beside(manifest_key, index), blob)

        writer = BackupWriter(
            backup_id=batch_id,
            master_key=self.transfer.stores.master_key,
            emit=emit,
            chunk_size=rules.chunk_size,
            level=rules.compression_level,
            workers=rules.transfer_threads,
            max_in_flight=rules.transfer_threads * 2,
        )
        try:
            archived = engine.archive_batch(connection, writer, start=start)
            writer.close()
            manifest = writer.manifest(
                project_id=project_id,
                instance_id=instance_id,
                datastore=datastore,
                datastore_version=None,
                engine=archived.metadata,
                parent_id=None,
                parent_manifest_sha256=None,
                created=datetime.now(UTC).replace(tzinfo=None).isoformat(),
            )
            store.put(manifest_key, manifest.to_bytes())
        except BaseException:
            writer.abort()
            for key in store.list(manifest_key.rsplit("/", 1)[0] + "/"):
                store.delete(key)
            raise
        return StoredBatch(
            batch_id,
            project_id,
            instance_id,
            store_name,
            container,
            archived.start,
            archived.stop,
            archived.archived_through,
        )

    def remove(self, store_name: str, container: str, instance_id: str, batch_id: str) -> None:
        """Delete a batch's objects (none is fine)."""
        store = self.transfer.stores.backend(store_name)
        manifest = object_layout.archive_manifest_key(container, instance_id, batch_id)
        for key in store.list(manifest.rsplit("/", 1)[0] + "/"):
            store.delete(key)

    def stored_batch_ids(self, store_name: str, container: str, instance_id: str) -> set[str]:
        """The batch ids that have objects in the store (finished or not)."""
        store = self.transfer.stores.backend(store_name)
        prefix = object_layout.archive_prefix(container, instance_id)
        ids = set()
        for key in store.list(prefix):
            batch_id = key[len(prefix) :].split("/", 1)[0]
            if object_layout.is_service_id(batch_id):
                ids.add(batch_id)
        return ids

    def open_batches(self, batches: Sequence[StoredBatch]) -> list[RestoreInput]:
        """Each batch's verified manifest, checked to be this project's and instance's;
        its chunks are fetched and verified as the engine reads them."""
        links: list[ChainLink] = []
        for batch in batches:
            store = self.transfer.stores.backend(batch.store_name)
            raw = store.get(batch.manifest_key)
            opened = open_manifest(
                raw, self.transfer.stores.master_key, expected_backup_id=batch.batch_id
            )
            manifest = opened.manifest
            if (manifest.project_id, manifest.instance_id) != (batch.project_id, batch.instance_id):
                raise IntegrityError(
                    f"archived batch {batch.batch_id} belongs to another project or instance"
                )
            links.append(
                ChainLink(store, batch.manifest_key, opened, hashlib.sha256(raw).hexdigest())
            )
        return self.transfer.restore_inputs(links)


def batches_for(
    batches: Sequence[WalBatch], backup_started: datetime, when: datetime
) -> list[StoredBatch]:
    """The batches a restore replays: from the one the backup's end falls in (those
    archived wholly before the backup started are not needed) to the first that covers
    ``when``, in the order they were stored (positions may start again lower after a
    MariaDB server's binary log was reset). The engine checks that they join the backup
    and each other."""
    chosen: list[StoredBatch] = []
    for b in sorted(batches, key=lambda b: (b.created, b.start)):
        # Stored before the backup began, it holds only log from before it. (Not its
        # coverage time: a batch stopped short keeps the one before it, older than the log
        # it holds, which may be where the backup ends.)
        if b.created < backup_started:
            continue
        if chosen and b.start != chosen[-1].stop:
            if chosen[-1].archived_through >= when:
                break
            chosen = []  # a gap before the time asked for: only a later run can reach it
        chosen.append(
            StoredBatch(
                b.id,
                b.project_id,
                b.instance_id,
                b.store_name,
                b.container,
                b.start,
                b.stop,
                b.archived_through,
            )
        )
        if b.archived_through >= when:
            break
    return chosen
