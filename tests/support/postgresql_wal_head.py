"""Making file-method backups of the shape taken before their WAL window started at the
beginning of the redo point's segment: the window starts at the redo point's own page,
and that page is past the segment's first whenever other writes came between
``pg_backup_start``'s segment switch and its checkpoint. Bulk writers make those writes."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

from strongroom.engines.postgresql import file_method
from strongroom.engines.postgresql.lsn import XLOG_BLCKSZ

# Backups taken until one's redo point lands past its segment's first page: with two bulk
# writers most attempts land there (one to three attempts in practice).
ATTEMPTS = 12
BATCH_ROWS = 400
FILLER_TABLE = (
    "CREATE TABLE filler (writer int, batch int, n int, pad text NOT NULL,"
    " PRIMARY KEY (writer, batch, n))"
)


class BulkWriter(threading.Thread):
    """Commits batches of ``BATCH_ROWS`` rows into ``filler`` as writer ``number`` until
    stopped: batch 1, 2, 3… in commit order, so a consistent copy holds a prefix."""

    def __init__(self, params: dict[str, Any], number: int) -> None:
        super().__init__(daemon=True)
        self._params = params
        self.number = number
        self.batches = 0
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        try:
            with psycopg.connect(**self._params, autocommit=True) as c:
                while not self._stop_event.is_set():
                    c.execute(
                        "INSERT INTO filler SELECT %s, %s, g, repeat(md5(g::text), 8)"
                        " FROM generate_series(1, %s) g",
                        (self.number, self.batches + 1, BATCH_ROWS),
                    )
                    self.batches += 1
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=60)
        assert not self.is_alive(), "writer did not stop"
        assert self.error is None, f"writer failed: {self.error}"


@contextmanager
def old_window_rule(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """While open, file-method backups start their WAL window at the redo point's page;
    yields where in its segment each backup's redo point was, in order."""
    offsets: list[int] = []

    def page_of_redo_point(redo: int, segment_size: int) -> int:
        offsets.append(redo % segment_size)
        return redo - redo % XLOG_BLCKSZ

    with monkeypatch.context() as patched:
        patched.setattr(file_method, "window_start", page_of_redo_point)
        yield offsets


def until_past_first_page(
    params: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    backup: Callable[[], Any],
) -> tuple[Any, list[int]]:
    """``backup()`` under the old window rule while two bulk writers fill ``filler``
    (reached with ``params``), until a backup's redo point is past its segment's first
    page; returns that backup's result and, per writer, the batches committed before it
    began. Fails after ``ATTEMPTS``."""
    writers = [BulkWriter(params, number) for number in (1, 2)]
    for w in writers:
        w.start()
    try:
        with old_window_rule(monkeypatch) as offsets:
            for _ in range(ATTEMPTS):
                before = [w.batches for w in writers]
                result = backup()
                assert offsets, "the backup did not take the file method"
                if offsets[-1] >= XLOG_BLCKSZ:
                    break
    finally:
        for w in writers:
            w.stop()
    print(f"\nredo point offsets in their segments, by attempt: {offsets}")
    assert offsets[-1] >= XLOG_BLCKSZ, f"no redo point past its segment's first page: {offsets}"
    return result, before


def filler_prefixes(params: dict[str, Any]) -> dict[int, int]:
    """Per writer, the batches ``filler`` holds; each must be whole and they a prefix."""
    with psycopg.connect(**params) as c:
        rows = c.execute(
            "SELECT writer, max(batch), count(*), count(DISTINCT batch) FROM filler"
            " GROUP BY writer ORDER BY writer"
        ).fetchall()
    prefixes = {}
    for writer, last, count, batches in rows:
        assert batches == last and count == last * BATCH_ROWS, "a batch is torn or missing"
        prefixes[int(writer)] = int(last)
    return prefixes


def filler_digest(params: dict[str, Any], prefixes: dict[int, int]) -> str:
    """The md5 of ``filler``'s rows in the batches ``prefixes`` names."""
    with psycopg.connect(**params) as c:
        row = c.execute(
            "SELECT md5(string_agg(f::text, ',' ORDER BY writer, batch, n)) FROM filler f"
            " WHERE batch <= (ARRAY[%s, %s])[writer]",
            (prefixes.get(1, 0), prefixes.get(2, 0)),
        ).fetchone()
    assert row is not None
    return str(row[0])
