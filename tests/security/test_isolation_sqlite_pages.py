"""A tenant's SQLite file that claims far more pages than it stores.

The page count a backup reads comes from the tenant's own file: its header, or its size.
Extended with ``truncate`` (a sparse file), a few kilobytes on disk claim 2^24 pages here
(up to 2^32 in general), and SQLite opens it without complaint. The worker must not size
anything by that claim, nor read the gaps for hours: the backup is refused, plainly, and
the worker's memory stays far below one digest per claimed page.
"""

from __future__ import annotations

import sqlite3
import struct
import tracemalloc
from pathlib import Path

import pytest

from strongroom.engines.errors import BackupError
from strongroom.engines.sqlite import SqliteEngine

PAGE_SIZE = 512
CLAIMED_PAGES = 1 << 24  # 8 GiB of pages; 128 MiB of page digests if sized up front
DIGEST_SIZE = 8
PEAK_LIMIT = 16 << 20
SINK_LIMIT = 4 << 20


class SinkFull(Exception):
    """The sink took more than a refused backup could have written."""


class CappedSink:
    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.size += len(data)
        if self.size > SINK_LIMIT:
            raise SinkFull(f"{self.size} bytes written")
        return len(data)


def claiming_db(path: Path, mode: str, *, header_valid: bool) -> None:
    """A real database, then extended to ``CLAIMED_PAGES`` pages without storing them.

    With a valid in-header size SQLite takes the header's count; with a stale one (change
    counter != version-valid-for) it takes the file's size: both give the claimed count."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA page_size={PAGE_SIZE}")
    db.execute(f"PRAGMA journal_mode={mode}")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
    db.executemany("INSERT INTO t (v) VALUES (randomblob(200))", [()] * 20)
    db.close()
    with open(path, "r+b") as f:
        if header_valid:
            f.seek(28)
            f.write(struct.pack(">I", CLAIMED_PAGES))
        else:
            f.seek(92)
            f.write(struct.pack(">I", 0xDEADBEEF))
        f.truncate(CLAIMED_PAGES * PAGE_SIZE)
    check = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        assert check.execute("PRAGMA page_count").fetchone()[0] == CLAIMED_PAGES
    finally:
        check.close()


@pytest.mark.parametrize("header_valid", [True, False], ids=["header", "size"])
@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_sparse_file_claiming_many_pages_is_refused_without_sizing_memory_by_it(
    tmp_path: Path, mode: str, header_valid: bool
) -> None:
    root = tmp_path / "allowed"
    root.mkdir()
    path = root / "claims.db"
    claiming_db(path, mode, header_valid=header_valid)
    engine = SqliteEngine(allowed_roots=[root])
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    sink = CappedSink()

    tracemalloc.start()
    try:
        with pytest.raises((BackupError, SinkFull)) as caught:
            engine.backup(conn, sink, parent=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    claimed = DIGEST_SIZE * CLAIMED_PAGES
    assert peak < PEAK_LIMIT, f"peak {peak / 1e6:.1f} MB for a claim of {claimed / 1e6:.0f} MB"
    assert caught.type is BackupError, f"the backup streamed the gaps: {caught.value}"
    assert "not stored" in str(caught.value)
    assert str(CLAIMED_PAGES) in str(caught.value)
    assert sink.size == 0
