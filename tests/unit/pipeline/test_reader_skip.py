"""ChunkReader.skip: bytes a restore will not use; whole chunks inside are not fetched."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from strongroom.pipeline import ChunkReader, MasterKey, open_manifest
from strongroom.pipeline.errors import IntegrityError

from .builders import CHUNK, StoredBackup, compressible, write_backup


def _reader(stored: StoredBackup, key: MasterKey, fetched: list[int]) -> ChunkReader:
    def fetch(index: int) -> bytes:
        fetched.append(index)
        return stored.chunks[index]

    opened = open_manifest(stored.manifest_bytes, key)
    return ChunkReader(opened, fetch, prefetch=1, workers=1)


def _read_all(reader: ChunkReader) -> bytes:
    out = bytearray()
    while piece := reader.read(CHUNK):
        out += piece
    return bytes(out)


def test_skip_returns_the_bytes_after_and_fetches_no_chunk_inside(master_key: MasterKey) -> None:
    data = compressible(10 * CHUNK)
    stored = write_backup(data, master_key)
    fetched: list[int] = []
    with _reader(stored, master_key, fetched) as reader:
        head = reader.read(10)
        reader.skip(5 * CHUNK)
        rest = _read_all(reader)
    assert head + rest == data[:10] + data[10 + 5 * CHUNK :]
    # chunk 1 may have been prefetched while chunk 0 was read; 2..4 are never fetched
    assert not {2, 3, 4} & set(fetched)
    assert {0, 5, 9} <= set(fetched)


def test_a_damaged_chunk_that_is_skipped_is_not_read_but_one_that_is_read_fails(
    master_key: MasterKey,
) -> None:
    data = compressible(8 * CHUNK)
    stored = write_backup(data, master_key)
    blob = bytearray(stored.chunks[4])
    blob[len(blob) // 2] ^= 0xFF
    stored.chunks[4] = bytes(blob)
    with _reader(stored, master_key, []) as reader:
        reader.read(CHUNK)
        reader.skip(4 * CHUNK)  # chunks 1..4, whole
        assert _read_all(reader) == data[5 * CHUNK :]
    with _reader(stored, master_key, []) as reader, pytest.raises(IntegrityError, match="chunk 4"):
        _read_all(reader)


def test_the_final_chunk_is_always_read(master_key: MasterKey) -> None:
    data = compressible(6 * CHUNK + 5)
    stored = write_backup(data, master_key)
    fetched: list[int] = []
    with _reader(stored, master_key, fetched) as reader:
        reader.skip(len(data))
        assert reader.read(1) == b""
    assert fetched[-1] == 6
    last = bytearray(stored.chunks[6])
    last[-1] ^= 0x01
    stored.chunks[6] = bytes(last)
    with _reader(stored, master_key, []) as reader, pytest.raises(IntegrityError, match="chunk 6"):
        reader.skip(len(data))


def test_skip_past_the_end_is_an_error(master_key: MasterKey) -> None:
    stored = write_backup(compressible(3 * CHUNK), master_key)
    with _reader(stored, master_key, []) as reader, pytest.raises(ValueError, match="past the end"):
        reader.skip(3 * CHUNK + 1)


def test_readers_sharing_a_pool_read_from_offsets_and_leave_it_open(
    master_key: MasterKey,
) -> None:
    """Parts of one backup read at once (a restore's segments): each reader skips to its
    offset, closing one leaves the shared pool to the others, and the reader that reaches
    the end still checks the stream's length."""
    data = compressible(8 * CHUNK)
    stored = write_backup(data, master_key)
    opened = open_manifest(stored.manifest_bytes, master_key)
    with ThreadPoolExecutor(2) as pool:
        readers = []
        for start in (0, 3 * CHUNK + 7, 6 * CHUNK):
            reader = ChunkReader(opened, stored.chunks.__getitem__, prefetch=2, pool=pool)
            reader.skip(start)
            readers.append(reader)
        middle = readers[1].read(CHUNK)
        readers[1].close()
        assert middle == data[3 * CHUNK + 7 : 4 * CHUNK]
        assert _read_all(readers[2]) == data[6 * CHUNK :]
        assert readers[0].read(10) == data[:10]
        readers[0].close()
        assert pool.submit(lambda: 1).result() == 1  # still open
