"""BackupWriter -> storage -> open_manifest + ChunkReader: data comes back unchanged."""

from __future__ import annotations

import io
import tarfile

import pytest

from strongroom.pipeline import ChunkReader, MasterKey, open_manifest

from .builders import CHUNK, compressible, incompressible, read_backup, write_backup


@pytest.mark.parametrize(
    ("size", "chunks"),
    [(0, 1), (1, 1), (CHUNK, 1), (CHUNK + 1, 2), (3 * CHUNK, 3), (50 * CHUNK + 7, 51)],
)
def test_round_trip_sizes(master_key: MasterKey, size: int, chunks: int) -> None:
    data = compressible(size)
    stored = write_backup(data, master_key)
    manifest = stored.manifest
    assert len(manifest.chunks) == chunks == len(stored.chunks)
    assert manifest.plain_bytes == size
    assert manifest.chunks[-1].plain_size == size - (chunks - 1) * CHUNK
    assert read_backup(stored, master_key) == data


@pytest.mark.parametrize("piece", [1, 7, CHUNK - 1, CHUNK, 5 * CHUNK])
def test_round_trip_write_pieces(master_key: MasterKey, piece: int) -> None:
    data = incompressible(3 * CHUNK + 100) + compressible(4 * CHUNK)
    stored = write_backup(data, master_key, piece=piece)
    assert read_backup(stored, master_key) == data


def test_round_trip_default_chunk_size(master_key: MasterKey) -> None:
    data = incompressible(5 << 20) + compressible(4 << 20)
    stored = write_backup(data, master_key, chunk_size=4 << 20, piece=1 << 20)
    manifest = stored.manifest
    assert [c.plain_size for c in manifest.chunks] == [4 << 20, 4 << 20, 1 << 20]
    assert manifest.stored_bytes < manifest.plain_bytes
    assert read_backup(stored, master_key) == data


def test_round_trip_records_manifest_fields(master_key: MasterKey) -> None:
    stored = write_backup(
        b"abc",
        master_key,
        parent_id="bk-0",
        parent_manifest_sha256="a" * 64,
        engine={"gtid": "0-1-42", "lsns": [1, 2]},
    )
    opened = open_manifest(stored.manifest_bytes, master_key, expected_backup_id="bk-1")
    assert opened.manifest.parent_id == "bk-0"
    assert opened.manifest.engine == {"gtid": "0-1-42", "lsns": [1, 2]}
    assert opened.manifest.encryption.key_id == master_key.key_id
    assert opened.data_key.hex() not in repr(opened)


def test_reader_small_reads_and_readinto(master_key: MasterKey) -> None:
    data = compressible(7 * CHUNK + 3)
    stored = write_backup(data, master_key)
    opened = open_manifest(stored.manifest_bytes, master_key)
    out = bytearray()
    with ChunkReader(opened, stored.fetch, prefetch=2) as reader:
        assert reader.readable()
        while piece := reader.read(100):
            assert len(piece) <= 100
            out += piece
        assert reader.read(100) == b""
    assert out == data
    with ChunkReader(opened, stored.fetch) as reader:
        assert io.BufferedReader(reader, buffer_size=333).read() == data


def test_reader_streams_into_tarfile(master_key: MasterKey) -> None:
    payload = compressible(20 * CHUNK)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|") as tar:
        info = tarfile.TarInfo("base/16384")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    stored = write_backup(buf.getvalue(), master_key, piece=1000)
    opened = open_manifest(stored.manifest_bytes, master_key)
    with (
        ChunkReader(opened, stored.fetch) as reader,
        tarfile.open(fileobj=reader, mode="r|") as tar,
    ):
        member = tar.next()
        assert member is not None and member.name == "base/16384"
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == payload


def test_reader_close_stops_fetching(master_key: MasterKey) -> None:
    stored = write_backup(compressible(40 * CHUNK), master_key)
    opened = open_manifest(stored.manifest_bytes, master_key)
    fetched: list[int] = []

    def fetch(index: int) -> bytes:
        fetched.append(index)
        return stored.chunks[index]

    reader = ChunkReader(opened, fetch, prefetch=3)
    reader.read(10)
    reader.close()
    count = len(fetched)
    assert count <= 5
    with pytest.raises(ValueError):
        reader.read(10)
    assert len(fetched) == count
