"""WAL positions, the incremental stream format and segment layout (no server)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from strongroom.engines.postgresql import walstream
from strongroom.engines.postgresql.lsn import (
    format_lsn,
    parse_lsn,
    record_boundary,
    segment_name,
    segment_number,
    window_start,
)

SEG = 16 * 1024 * 1024


def test_lsn_round_trip() -> None:
    assert parse_lsn("0/2000100") == 0x2000100
    assert parse_lsn("1A/FF") == (0x1A << 32) | 0xFF
    assert format_lsn(parse_lsn("3/B000028")) == "3/B000028"
    with pytest.raises(ValueError):
        parse_lsn("nonsense")


def test_segment_names() -> None:
    assert segment_name(1, 0x2000100, SEG) == "000000010000000000000002"
    assert segment_name(2, (5 << 32) | 0x3000000, SEG) == "000000020000000500000003"
    assert segment_number("000000020000000500000003", SEG) == (2, 5 * 256 + 3)


def test_record_boundary_ignores_page_headers() -> None:
    assert record_boundary(0x2000000 + 40, SEG) == 0x2000000  # long header, segment start
    assert record_boundary(0x2002000 + 24, SEG) == 0x2002000  # short header
    assert record_boundary(0x2002000 + 64, SEG) == 0x2002000 + 64


def _encode(start: int, data: bytes, header: dict[str, int]) -> bytes:
    out = io.BytesIO()
    walstream.write_header(out, header)
    frames = walstream.FrameWriter(out)
    # fed in uneven pieces, as the replication stream delivers them
    pos, view = start, memoryview(data)
    for size in (100, 9000, 50000, len(data)):
        piece = view[:size]
        frames.feed(pos, piece)
        pos += len(piece)
        view = view[size:]
    frames.close()
    return out.getvalue()


def _wal(start: int) -> bytes:
    # data, then four zero pages (as after a WAL switch), then data again
    return os.urandom(8192 - start % 8192 + 3000) + bytes(4 * 8192) + os.urandom(5000)


def test_stream_round_trip_elides_zero_pages(tmp_path: Path) -> None:
    start = SEG - 5000  # crosses into the next segment
    data = _wal(start)
    header = {
        "format": 1,
        "timeline": 1,
        "segment_size": SEG,
        "start": start,
        "stop": start + len(data),
    }
    encoded = _encode(start, data, header)
    assert len(encoded) < len(data) - 3 * 8192
    source = io.BytesIO(encoded)
    got = walstream.read_header(source)
    assert got == header
    writer = walstream.SegmentWriter(tmp_path, 1, SEG, None)
    walstream.apply_wal_stream(source, got, writer)
    first = (tmp_path / segment_name(1, start, SEG)).read_bytes()
    second = (tmp_path / segment_name(1, start + len(data) - 1, SEG)).read_bytes()
    assert len(first) == len(second) == SEG
    assert first[start % SEG :] + second[: (start + len(data)) % SEG] == data


@pytest.mark.parametrize("where", [0.5, 0.97])
def test_stream_corruption_is_detected(tmp_path: Path, where: float) -> None:
    start = 0x3000000
    data = _wal(start)
    header = {
        "format": 1,
        "timeline": 1,
        "segment_size": SEG,
        "start": start,
        "stop": start + len(data),
    }
    encoded = bytearray(_encode(start, data, header))
    encoded[int(len(encoded) * where)] ^= 0x01
    source = io.BytesIO(bytes(encoded))
    with pytest.raises(walstream.WalStreamError):
        walstream.apply_wal_stream(
            source, walstream.read_header(source), walstream.SegmentWriter(tmp_path, 1, SEG, None)
        )


def test_truncated_stream_is_detected(tmp_path: Path) -> None:
    start = 0x3000000
    data = _wal(start)
    header = {
        "format": 1,
        "timeline": 1,
        "segment_size": SEG,
        "start": start,
        "stop": start + len(data),
    }
    encoded = _encode(start, data, header)
    source = io.BytesIO(encoded[:-40])
    with pytest.raises(walstream.WalStreamError):
        walstream.apply_wal_stream(
            source, walstream.read_header(source), walstream.SegmentWriter(tmp_path, 1, SEG, None)
        )


def test_not_a_wal_stream() -> None:
    with pytest.raises(walstream.WalStreamError, match="not a PostgreSQL incremental"):
        walstream.read_header(io.BytesIO(b"PK\x03\x04 definitely a zip file"))


def test_end_at_zeroes_the_rest_of_the_segment(tmp_path: Path) -> None:
    writer = walstream.SegmentWriter(tmp_path, 1, SEG, None)
    writer.write(0x1000000, b"\x01" * 10000)
    writer.end_at(0x1000000 + 5000)
    content = (tmp_path / segment_name(1, 0x1000000, SEG)).read_bytes()
    assert content[:5000] == b"\x01" * 5000 and not content[5000:].strip(b"\0")
    assert len(content) == SEG  # a whole segment, as recovery expects


def test_a_backups_wal_window_starts_at_its_redo_points_segment() -> None:
    # Recovery reads the segment's first page (the long header) before the redo point's
    # record: a window starting at the redo point's own page, 20 KiB into the segment
    # after other writes, left that page as zeros ("invalid magic number 0000").
    segment = 16 * 1024 * 1024
    assert window_start(0x0B005180, segment) == 0x0B000000
    assert window_start(0x0B000000, segment) == 0x0B000000
    assert window_start(0x0AFFFFFF, segment) == 0x0A000000
