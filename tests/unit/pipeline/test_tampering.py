"""Restore refuses every kind of tampering, naming the backup and chunk."""

from __future__ import annotations

import dataclasses
import json

import pytest

from strongroom.pipeline import (
    ChunkReader,
    FormatError,
    IntegrityError,
    Manifest,
    MasterKey,
    MissingChunkError,
    WrongKeyError,
    open_manifest,
)

from .builders import StoredBackup, compressible, incompressible, read_backup, write_backup

DATA = incompressible(4 * 1024) + compressible(6 * 1024 + 10)  # 11 chunks of 1 KiB


@pytest.fixture
def stored(master_key: MasterKey) -> StoredBackup:
    backup = write_backup(DATA, master_key)
    assert len(backup.chunks) == 11
    assert read_backup(backup, master_key) == DATA
    return backup


def resign(stored: StoredBackup, key: MasterKey, **changes: object) -> None:
    """Rewrite the manifest as a holder of the data key could (bypasses the MAC)."""
    opened = open_manifest(stored.manifest_bytes, key)
    manifest = dataclasses.replace(opened.manifest, **changes)  # type: ignore[arg-type]
    stored.manifest_bytes = manifest.signed(opened.data_key).to_bytes()


def test_tamper_flipped_byte_in_chunk(stored: StoredBackup, master_key: MasterKey) -> None:
    blob = bytearray(stored.chunks[3])
    blob[len(blob) // 2] ^= 0x01
    stored.chunks[3] = bytes(blob)
    with pytest.raises(IntegrityError, match="backup bk-1 chunk 3: SHA-256 mismatch"):
        read_backup(stored, master_key)


def test_tamper_swapped_chunks(stored: StoredBackup, master_key: MasterKey) -> None:
    stored.chunks[5], stored.chunks[6] = stored.chunks[6], stored.chunks[5]
    with pytest.raises(IntegrityError, match="chunk 5"):
        read_backup(stored, master_key)


def test_tamper_reordered_with_matching_manifest_fails_aead(
    stored: StoredBackup, master_key: MasterKey
) -> None:
    chunks = stored.manifest.chunks
    stored.chunks[1], stored.chunks[2] = stored.chunks[2], stored.chunks[1]
    swapped = [
        chunks[0],
        dataclasses.replace(chunks[2], index=1),
        dataclasses.replace(chunks[1], index=2),
        *chunks[3:],
    ]
    resign(stored, master_key, chunks=swapped)
    with pytest.raises(IntegrityError, match="chunk 1: authentication failed"):
        read_backup(stored, master_key)


def test_tamper_chunk_from_another_backup(stored: StoredBackup, master_key: MasterKey) -> None:
    other = write_backup(DATA, master_key, backup_id="bk-2")
    stored.chunks[4] = other.chunks[4]
    with pytest.raises(IntegrityError, match="backup bk-1 chunk 4"):
        read_backup(stored, master_key)


def test_tamper_dropped_last_chunk(stored: StoredBackup, master_key: MasterKey) -> None:
    del stored.chunks[10]
    with pytest.raises(MissingChunkError, match="backup bk-1 chunk 10 is missing"):
        read_backup(stored, master_key)


def test_tamper_dropped_middle_chunk(stored: StoredBackup, master_key: MasterKey) -> None:
    del stored.chunks[6]
    with pytest.raises(MissingChunkError, match="chunk 6 is missing"):
        read_backup(stored, master_key)


def test_tamper_truncated_manifest_without_final_chunk(
    stored: StoredBackup, master_key: MasterKey
) -> None:
    chunks = stored.manifest.chunks[:-1]
    resign(
        stored,
        master_key,
        chunks=chunks,
        plain_bytes=sum(c.plain_size for c in chunks),
        stored_bytes=sum(c.size for c in chunks),
    )
    with pytest.raises(IntegrityError, match=r"chunk 9 is the last chunk .* not marked final"):
        read_backup(stored, master_key)


def test_tamper_truncated_object(stored: StoredBackup, master_key: MasterKey) -> None:
    stored.chunks[2] = stored.chunks[2][:-16]
    with pytest.raises(IntegrityError, match=r"chunk 2 is .* bytes in storage"):
        read_backup(stored, master_key)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("project_id", "proj-2"),
        ("instance_id", None),
        ("engine", {"start_lsn": "0/4000000", "timeline": 1}),
        ("created", "2025-01-01T00:00:00+00:00"),
        ("chunk_size", 2048),
    ],
)
def test_tamper_edited_manifest_field(
    stored: StoredBackup, master_key: MasterKey, field: str, value: object
) -> None:
    doc = json.loads(stored.manifest_bytes)
    doc[field] = value
    if field == "chunk_size":  # keep the structure valid: pretend chunks are bigger
        doc["chunks"] = doc["chunks"][-1:]
        doc["chunks"][0]["index"] = 0
        doc["plain_bytes"] = doc["chunks"][0]["plain_size"]
        doc["stored_bytes"] = doc["chunks"][0]["size"]
    with pytest.raises(IntegrityError, match="manifest MAC does not verify"):
        open_manifest(json.dumps(doc).encode(), master_key)


def test_tamper_edited_chunk_checksum_in_manifest(
    stored: StoredBackup, master_key: MasterKey
) -> None:
    doc = json.loads(stored.manifest_bytes)
    doc["chunks"][3]["sha256"] = "0" * 64
    with pytest.raises(IntegrityError, match="MAC"):
        open_manifest(json.dumps(doc).encode(), master_key)


def test_tamper_edited_backup_id(stored: StoredBackup, master_key: MasterKey) -> None:
    doc = json.loads(stored.manifest_bytes)
    doc["backup_id"] = "bk-9"
    with pytest.raises(IntegrityError, match="wrapped data key does not authenticate"):
        open_manifest(json.dumps(doc).encode(), master_key)


def test_tamper_manifest_of_other_backup(stored: StoredBackup, master_key: MasterKey) -> None:
    with pytest.raises(IntegrityError, match="belongs to backup bk-1, expected backup bk-2"):
        open_manifest(stored.manifest_bytes, master_key, expected_backup_id="bk-2")


def test_wrong_master_key(
    stored: StoredBackup, master_key: MasterKey, other_key: MasterKey
) -> None:
    with pytest.raises(WrongKeyError) as info:
        open_manifest(stored.manifest_bytes, other_key)
    assert str(info.value) == (
        f"backup bk-1: backup was encrypted with master key {master_key.key_id}, "
        f"this service has {other_key.key_id}"
    )


def test_unsupported_manifest_version(stored: StoredBackup, master_key: MasterKey) -> None:
    doc = json.loads(stored.manifest_bytes)
    doc["format_version"] = 2
    with pytest.raises(FormatError, match="unsupported") as info:
        open_manifest(json.dumps(doc).encode(), master_key)
    assert not isinstance(info.value, IntegrityError)


def test_fetch_errors_other_than_missing_propagate(
    stored: StoredBackup, master_key: MasterKey
) -> None:
    def fetch(index: int) -> bytes:
        if index == 2:
            raise TimeoutError("storage timed out")
        return stored.chunks[index]

    with pytest.raises(TimeoutError, match="storage timed out") as info:
        read_backup(stored, master_key, fetch)
    assert info.value.__notes__ == ["while fetching backup bk-1 chunk 2"]


def test_fetch_missing_error_type_is_configurable(
    stored: StoredBackup, master_key: MasterKey
) -> None:
    class NotFound(Exception):
        pass

    def fetch(index: int) -> bytes:
        if index == 7:
            raise NotFound("no such object")
        return stored.chunks[index]

    opened = open_manifest(stored.manifest_bytes, master_key)
    with (
        ChunkReader(opened, fetch, missing=(NotFound,)) as reader,
        pytest.raises(MissingChunkError, match="chunk 7 is missing from storage"),
    ):
        reader.read()


def test_error_is_sticky(stored: StoredBackup, master_key: MasterKey) -> None:
    del stored.chunks[0]
    reader = ChunkReader(open_manifest(stored.manifest_bytes, master_key), stored.fetch)
    for _ in range(2):
        with pytest.raises(MissingChunkError):
            reader.read(10)
    reader.close()


def test_manifest_parse_round_trip_keeps_mac_valid(
    stored: StoredBackup, master_key: MasterKey
) -> None:
    reparsed = Manifest.from_bytes(stored.manifest_bytes).to_bytes()
    open_manifest(reparsed, master_key)
