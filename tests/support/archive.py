"""The point-in-time archive in a local store, for engine tests of every datastore: a
``WalArchive`` over a fresh local store, one batch stored as the archiver stores it, and a
flipped byte in a stored chunk."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from strongroom.engines.base import Connection, PointInTimeEngine
from strongroom.pipeline.keys import MasterKey
from strongroom.services.rules import ServiceRules
from strongroom.services.stores import StoreCatalog
from strongroom.services.transfer import Transfer
from strongroom.services.wal_archive import StoredBatch, WalArchive
from strongroom.storage.local import LocalBackend
from strongroom.storage.registry import StoreSet

CONTAINER = "database-backups"


@contextmanager
def local_archive(root: Path) -> Iterator[WalArchive]:
    stores = StoreSet({"local": LocalBackend(root)}, "local")
    try:
        yield WalArchive(Transfer(StoreCatalog(stores, MasterKey.generate()), ServiceRules()))
    finally:
        stores.close()


def store_batch(
    archive: WalArchive,
    engine: PointInTimeEngine,
    connection: Connection | dict[str, Any],
    *,
    instance_id: str,
    datastore: str,
    start: int,
    project_id: str = "p1",
) -> StoredBatch:
    return archive.store_batch(
        engine=engine,
        connection=connection,
        project_id=project_id,
        instance_id=instance_id,
        datastore=datastore,
        store_name="local",
        container=CONTAINER,
        start=start,
    )


def flip_a_byte(root: Path, batch: StoredBatch) -> None:
    """Corrupt the middle of the batch's first chunk in the local store at ``root``."""
    chunk = next((root / batch.manifest_key).parent.glob("chunk-*"))
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 1
    chunk.write_bytes(bytes(raw))
