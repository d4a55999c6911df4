"""File-method backups whose stored WAL window starts past the first page of the redo
point's segment, as backups taken before the window started at the segment's beginning
did when other writes came between ``pg_backup_start``'s segment switch and its
checkpoint. Recovery checks that page's long header before any other page of the segment;
the restore writes the header PostgreSQL would have written there.

Against a real managed server: the rebuilt header equals a real one field by field,
``pg_waldump`` reads a segment whose first page was zeroed once it is rebuilt, and such a
backup, made for real under concurrent writers, fails to restore without the header and
restores its rows exactly with it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom.engines.base import DatabaseSpec, InstanceRequest, RestoreInput
from strongroom.engines.errors import EngineError
from strongroom.engines.postgresql import PostgresEngine, wal_header, walstream
from strongroom.engines.postgresql.lsn import XLOG_BLCKSZ, parse_lsn, segment_name
from support.postgresql import FileSink, bin_dir, connect, conninfo, snapshot
from support.postgresql_service import PG_MAJOR, reachable_dir
from support.postgresql_wal_head import (
    FILLER_TABLE,
    filler_digest,
    filler_prefixes,
    until_past_first_page,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]


@pytest.fixture(scope="module")
def engine() -> PostgresEngine:
    return PostgresEngine(timeout=120)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with reachable_dir("strongroom-walhead-") as base:
        yield base


@pytest.fixture(scope="module")
def source(engine: PostgresEngine, workdir: Path) -> Iterator[dict[str, Any]]:
    """A managed server whose ``bench`` database holds ``kept`` (rows written before any
    backup) and ``filler`` (batches the writers add while backups run)."""
    conn = engine.create_instance(
        workdir / "source", InstanceRequest("source", databases=(DatabaseSpec("bench"),))
    )
    with connect(conn) as c:
        c.execute("CREATE TABLE kept (id int PRIMARY KEY, body text NOT NULL)")
        c.execute("INSERT INTO kept SELECT g, md5(g::text) FROM generate_series(1, 3000) g")
        c.execute(FILLER_TABLE)
        c.execute("CREATE TABLE spill (body text NOT NULL)")
    yield conn
    engine.destroy_instance(workdir / "source", conn)


def _facts(conn: dict[str, Any]) -> tuple[int, int, int]:
    """The server's timeline, system identifier and WAL segment size."""
    with connect(conn, "postgres") as c:
        row = c.execute(
            "SELECT timeline_id, (SELECT system_identifier FROM pg_control_system()),"
            " (SELECT setting::int FROM pg_settings WHERE name = 'wal_segment_size')"
            " FROM pg_control_checkpoint()"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def _fresh_segment(conn: dict[str, Any], segment_size: int) -> int:
    """Switch to a new segment, write more than a page of WAL into it, and make sure it
    is on disk; returns the segment's start."""
    with connect(conn) as c:
        c.execute("INSERT INTO spill SELECT repeat('s', 300) FROM generate_series(1, 10)")
        row = c.execute("SELECT pg_switch_wal()::text").fetchone()
        assert row is not None
        start = -(-parse_lsn(row[0]) // segment_size) * segment_size
        c.execute("INSERT INTO spill SELECT repeat('p', 300) FROM generate_series(1, 200)")
        c.execute("SELECT pg_switch_wal()")  # flushes the segment through its end
    return start


def test_the_rebuilt_header_is_the_one_postgresql_writes(
    engine: PostgresEngine, source: dict[str, Any]
) -> None:
    timeline, sysid, segment_size = _facts(source)
    start = _fresh_segment(source, segment_size)
    path = Path(source["data_dir"]) / "pg_wal" / segment_name(timeline, start, segment_size)
    with path.open("rb") as fh:
        real = fh.read(wal_header.LONG_HEADER.size)
    built = wal_header.long_page_header(
        major=engine.major,
        timeline=timeline,
        segment_start=start,
        system_identifier=sysid,
        segment_size=segment_size,
    )
    names = ("magic", "info", "tli", "pageaddr", "rem_len", "sysid", "seg_size", "blcksz")
    theirs = dict(zip(names, wal_header.LONG_HEADER.unpack(real), strict=True))
    ours = dict(zip(names, wal_header.LONG_HEADER.unpack(built), strict=True))
    # xlp_info: PostgreSQL marks pages written while no backup runs XLP_BKP_REMOVABLE
    # (a hint for WAL compressors, which recovery does not read); a segment just after a
    # switch continues no record, so XLP_FIRST_IS_CONTRECORD is clear in both.
    assert theirs.pop("info") & ~wal_header.XLP_BKP_REMOVABLE == ours.pop("info")
    assert ours == theirs
    assert ours["magic"] == wal_header.XLOG_PAGE_MAGIC[engine.major]
    assert ours["rem_len"] == 0 and ours["pageaddr"] == start
    # the padding after xlp_rem_len: zeros in both
    assert built[20:24] == real[20:24] == bytes(4)


def _waldump(wal_dir: Path, timeline: int, lsn: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(bin_dir() / "pg_waldump"),
            "-p",
            str(wal_dir),
            "-t",
            str(timeline),
            "-s",
            f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}",
            "-n",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_pg_waldump_reads_a_segment_whose_first_page_is_rebuilt(
    engine: PostgresEngine, source: dict[str, Any], tmp_path: Path
) -> None:
    timeline, sysid, segment_size = _facts(source)
    start = _fresh_segment(source, segment_size)
    name = segment_name(timeline, start, segment_size)
    shutil.copyfile(Path(source["data_dir"]) / "pg_wal" / name, tmp_path / name)
    later = start + 2 * XLOG_BLCKSZ  # a page after the first, inside the WAL written
    assert _waldump(tmp_path, timeline, later).returncode == 0

    with (tmp_path / name).open("r+b") as fh:
        fh.write(bytes(XLOG_BLCKSZ))
    broken = _waldump(tmp_path, timeline, later)
    assert broken.returncode != 0
    # pg_waldump takes the segment size from the first page's long header
    assert f'"{name}" header specifies 0 bytes' in broken.stderr, broken.stderr

    writer = walstream.SegmentWriter(tmp_path, timeline, segment_size, None)
    assert wal_header.restore_segment_head(
        writer, later, major=engine.major, timeline=timeline, system_identifier=str(sysid)
    )
    repaired = _waldump(tmp_path, timeline, later)
    assert repaired.returncode == 0, repaired.stderr
    assert "rmgr:" in repaired.stdout
    content = (tmp_path / name).read_bytes()
    assert not content[wal_header.LONG_HEADER.size : XLOG_BLCKSZ].strip(b"\0")


def _restore(engine: PostgresEngine, home: Path, meta: dict[str, Any], path: Path) -> Any:
    with path.open("rb") as fh:
        return engine.restore_instance(home, [RestoreInput(meta, fh)], InstanceRequest(home.name))


def _without_filler(tables: dict[str, Any]) -> dict[str, Any]:
    """The tables nothing writes while the backups run (``filler`` is compared by batch)."""
    assert "kept" in tables and "filler" in tables
    return {name: rows for name, rows in tables.items() if name != "filler"}


def test_a_backup_lacking_its_segments_first_page_restores_exactly(
    engine: PostgresEngine,
    source: dict[str, Any],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = _without_filler(snapshot(source))
    path = workdir / "old-shape.stream"

    def backup() -> dict[str, Any]:
        sink = FileSink(path)
        try:
            return engine.backup(source, sink, parent=None).metadata
        finally:
            sink.close()

    meta, committed_before = until_past_first_page(conninfo(source), monkeypatch, backup)
    assert parse_lsn(meta["wal_start_lsn"]) % meta["wal_segment_size"] >= XLOG_BLCKSZ

    # Without the rebuilt header, recovery stops at the segment's zeroed first page.
    with monkeypatch.context() as patched, pytest.raises(EngineError) as failed:
        patched.setattr(wal_header, "restore_segment_head", lambda *a, **k: False)
        _restore(engine, workdir / "unrepaired", meta, path)
    assert "invalid magic number 0000" in str(failed.value), failed.value
    assert "offset 0" in str(failed.value), failed.value
    assert not (workdir / "unrepaired").exists()

    restored = _restore(engine, workdir / "repaired", meta, path)
    try:
        assert _without_filler(snapshot(restored)) == before
        prefixes = filler_prefixes(conninfo(restored))
        assert all(prefixes.get(i, 0) >= n for i, n in zip((1, 2), committed_before, strict=True))
        digest = filler_digest(conninfo(restored), prefixes)
        assert digest == filler_digest(conninfo(source), prefixes)
        with connect(restored) as c:
            assert c.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
    finally:
        engine.destroy_instance(workdir / "repaired", restored)
