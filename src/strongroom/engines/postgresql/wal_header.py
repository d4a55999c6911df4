"""The long page header that opens every WAL segment, for restoring backups whose stored
WAL starts past it.

PostgreSQL reads and checks a segment's first page header (``XLogLongPageHeaderData``)
before it reads any later page of that segment, but reads no record from that page when
the redo point is further on. File-method backups taken before the WAL window started at
the redo point's segment stored the window from the redo point's own 8 KiB page: when
other writes came between ``pg_backup_start``'s segment switch and its checkpoint, the
segment's first page is not in the backup and recovery stops at "invalid magic number
0000 … offset 0". Such backups cannot be taken again; writing the header PostgreSQL
would have written there (the rest of the page stays zeros) makes them restorable.
"""

from __future__ import annotations

import struct
from typing import Protocol

from strongroom.engines.errors import RestoreError
from strongroom.engines.postgresql.lsn import XLOG_BLCKSZ

# XLOG_PAGE_MAGIC of src/include/access/xlog_internal.h, by major version: the WAL format.
XLOG_PAGE_MAGIC = {
    "13": 0xD106,
    "14": 0xD10D,
    "15": 0xD110,
    "16": 0xD113,
    "17": 0xD116,
    "18": 0xD118,
}
XLP_FIRST_IS_CONTRECORD = 0x0001
XLP_LONG_HEADER = 0x0002
XLP_BKP_REMOVABLE = 0x0004

# XLogLongPageHeaderData in the server's byte order: the standard header (xlp_magic u16,
# xlp_info u16, xlp_tli u32, xlp_pageaddr u64, xlp_rem_len u32, then 4 bytes of padding
# to the 8-byte alignment of the struct), then xlp_sysid u64, xlp_seg_size u32 and
# xlp_xlog_blcksz u32: SizeOfXLogLongPHD, 40 bytes.
LONG_HEADER = struct.Struct("=HHIQI4xQII")


class _Target(Protocol):
    segment_size: int

    def write(self, lsn: int, data: bytes) -> None: ...


def long_page_header(
    *,
    major: str,
    timeline: int,
    segment_start: int,
    system_identifier: int,
    segment_size: int,
    block_size: int = XLOG_BLCKSZ,
) -> bytes:
    """The first page header of the segment starting at ``segment_start``, as PostgreSQL
    ``major`` writes it after a segment switch: no record continues into it
    (``xlp_rem_len`` 0, no ``XLP_FIRST_IS_CONTRECORD``) and, a backup running, no
    ``XLP_BKP_REMOVABLE``."""
    magic = XLOG_PAGE_MAGIC.get(major)
    if magic is None:
        raise RestoreError(
            f"the backup's WAL lacks the first page of a segment and this product does not "
            f"know PostgreSQL {major}'s WAL page format to rebuild its header"
        )
    if segment_start % segment_size:
        raise ValueError(f"{segment_start:#x} is not the start of a segment")
    return LONG_HEADER.pack(
        magic,
        XLP_LONG_HEADER,
        timeline,
        segment_start,
        0,
        system_identifier,
        segment_size,
        block_size,
    )


def restore_segment_head(
    target: _Target, wal_start: int, *, major: str, timeline: int, system_identifier: str
) -> bool:
    """When the stored WAL begins at ``wal_start`` inside a segment, write that segment's
    long page header at its start: only the header bytes before ``wal_start``, so no
    stored WAL is overwritten. Returns whether it wrote."""
    offset = wal_start % target.segment_size
    if offset == 0:
        return False
    segment_start = wal_start - offset
    header = long_page_header(
        major=major,
        timeline=timeline,
        segment_start=segment_start,
        system_identifier=int(system_identifier),
        segment_size=target.segment_size,
    )
    target.write(segment_start, header[:offset])
    return True
