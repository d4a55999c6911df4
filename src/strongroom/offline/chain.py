"""A backup's chain read from its store, verified as the service verifies it: each
manifest's key id, wrapped key and MAC; the target's backup id against its place in the
store; each parent manifest (beside its child) against the SHA-256 the child recorded;
every chunk through :class:`~strongroom.pipeline.reader.ChunkReader`."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

from strongroom.engines.base import RestoreInput
from strongroom.pipeline.errors import IntegrityError
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.reader import ChunkReader, OpenedManifest, open_manifest
from strongroom.services import object_layout
from strongroom.storage.base import StorageBackend
from strongroom.storage.errors import ObjectNotFoundError

MAX_LINKS = 10_000
FETCH_THREADS = 4


@dataclass(frozen=True)
class Link:
    manifest_key: str
    opened: OpenedManifest
    raw_sha256: str


def read_link(
    store: StorageBackend, key: str, master_key: MasterKey, backup_id: str
) -> tuple[Link, bytes]:
    raw = store.get(key)
    opened = open_manifest(raw, master_key, expected_backup_id=backup_id)
    return Link(key, opened, hashlib.sha256(raw).hexdigest()), raw


def open_chain(
    store: StorageBackend, key: str, backup_id: str, master_key: MasterKey
) -> list[Link]:
    """Every verified manifest from the full backup to ``backup_id``, full first."""
    links = [read_link(store, key, master_key, backup_id)[0]]
    while (parent_id := links[-1].opened.manifest.parent_id) is not None:
        child = links[-1]
        parent_key = object_layout.sibling_manifest_key(child.manifest_key, parent_id)
        try:
            link, _raw = read_link(store, parent_key, master_key, parent_id)
        except ObjectNotFoundError:
            raise IntegrityError(
                f"the parent {parent_id} of backup {child.opened.manifest.backup_id} "
                "is not in the store beside it"
            ) from None
        if link.raw_sha256 != child.opened.manifest.parent_manifest_sha256:
            raise IntegrityError(
                f"the parent manifest of backup {child.opened.manifest.backup_id} "
                "does not match the checksum its child recorded"
            )
        links.append(link)
        if len(links) > MAX_LINKS:
            raise IntegrityError("backup chain is too long or loops")
    links.reverse()
    datastores = {link.opened.manifest.datastore for link in links}
    if len(datastores) != 1:
        raise IntegrityError(f"the chain mixes datastores: {sorted(map(str, datastores))}")
    return links


class LinkStream:
    """One link's verified plaintext, reporting every byte read or skipped to
    ``advance``. Has ``skip`` and ``reader_at`` as the service's sources do."""

    def __init__(
        self,
        store: StorageBackend,
        link: Link,
        advance: Callable[[int], None],
        start: int = 0,
    ) -> None:
        self._store = store
        self._link = link
        self._advance = advance
        self._reader = ChunkReader(
            link.opened,
            lambda i: store.get(object_layout.chunk_key_beside(link.manifest_key, i)),
            prefetch=FETCH_THREADS * 2,
            workers=FETCH_THREADS,
            missing=(ObjectNotFoundError,),
        )
        if start:
            self._reader.skip(start)

    def read(self, size: int, /) -> bytes:
        data = self._reader.read(size)
        self._advance(len(data))
        if not data:
            self.close()
        return data

    def skip(self, size: int, /) -> None:
        self._reader.skip(size)
        self._advance(size)

    def reader_at(self, offset: int, /) -> LinkStream:
        return LinkStream(self._store, self._link, self._advance, offset)

    def close(self) -> None:
        if not self._reader.closed:
            self._reader.close()


def restore_inputs(
    store: StorageBackend, links: list[Link], advance: Callable[[int], None]
) -> list[RestoreInput]:
    return [
        RestoreInput(link.opened.manifest.engine, LinkStream(store, link, advance))
        for link in links
    ]
