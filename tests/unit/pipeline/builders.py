"""Builders for pipeline tests: an in-memory chunk store, write and read a backup."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from strongroom.pipeline import BackupWriter, ChunkReader, Manifest, MasterKey, open_manifest

CHUNK = 1024
CREATED = "2024-05-01T12:00:00+00:00"


@dataclass
class StoredBackup:
    """What a backup leaves in storage: chunk objects by index and the manifest bytes."""

    backup_id: str
    chunks: dict[int, bytes] = field(default_factory=dict)
    manifest_bytes: bytes = b""

    @property
    def manifest(self) -> Manifest:
        return Manifest.from_bytes(self.manifest_bytes)

    def fetch(self, index: int) -> bytes:
        return self.chunks[index]


def compressible(n: int, seed: int = 0) -> bytes:
    rnd = random.Random(seed)
    words = [b"alpha", b"beta", b"gamma", b"delta", b"row", b"page", b"lsn", b"tuple"]
    out = bytearray()
    while len(out) < n:
        out += b"%s %d;" % (rnd.choice(words), rnd.randrange(1000))
    return bytes(out[:n])


def incompressible(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def write_backup(
    data: bytes,
    key: MasterKey,
    *,
    backup_id: str = "bk-1",
    chunk_size: int = CHUNK,
    piece: int | None = None,
    **manifest_fields: object,
) -> StoredBackup:
    stored = StoredBackup(backup_id)
    writer = BackupWriter(
        backup_id=backup_id,
        master_key=key,
        emit=stored.chunks.__setitem__,
        chunk_size=chunk_size,
    )
    step = piece or max(len(data), 1)
    for offset in range(0, len(data), step):
        writer.write(data[offset : offset + step])
    writer.close()
    fields: dict[str, object] = {
        "project_id": "proj-1",
        "instance_id": "inst-1",
        "datastore": "postgresql",
        "datastore_version": "16",
        "engine": {"start_lsn": "0/3000028", "timeline": 1},
        "parent_id": None,
        "parent_manifest_sha256": None,
        "created": CREATED,
    }
    fields.update(manifest_fields)
    stored.manifest_bytes = writer.manifest(**fields).to_bytes()  # type: ignore[arg-type]
    return stored


def read_backup(
    stored: StoredBackup, key: MasterKey, fetch: Callable[[int], bytes] | None = None
) -> bytes:
    opened = open_manifest(stored.manifest_bytes, key)
    with ChunkReader(opened, fetch or stored.fetch) as reader:
        return reader.read()
