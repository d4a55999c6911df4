"""Copying a backup's stored objects into another store, byte for byte, and reading the
copy back.

The objects are already sealed (AES-GCM under a data key the manifest wraps with the
master key, bound to the backup's id and project), so a copy is the same bytes under
the same backup id in the other store: nothing is decrypted or sealed again. Chunks go
first, a few at a time (memory: ``transfer_threads * 2`` chunks), the manifest last, so
an interrupted copy has no manifest. The copy is then verified as ``verify_backup``
verifies a backup: every manifest of the chain opened and bound to its row and to its
child, and every chunk of the copied link authenticated and decompressed."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from strongroom.domain.model import Backup, BackupCopy
from strongroom.pipeline.errors import IntegrityError
from strongroom.services import object_layout
from strongroom.services.transfer import Transfer
from strongroom.services.verification import read_through
from strongroom.storage.base import StorageBackend


def at_copy(backup: Backup, copy: BackupCopy) -> Backup:
    """``backup`` as if it were stored where ``copy`` is (for reading the copy)."""
    return dataclasses.replace(
        backup,
        location_ref=copy.location_ref,
        store_name=copy.store_name,
        container=copy.container,
    )


class CopyWriter:
    def __init__(self, transfer: Transfer) -> None:
        self._transfer = transfer
        self._stores = transfer.stores

    def destination_url(self, backup: Backup, store_name: str, container: str) -> str:
        """Where the copy's manifest goes (before anything is written)."""
        key = object_layout.manifest_key(container, backup.id)
        return self._stores.backend(store_name).url_for(key)

    def copy(self, backup: Backup, store_name: str, container: str) -> str:
        """Copy every object of ``backup`` (one link, not its parents) into ``container``
        of ``store_name``; returns the copied manifest's URL."""
        if backup.location_ref is None:
            raise IntegrityError(f"backup {backup.id} has no stored data")
        _, source, manifest_key = self._stores.locate(backup.location_ref)
        prefix = manifest_key.rsplit("/", 1)[0] + "/"
        chunks: list[tuple[str, str]] = []
        for key in source.list(prefix):
            parsed = object_layout.parse(key)
            if parsed is None or parsed.backup_id != backup.id:
                continue
            if parsed.kind is object_layout.ObjectKind.CHUNK:
                name = key.rsplit("/", 1)[1]
                chunks.append((key, f"{object_layout.backup_prefix(container, backup.id)}{name}"))
        target = self._stores.backend(store_name)
        self._copy_all(source, target, chunks)
        copied_manifest = object_layout.manifest_key(container, backup.id)
        target.put(copied_manifest, source.get(manifest_key))
        # Leftovers of an earlier attempt that this backup does not have.
        wanted = {dst for _, dst in chunks} | {copied_manifest}
        for key in target.list(object_layout.backup_prefix(container, backup.id)):
            if key not in wanted:
                target.delete(key)
        return target.url_for(copied_manifest)

    def _copy_all(
        self, source: StorageBackend, target: StorageBackend, pairs: list[tuple[str, str]]
    ) -> None:
        threads = self._transfer.rules.transfer_threads
        window = threads * 2
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="strongroom-copy") as pool:
            pending: list[Future[None]] = []
            for src, dst in pairs:
                pending.append(pool.submit(_copy_one, source, target, src, dst))
                if len(pending) >= window:
                    pending.pop(0).result()
            for future in pending:
                future.result()

    def verify(self, backup: Backup, find_copy: Callable[[str], Backup | None]) -> None:
        """Read the copy of ``backup`` back (raises what a restore would meet).
        ``find_copy`` gives each backup of the chain as it sits in the copy's store."""
        located = find_copy(backup.id)
        if located is None:
            raise IntegrityError(f"backup {backup.id} has no copy to verify")
        links = self._transfer.open_chain(located, find_copy)
        read_through(links[-1], self._transfer.rules.transfer_threads)


def _copy_one(source: StorageBackend, target: StorageBackend, src: str, dst: str) -> None:
    target.put(dst, source.get(src))
