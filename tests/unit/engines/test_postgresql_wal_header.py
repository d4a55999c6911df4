"""The long page header a restore writes at the start of a WAL segment whose first page a
backup's stored WAL lacks (no server; the integration tests compare it with live ones)."""

from __future__ import annotations

from pathlib import Path

import pytest

from strongroom.engines.errors import RestoreError
from strongroom.engines.postgresql import wal_header, walstream
from strongroom.engines.postgresql.lsn import XLOG_BLCKSZ, segment_name

SEG = 16 * 1024 * 1024
SYSID = 7716302880230148389

# First 40 bytes of two segments a PostgreSQL 15.x server on x86-64 wrote: its first one
# (made by initdb) and the one after a pg_switch_wal(), written with no backup running.
PG15_FIRST_SEGMENT = bytes.fromhex(
    "10d1020001000000000000010000000000000000000000002509713b96d0156b0000000100200000"
)
PG15_AFTER_SWITCH = bytes.fromhex(
    "10d1060001000000000000020000000000000000000000002509713b96d0156b0000000100200000"
)


def _header(segment_start: int, major: str = "15") -> bytes:
    return wal_header.long_page_header(
        major=major,
        timeline=1,
        segment_start=segment_start,
        system_identifier=SYSID,
        segment_size=SEG,
    )


def test_the_header_is_byte_for_byte_the_one_postgresql_writes() -> None:
    assert wal_header.LONG_HEADER.size == 40  # SizeOfXLogLongPHD
    assert _header(0x1000000) == PG15_FIRST_SEGMENT
    # Without a backup running, PostgreSQL marks pages XLP_BKP_REMOVABLE; it is the only
    # difference, and recovery does not read it.
    ours, theirs = _header(0x2000000), PG15_AFTER_SWITCH
    assert ours[:2] == theirs[:2] and ours[4:] == theirs[4:]
    assert int.from_bytes(theirs[2:4], "little") == (
        wal_header.XLP_LONG_HEADER | wal_header.XLP_BKP_REMOVABLE
    )


def test_each_major_has_its_own_magic() -> None:
    magics = {major: _header(0x2000000, major)[:2] for major in ("13", "14", "15", "16", "17")}
    assert magics["13"] == b"\x06\xd1" and magics["17"] == b"\x16\xd1"
    assert len(set(magics.values())) == len(magics)
    assert wal_header.XLOG_PAGE_MAGIC["18"] == 0xD118


def test_an_unknown_major_is_refused_with_a_reason() -> None:
    with pytest.raises(RestoreError, match="PostgreSQL 99"):
        _header(0x2000000, "99")
    with pytest.raises(ValueError):
        _header(0x2000100)


def _writer(tmp_path: Path) -> walstream.SegmentWriter:
    return walstream.SegmentWriter(tmp_path, 1, SEG, None)


def _head(tmp_path: Path, lsn: int) -> bytes:
    with (tmp_path / segment_name(1, lsn, SEG)).open("rb") as fh:
        return fh.read(XLOG_BLCKSZ)


def test_a_window_starting_past_the_first_page_gets_its_header(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    start = 0x3000000 + 3 * XLOG_BLCKSZ
    writer.write(start, b"\x01" * XLOG_BLCKSZ)
    assert wal_header.restore_segment_head(
        writer, start, major="15", timeline=1, system_identifier=str(SYSID)
    )
    head = _head(tmp_path, start)
    assert head[:40] == _header(0x3000000) and not head[40:].strip(b"\0")
    content = (tmp_path / segment_name(1, start, SEG)).read_bytes()
    assert content[start - 0x3000000 :][:XLOG_BLCKSZ] == b"\x01" * XLOG_BLCKSZ


def test_stored_wal_is_never_overwritten(tmp_path: Path) -> None:
    writer = _writer(tmp_path)
    # A window starting at the segment: nothing to do, whatever the major.
    writer.write(0x4000000, b"\x02" * 100)
    assert not wal_header.restore_segment_head(
        writer, 0x4000000, major="99", timeline=1, system_identifier=str(SYSID)
    )
    assert _head(tmp_path, 0x4000000)[:100] == b"\x02" * 100
    # A window starting inside the header: only the bytes before it are written.
    writer.write(0x5000000 + 24, b"\x03" * 100)
    assert wal_header.restore_segment_head(
        writer, 0x5000000 + 24, major="15", timeline=1, system_identifier=str(SYSID)
    )
    head = _head(tmp_path, 0x5000000)
    assert head[:24] == _header(0x5000000)[:24] and head[24:124] == b"\x03" * 100
