"""Continuous WAL archiving and restore to a time, on a real managed server: a full
backup, rows committed with their server-clock brackets while the archiver cuts batches
(one after a restart of the archiver from the stored position), then restores to times
between the rows keep exactly the rows committed at or before each time."""

from __future__ import annotations

import dataclasses
import itertools
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from strongroom.engines.base import DatabaseSpec, InstanceRequest, RestoreInput
from strongroom.engines.errors import BackupError, RestoreError
from strongroom.engines.postgresql import PostgresEngine, archiver
from strongroom.pipeline.errors import IntegrityError
from strongroom.services import object_layout
from strongroom.services.wal_archive import WalArchive
from support.archive import flip_a_byte, local_archive, store_batch
from support.postgresql import FileSink, PlainServer, cleanup_homes, connect

_probe = PostgresEngine()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_probe.detect() is None, reason="PostgreSQL server tools not installed"),
]
ROWS = 6


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="strongroom-pitr-"))
    os.chmod(base, 0o711)
    yield base
    cleanup_homes(base)
    shutil.rmtree(base, ignore_errors=True)


def server_now(conn: Any) -> datetime:
    row = conn.execute("SELECT clock_timestamp()").fetchone()
    return row[0].astimezone(UTC).replace(tzinfo=None)


def batch(engine: PostgresEngine, conn: dict[str, Any], path: Path, start: int) -> Any:
    sink = FileSink(path)
    try:
        return engine.archive_batch(conn, sink, start=start)
    finally:
        sink.close()


@pytest.fixture(scope="module")
def archived(workdir: Path) -> Iterator[dict[str, Any]]:
    engine = PostgresEngine(timeout=120)
    request = InstanceRequest("src", databases=(DatabaseSpec("bench"),))
    conn = engine.create_instance(workdir / "src", request)
    with connect(conn) as c:
        c.execute("CREATE TABLE ticks (n int PRIMARY KEY, at timestamptz NOT NULL)")
    position = engine.start_archiving(conn)
    sink = FileSink(workdir / "full.tar")
    try:
        full = engine.backup(conn, sink, parent=None).metadata
    finally:
        sink.close()
    brackets: list[tuple[datetime, datetime]] = []
    batches: list[tuple[Any, Path]] = []
    with connect(conn) as c:
        for n in range(1, ROWS + 1):
            before = server_now(c)
            c.execute("INSERT INTO ticks VALUES (%s, clock_timestamp())", (n,))
            brackets.append((before, server_now(c)))
            time.sleep(0.05)  # spaces the commits apart so a target can fall between two
            if n % 2 == 0:
                # A new engine each time: the archiver resumes from the stored position
                # alone, as after a restart of the service.
                fresh = PostgresEngine(timeout=120)
                path = workdir / f"batch-{n}.wal"
                result = batch(fresh, conn, path, position)
                batches.append((result, path))
                position = result.stop
    archiver.confirm(conn, position)
    yield {
        "engine": engine,
        "conn": conn,
        "full": full,
        "brackets": brackets,
        "batches": batches,
    }
    engine.stop_archiving(conn)
    engine.destroy_instance(workdir / "src", conn)


def restore(
    data: dict[str, Any], workdir: Path, name: str, when: datetime | None, *, drop: int = -1
) -> list[int]:
    engine: PostgresEngine = data["engine"]
    full = (workdir / "full.tar").open("rb")
    chosen = [b for i, b in enumerate(data["batches"]) if i != drop]
    handles = [path.open("rb") for _, path in chosen]
    try:
        restored = engine.restore_instance(
            workdir / name,
            [RestoreInput(data["full"], full)],
            InstanceRequest(name),
            archive=[
                RestoreInput(b.metadata, fh) for (b, _), fh in zip(chosen, handles, strict=True)
            ],
            target_time=when,
        )
    finally:
        full.close()
        for fh in handles:
            fh.close()
    try:
        with connect(restored) as c:
            return [r[0] for r in c.execute("SELECT n FROM ticks ORDER BY n")]
    finally:
        engine.destroy_instance(workdir / name, restored)


def test_batches_join_and_cover_their_commits(archived: dict[str, Any]) -> None:
    batches = [b for b, _ in archived["batches"]]
    assert len(batches) == ROWS // 2
    for earlier, later in itertools.pairwise(batches):
        assert later.start == earlier.stop
        assert later.archived_through > earlier.archived_through
    assert batches[-1].metadata["method"] == "pg_wal_archive"
    # Each batch covers every row whose commit returned before the batch was cut.
    brackets = archived["brackets"]
    for i, b in enumerate(batches):
        assert brackets[2 * i + 1][1] <= b.archived_through


def test_restore_to_times_between_commits(archived: dict[str, Any], workdir: Path) -> None:
    brackets = archived["brackets"]
    for keep in (1, 4):
        target = brackets[keep - 1][1] + (brackets[keep][0] - brackets[keep - 1][1]) / 2
        assert restore(archived, workdir, f"at-{keep}", target) == list(range(1, keep + 1))
    # To the end of the archive: every row.
    last = archived["batches"][-1][0].archived_through
    assert restore(archived, workdir, "at-end", last) == list(range(1, ROWS + 1))


def test_a_missing_batch_is_refused(archived: dict[str, Any], workdir: Path) -> None:
    with pytest.raises(RestoreError, match="gap"):
        restore(archived, workdir, "holed", None, drop=1)


def test_a_released_position_is_a_gap(archived: dict[str, Any], workdir: Path) -> None:
    engine: PostgresEngine = archived["engine"]
    first = archived["batches"][0][0]
    sink = FileSink(workdir / "stale.wal")
    try:
        with pytest.raises(BackupError, match="gap"):
            engine.archive_batch(archived["conn"], sink, start=first.start)
    finally:
        sink.close()


# -- the batches in a store, in the backups' format ---------------------------------------


@pytest.fixture(scope="module")
def wal_archive(workdir: Path) -> Iterator[WalArchive]:
    with local_archive(workdir / "store") as archive:
        yield archive


def test_stored_batches_restore_to_a_time_and_refuse_tampering(
    workdir: Path, wal_archive: WalArchive
) -> None:
    engine = PostgresEngine(timeout=120)
    conn = engine.create_instance(
        workdir / "src2", InstanceRequest("src2", databases=(DatabaseSpec("bench"),))
    )
    instance_id = str(uuid.uuid4())
    try:
        with connect(conn) as c:
            c.execute("CREATE TABLE ticks (n int PRIMARY KEY)")
        position = engine.start_archiving(conn)
        sink = FileSink(workdir / "full2.tar")
        try:
            full = engine.backup(conn, sink, parent=None).metadata
        finally:
            sink.close()
        stored = []
        brackets = []
        with connect(conn) as c:
            for n in (1, 2):
                before = server_now(c)
                c.execute("INSERT INTO ticks VALUES (%s)", (n,))
                brackets.append((before, server_now(c)))
                batch_ = store_batch(
                    wal_archive,
                    engine,
                    conn,
                    instance_id=instance_id,
                    datastore="postgresql",
                    start=position,
                )
                stored.append(batch_)
                position = batch_.stop
        keys = sorted(
            str(p.relative_to(workdir / "store"))
            for p in (workdir / "store").rglob("*")
            if p.is_file()
        )
        assert keys and all(k.startswith(f"database-backups/{instance_id}/wal/") for k in keys)
        target = brackets[0][1] + (brackets[1][0] - brackets[0][1]) / 2

        def restore_from_store(name: str) -> list[int]:
            with (workdir / "full2.tar").open("rb") as fh:
                restored = engine.restore_instance(
                    workdir / name,
                    [RestoreInput(full, fh)],
                    InstanceRequest(name),
                    archive=wal_archive.open_batches(stored),
                    target_time=target,
                )
            try:
                with connect(restored) as c:
                    return [r[0] for r in c.execute("SELECT n FROM ticks ORDER BY n")]
            finally:
                engine.destroy_instance(workdir / name, restored)

        assert restore_from_store("from-store") == [1]
        # Another project's or instance's claim on the batch is refused before any byte.
        other = dataclasses.replace(stored[0], project_id="p2")
        with pytest.raises(IntegrityError):
            wal_archive.open_batches([other])
        # A flipped byte in a chunk of the second batch: the restore is refused.
        flip_a_byte(workdir / "store", stored[1])
        with pytest.raises((RestoreError, IntegrityError)):
            restore_from_store("tampered")
    finally:
        engine.stop_archiving(conn)
        engine.destroy_instance(workdir / "src2", conn)


def test_archive_keys_cannot_be_steered() -> None:
    good = str(uuid.uuid4())
    for bad in ("../other", f"{good}/../x", "", good.upper()):
        with pytest.raises(ValueError):
            object_layout.archive_prefix("database-backups", bad)
        with pytest.raises(ValueError):
            object_layout.archive_manifest_key("database-backups", good, bad)


def test_external_server_archives_through_its_replication_role(workdir: Path) -> None:
    server = PlainServer(workdir / "external")
    server.start()
    engine = PostgresEngine(allowed_hosts=["127.0.0.1"], timeout=120)
    try:
        with server.admin() as c:
            c.execute("CREATE ROLE backup_role LOGIN REPLICATION PASSWORD 'repl-pw'")
            c.execute("CREATE DATABASE bench")
        with server.admin("bench") as c:
            c.execute("CREATE TABLE ticks (n int PRIMARY KEY)")
        conn = engine.register_external(
            {
                "host": "127.0.0.1",
                "port": server.port,
                "user": "backup_role",
                "password": "repl-pw",
                "database": "bench",
            },
            project_id="p1",
        )
        position = engine.start_archiving(conn)
        full_path = workdir / "ext-full.tar"
        sink = FileSink(full_path)
        try:
            full = engine.backup(conn, sink, parent=None).metadata
        finally:
            sink.close()
        brackets = []
        with server.admin("bench") as c:
            for n in (1, 2):
                before = server_now(c)
                c.execute("INSERT INTO ticks VALUES (%s)", (n,))
                brackets.append((before, server_now(c)))
                time.sleep(0.05)
        result = batch(engine, conn, workdir / "ext-batch.wal", position)
        target = brackets[0][1] + (brackets[1][0] - brackets[0][1]) / 2
        with full_path.open("rb") as fh, (workdir / "ext-batch.wal").open("rb") as wal:
            restored = engine.restore_instance(
                workdir / "ext-restored",
                [RestoreInput(full, fh)],
                InstanceRequest("ext-restored"),
                archive=[RestoreInput(result.metadata, wal)],
                target_time=target,
            )
        try:
            with connect(restored) as c:
                assert [r[0] for r in c.execute("SELECT n FROM ticks ORDER BY n")] == [1]
        finally:
            engine.destroy_instance(workdir / "ext-restored", restored)
        engine.stop_archiving(conn)
        with server.admin() as c:
            slots = [r[0] for r in c.execute("SELECT slot_name FROM pg_replication_slots")]
        assert archiver.archive_slot(conn) not in slots
    finally:
        server.stop()
