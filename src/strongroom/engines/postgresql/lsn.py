"""WAL positions (LSNs) and segment file names."""

from __future__ import annotations

XLOG_BLCKSZ = 8192
SHORT_PAGE_HEADER = 24
LONG_PAGE_HEADER = 40


def parse_lsn(text: str) -> int:
    """``"0/2000100"`` → ``33554688``."""
    try:
        high, low = text.strip().split("/")
        value = (int(high, 16) << 32) | int(low, 16)
    except ValueError as exc:
        raise ValueError(f"not a WAL position: {text!r}") from exc
    if not 0 <= value < 1 << 64:
        raise ValueError(f"not a WAL position: {text!r}")
    return value


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def segment_name(timeline: int, lsn: int, segment_size: int) -> str:
    """The name of the WAL segment file holding ``lsn`` on ``timeline``."""
    segno = lsn // segment_size
    per_xlogid = 0x100000000 // segment_size
    return f"{timeline:08X}{segno // per_xlogid:08X}{segno % per_xlogid:08X}"


def segment_number(name: str, segment_size: int) -> tuple[int, int]:
    """``(timeline, segno)`` of a segment file name."""
    if len(name) != 24:
        raise ValueError(f"not a WAL segment name: {name!r}")
    per_xlogid = 0x100000000 // segment_size
    return int(name[:8], 16), int(name[8:16], 16) * per_xlogid + int(name[16:], 16)


def is_segment_name(name: str) -> bool:
    return len(name) == 24 and all(c in "0123456789ABCDEF" for c in name)


def record_boundary(lsn: int, segment_size: int) -> int:
    """The same position with a page header not counted: a record that ends at a page
    boundary and the next record's start just past that page's header are one point."""
    offset = lsn % XLOG_BLCKSZ
    header = LONG_PAGE_HEADER if lsn % segment_size == offset else SHORT_PAGE_HEADER
    return lsn - offset if offset == header else lsn


def window_start(redo: int, segment_size: int) -> int:
    """Where a backup's WAL window starts: the beginning of the segment holding the redo
    point. Recovery reads a segment's first page (its long header) before any record in
    it, and the redo point is past that page whenever other writes came between
    ``pg_backup_start``'s segment switch and its checkpoint."""
    return redo - redo % segment_size
