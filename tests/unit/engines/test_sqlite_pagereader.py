"""Pure parsing in the SQLite page reader: wal-index header, WAL frame map, page streaming."""

from __future__ import annotations

import struct
import sys

import pytest

from strongroom.engines.sqlite.pagereader import (
    PageReadError,
    WalIndexHeader,
    build_frame_map,
    parse_wal_index_header,
    stream_pages,
)

# A wal-index header written by SQLite 3.40.1 (x86-64): mxFrame 3, nPage 2, 4 KiB pages.
SHM_HEADER = bytes.fromhex(
    "18e22d00 00000000 02000000 01000010 03000000 02000000"
    " 602d0279 5cf653bc f1a68334 f2c5fc9b 74fff368 3c750a8e"
)
CKPT_INFO = bytes.fromhex(
    "00000000 00000000 02000000 ffffffff ffffffff ffffffff 00000000 00000000 00000000 00000000"
)
SALT = bytes.fromhex("f1a68334f2c5fc9b")
PAGE = 512


def test_parse_wal_index_header_reads_what_sqlite_wrote() -> None:
    if sys.byteorder != "little":
        pytest.skip("the sample was written on a little-endian host")
    hdr = parse_wal_index_header(SHM_HEADER + SHM_HEADER + CKPT_INFO)
    assert hdr == WalIndexHeader(mx_frame=3, n_page=2, page_size=4096, salt=SALT, n_backfill=0)


@pytest.mark.parametrize(
    "shm",
    [
        SHM_HEADER + SHM_HEADER,  # too short
        SHM_HEADER + bytes(48) + CKPT_INFO,  # copies differ
        SHM_HEADER[:44] + b"\0\0\0\0" + SHM_HEADER[:44] + b"\0\0\0\0" + CKPT_INFO,  # checksum
    ],
)
def test_parse_wal_index_header_rejects_damaged_headers(shm: bytes) -> None:
    with pytest.raises(PageReadError):
        parse_wal_index_header(shm)


def _wal(frames: list[tuple[int, int, bytes]], salt: bytes = SALT) -> bytes:
    """A WAL of 512-byte pages: frames are (pgno, commit_size, fill byte)."""
    out = struct.pack(">IIII", 0x377F0682, 3007000, PAGE, 0) + salt + bytes(8)
    for pgno, commit, fill in frames:
        out += struct.pack(">II", pgno, commit) + salt + bytes(8) + fill * PAGE
    return out


def _pread(data: bytes):  # type: ignore[no-untyped-def]
    return lambda size, offset: data[offset : offset + size]


def _hdr(mx_frame: int, n_page: int, n_backfill: int = 0) -> WalIndexHeader:
    return WalIndexHeader(mx_frame, n_page, PAGE, SALT, n_backfill)


def test_frame_map_keeps_the_newest_frame_up_to_mx_frame() -> None:
    wal = _wal([(2, 0, b"a"), (3, 3, b"b"), (2, 3, b"c"), (3, 4, b"d")])
    assert build_frame_map(_pread(wal), _hdr(3, 3)) == {2: 3, 3: 2}


def test_frame_map_refuses_a_commit_the_header_does_not_name() -> None:
    wal = _wal([(2, 0, b"a"), (3, 3, b"b")])
    with pytest.raises(PageReadError):
        build_frame_map(_pread(wal), _hdr(1, 3))


def test_restarted_wal_means_main_file_only_when_fully_backfilled() -> None:
    wal = _wal([(2, 3, b"a")], salt=b"\x01" * 8)
    assert build_frame_map(_pread(wal), _hdr(1, 3, n_backfill=1)) is None
    with pytest.raises(PageReadError):
        build_frame_map(_pread(wal), _hdr(1, 3, n_backfill=0))


def test_stream_pages_overlays_frames_on_the_main_file() -> None:
    db = b"1" * PAGE + b"2" * PAGE  # page 3 exists only in the WAL
    wal = _wal([(2, 0, b"x"), (3, 3, b"y")])
    out: list[bytes] = []
    stats = stream_pages(
        _pread(db),
        _pread(wal),
        _hdr(2, 3),
        {2: 1, 3: 2},
        page_size=PAGE,
        page_count=3,
        write=out.append,
    )
    assert b"".join(out) == b"1" * PAGE + b"x" * PAGE + b"y" * PAGE
    assert stats.wal_pages == 2 and stats.reread_from_db == 0


def test_stream_pages_rereads_overwritten_frames_from_the_main_file() -> None:
    db = b"1" * PAGE + b"2" * PAGE
    overwritten = _wal([(1, 0, b"n"), (2, 2, b"n")], salt=b"\x07" * 8)
    out: list[bytes] = []
    stats = stream_pages(
        _pread(db),
        _pread(overwritten),
        _hdr(2, 2, n_backfill=2),
        {2: 2},
        page_size=PAGE,
        page_count=2,
        write=out.append,
    )
    assert b"".join(out) == db and stats.reread_from_db == 1
    with pytest.raises(PageReadError):
        stream_pages(
            _pread(db),
            _pread(overwritten),
            _hdr(2, 2, n_backfill=1),
            {2: 2},
            page_size=PAGE,
            page_count=2,
            write=out.append,
        )


def test_stream_pages_reads_past_the_end_of_file_as_zeros() -> None:
    out: list[bytes] = []
    stream_pages(
        _pread(b"1" * PAGE), None, None, {}, page_size=PAGE, page_count=2, write=out.append
    )
    assert b"".join(out) == b"1" * PAGE + bytes(PAGE)
