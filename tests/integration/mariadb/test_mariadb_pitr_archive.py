"""Binary log archiving and restore to a time, on a real managed MariaDB server: a full
backup, rows committed one to a second (the binary log's resolution) with their
server-clock brackets while batches are cut by fresh engines (as after a restart), a
server whose ``time_zone`` is not UTC, then restores to times between the rows keep
exactly the rows committed at or before each time (to the whole second)."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import os
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pymysql
import pytest

from strongroom.engines.base import DatabaseSpec, InstanceRequest, RestoreInput
from strongroom.engines.errors import BackupError, RestoreError
from strongroom.engines.mariadb import MariaDbEngine, archiver, binlog
from strongroom.engines.mariadb.sessions import managed_session
from strongroom.pipeline.errors import IntegrityError
from strongroom.services.wal_archive import WalArchive
from support.archive import flip_a_byte, local_archive, store_batch
from support.files import FileSink
from support.mariadb import require_mariadb, scratch_root, wait_until

pytestmark = pytest.mark.integration
ROWS = 6


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    require_mariadb()
    with scratch_root("strongroom-mpitr-") as base:
        yield base


def server_now(cursor: Any) -> datetime:
    cursor.execute("SELECT UTC_TIMESTAMP(6)")
    return cursor.fetchone()[0]  # type: ignore[no-any-return]


def into_next_second(cursor: Any) -> None:
    """Wait (on the server's clock) until a new second has begun 0.2 s ago, so the next
    commit is stamped in a second of its own."""
    start = server_now(cursor).replace(microsecond=0)
    while server_now(cursor) < start + timedelta(seconds=1.2):
        time.sleep(0.05)


def batch_to(engine: MariaDbEngine, conn: dict[str, Any], path: Path, start: int) -> Any:
    sink = FileSink(path)
    try:
        return engine.archive_batch(conn, sink, start=start)
    finally:
        sink.close()


def full_backup(engine: MariaDbEngine, conn: dict[str, Any], path: Path) -> dict[str, Any]:
    sink = FileSink(path)
    try:
        return dict(engine.backup(conn, sink, parent=None).metadata)
    finally:
        sink.close()


@pytest.fixture(scope="module")
def archived(workdir: Path) -> Iterator[dict[str, Any]]:
    engine = MariaDbEngine(timeout=300)
    conn = engine.create_instance(
        workdir / "src", InstanceRequest("src", databases=(DatabaseSpec("bench"),))
    )
    with managed_session(conn) as c:
        # Binary log stamps are epoch seconds: the server's zone must play no part.
        c.execute("SET GLOBAL time_zone = '+05:00'")
        c.execute("CREATE TABLE bench.ticks (n int PRIMARY KEY, at datetime(6) NOT NULL)")
        c.execute("INSERT INTO bench.ticks VALUES (0, NOW(6))")
    position = engine.start_archiving(conn)
    full = full_backup(engine, conn, workdir / "full.xb")
    brackets: list[tuple[datetime, datetime]] = []
    batches: list[tuple[Any, Path]] = []
    with managed_session(conn) as c:
        for n in range(1, ROWS + 1):
            into_next_second(c)
            before = server_now(c)
            c.execute("INSERT INTO bench.ticks VALUES (%s, NOW(6))", (n,))
            brackets.append((before, server_now(c)))
            if n % 2 == 0:
                fresh = MariaDbEngine(timeout=300)
                path = workdir / f"batch-{n}.bin"
                result = batch_to(fresh, conn, path, position)
                batches.append((result, path))
                position = result.stop
            if n == 3:
                c.execute("FLUSH BINARY LOGS")  # a batch that spans two files
    yield {"engine": engine, "conn": conn, "full": full, "brackets": brackets, "batches": batches}
    engine.destroy_instance(workdir / "src", conn)


def restore(
    data: dict[str, Any], workdir: Path, name: str, when: datetime | None, *, drop: int = -1
) -> list[int]:
    engine: MariaDbEngine = data["engine"]
    chosen = [b for i, b in enumerate(data["batches"]) if i != drop]
    handles = [path.open("rb") for _, path in chosen]
    try:
        with (workdir / "full.xb").open("rb") as full:
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
        for fh in handles:
            fh.close()
    return ticks_then_destroy(engine, workdir / name, restored)


def ticks_then_destroy(engine: MariaDbEngine, home: Path, restored: dict[str, Any]) -> list[int]:
    """The restored server's ``ticks``; the server is removed afterwards."""
    try:
        with managed_session(restored) as c:
            c.execute("SELECT n FROM bench.ticks ORDER BY n")
            return [r[0] for r in c.fetchall()]
    finally:
        engine.destroy_instance(home, restored)


def test_batches_join_and_cover_their_commits(archived: dict[str, Any]) -> None:
    batches = [b for b, _ in archived["batches"]]
    assert len(batches) == ROWS // 2
    for earlier, later in itertools.pairwise(batches):
        assert later.start == earlier.stop
        assert later.archived_through > earlier.archived_through
    meta = batches[1].metadata
    assert meta["method"] == "mariadb_binlog_archive"
    assert meta["start_file"] != meta["stop_file"]  # the flush moved the log on
    assert binlog.decode(batches[1].stop)[0] == binlog.decode(batches[1].start)[0] + 1
    assert meta["first_gtid"] and meta["last_gtid"]
    brackets = archived["brackets"]
    for i, b in enumerate(batches):
        # Every row whose commit returned before the batch was cut is in it.
        assert brackets[2 * i + 1][1] <= b.archived_through


def test_restore_to_times_between_commits(archived: dict[str, Any], workdir: Path) -> None:
    brackets = archived["brackets"]
    for keep in (1, 4):
        # The second after row `keep` committed, before row keep+1 began; and a time
        # inside that second (the binary log's resolution is the whole second).
        second = brackets[keep - 1][1].replace(microsecond=0) + timedelta(seconds=1)
        assert second < brackets[keep][0]
        assert restore(archived, workdir, f"at-{keep}", second) == list(range(keep + 1))
        inside = second + (brackets[keep][0] - second) / 2
        assert restore(archived, workdir, f"in-{keep}", inside) == list(range(keep + 1))
    last = archived["batches"][-1][0].archived_through
    assert restore(archived, workdir, "at-end", last) == list(range(ROWS + 1))
    assert restore(archived, workdir, "to-end", None) == list(range(ROWS + 1))


def test_a_missing_batch_is_refused(archived: dict[str, Any], workdir: Path) -> None:
    with pytest.raises(RestoreError, match="gap"):
        restore(archived, workdir, "holed", None, drop=1)
    assert not (workdir / "holed" / "data").exists()


def test_a_purged_position_is_a_gap(archived: dict[str, Any], workdir: Path) -> None:
    engine: MariaDbEngine = archived["engine"]
    conn = archived["conn"]
    first = archived["batches"][0][0]
    with managed_session(conn) as c:
        c.execute("FLUSH BINARY LOGS")
        c.execute("SHOW MASTER STATUS")
        current = c.fetchone()[0]
        c.execute("PURGE BINARY LOGS TO %s", (current,))
    with pytest.raises(BackupError, match=archiver.GAP):
        batch_to(engine, conn, workdir / "stale.bin", first.start)


# -- the batches in a store, in the backups' format ---------------------------------------


def test_stored_batches_restore_to_a_time_and_refuse_tampering(workdir: Path) -> None:
    with local_archive(workdir / "store") as wal_archive:
        stored_batches_restore(wal_archive, workdir)


def stored_batches_restore(wal_archive: WalArchive, workdir: Path) -> None:
    engine = MariaDbEngine(timeout=300)
    conn = engine.create_instance(
        workdir / "src2", InstanceRequest("src2", databases=(DatabaseSpec("bench"),))
    )
    instance_id = str(uuid.uuid4())
    try:
        with managed_session(conn) as c:
            c.execute("CREATE TABLE bench.ticks (n int PRIMARY KEY)")
        position = engine.start_archiving(conn)
        full = full_backup(engine, conn, workdir / "full2.xb")
        stored = []
        brackets = []
        with managed_session(conn) as c:
            for n in (1, 2):
                into_next_second(c)
                before = server_now(c)
                c.execute("INSERT INTO bench.ticks VALUES (%s)", (n,))
                brackets.append((before, server_now(c)))
                stored_batch = store_batch(
                    wal_archive,
                    engine,
                    conn,
                    instance_id=instance_id,
                    datastore="mariadb",
                    start=position,
                )
                stored.append(stored_batch)
                position = stored_batch.stop
        keys = [p for p in (workdir / "store").rglob("*") if p.is_file()]
        prefix = f"database-backups/{instance_id}/wal/"
        assert keys and all(str(p.relative_to(workdir / "store")).startswith(prefix) for p in keys)
        target = brackets[0][1].replace(microsecond=0) + timedelta(seconds=1)
        assert target < brackets[1][0]

        def restore_from_store(name: str) -> list[int]:
            with (workdir / "full2.xb").open("rb") as fh:
                restored = engine.restore_instance(
                    workdir / name,
                    [RestoreInput(full, fh)],
                    InstanceRequest(name),
                    archive=wal_archive.open_batches(stored),
                    target_time=target,
                )
            return ticks_then_destroy(engine, workdir / name, dict(restored))

        assert restore_from_store("from-store") == [1]
        other = dataclasses.replace(stored[0], project_id="p2")
        with pytest.raises(IntegrityError):
            wal_archive.open_batches([other])
        flip_a_byte(workdir / "store", stored[1])
        with pytest.raises((RestoreError, IntegrityError)):
            restore_from_store("tampered")
    finally:
        engine.destroy_instance(workdir / "src2", conn)


def test_client_commands_in_the_log_are_not_run(workdir: Path) -> None:
    """Statement text and names a tenant chose that look like a client command (``\\!``
    runs a shell command in the ``mariadb`` client) never run: in strings and comments
    they replay as data; a table name with a line break breaks the decoder's comment
    lines, and the client refuses the line (the restore fails with the reason)."""
    engine = MariaDbEngine(timeout=300)
    conn = engine.create_instance(
        workdir / "src3", InstanceRequest("src3", databases=(DatabaseSpec("bench"),))
    )
    witness = workdir / "witness"
    command = f"\n\\! touch {witness}\n"
    try:
        with managed_session(conn) as c:
            c.execute("CREATE TABLE bench.notes (t text)")
        position = engine.start_archiving(conn)
        full = full_backup(engine, conn, workdir / "full3.xb")
        with managed_session(conn) as c:
            # Statement-based, so the text itself is in the log and printed by the decoder.
            c.execute("SET SESSION binlog_format = 'STATEMENT'")
            c.execute("INSERT INTO bench.notes VALUES (%s)", (command,))
            c.execute(f"INSERT INTO bench.notes /*{command}*/ VALUES ('y')")
            c.execute("SELECT t FROM bench.notes ORDER BY t")
            expected = [r[0] for r in c.fetchall()]
            into_next_second(c)
            named_at = server_now(c)
            c.execute(f"CREATE TABLE bench.`x{command}y` (a int)")
            # Row-based: the decoder prints the table's name in a comment line.
            c.execute("SET SESSION binlog_format = 'ROW'")
            c.execute(f"INSERT INTO bench.`x{command}y` VALUES (1)")
        sink = io.BytesIO()
        result = engine.archive_batch(conn, sink, start=position)

        def restore_to(name: str, when: datetime | None) -> dict[str, Any]:
            sink.seek(0)
            with (workdir / "full3.xb").open("rb") as fh:
                return dict(
                    engine.restore_instance(
                        workdir / name,
                        [RestoreInput(full, fh)],
                        InstanceRequest(name),
                        archive=[RestoreInput(result.metadata, sink)],
                        target_time=when,
                    )
                )

        restored = restore_to("dst3", named_at.replace(microsecond=0))
        try:
            with managed_session(restored) as c:
                c.execute("SELECT t FROM bench.notes ORDER BY t")
                assert [r[0] for r in c.fetchall()] == expected
        finally:
            engine.destroy_instance(workdir / "dst3", restored)
        with pytest.raises(RestoreError, match="Unknown command"):
            restore_to("dst4", None)
        assert not (workdir / "dst4").exists()
        assert not witness.exists()
    finally:
        engine.destroy_instance(workdir / "src3", conn)


@contextlib.contextmanager
def ticking_source(
    workdir: Path, tag: str
) -> Iterator[tuple[MariaDbEngine, dict[str, Any], int, dict[str, Any]]]:
    """A new server ``src<tag>`` with an empty ``bench.ticks``, archived from before its
    full backup (``full<tag>.xb``): the engine, the server, where archiving starts and
    the backup's metadata. The server is removed afterwards."""
    engine = MariaDbEngine(timeout=300)
    home = workdir / f"src{tag}"
    conn = engine.create_instance(
        home, InstanceRequest(f"src{tag}", databases=(DatabaseSpec("bench"),))
    )
    try:
        with managed_session(conn) as c:
            c.execute("CREATE TABLE bench.ticks (n int PRIMARY KEY)")
        position = engine.start_archiving(conn)
        full = full_backup(engine, conn, workdir / f"full{tag}.xb")
        yield engine, conn, position, full
    finally:
        engine.destroy_instance(home, conn)


def test_an_incremental_chain_replays_from_its_newest_link(workdir: Path) -> None:
    """Full, then incremental: replay starts at the incremental's own position (rows
    before it come from the chain, not the log)."""
    with ticking_source(workdir, "4") as (engine, conn, position, full):
        with managed_session(conn) as c:
            c.execute("INSERT INTO bench.ticks VALUES (1)")
        sink = FileSink(workdir / "incr4.xb")
        try:
            incremental = dict(engine.backup(conn, sink, parent=full).metadata)
        finally:
            sink.close()
        assert incremental["binlog"] != full["binlog"]
        with managed_session(conn) as c:
            into_next_second(c)
            c.execute("INSERT INTO bench.ticks VALUES (2)")
            after_two = server_now(c)
            into_next_second(c)
            c.execute("INSERT INTO bench.ticks VALUES (3)")
        path = workdir / "batch4.bin"
        result = batch_to(engine, conn, path, position)
        second = after_two.replace(microsecond=0) + timedelta(seconds=1)
        for when, expected in ((second, [1, 2]), (None, [1, 2, 3])):
            name = f"dst4-{len(expected)}"
            with (
                (workdir / "full4.xb").open("rb") as f,
                (workdir / "incr4.xb").open("rb") as i,
                path.open("rb") as b,
            ):
                restored = engine.restore_instance(
                    workdir / name,
                    [RestoreInput(full, f), RestoreInput(incremental, i)],
                    InstanceRequest(name),
                    archive=[RestoreInput(result.metadata, b)],
                    target_time=when,
                )
            assert ticks_then_destroy(engine, workdir / name, dict(restored)) == expected


def test_xa_transactions_ddl_and_large_rows_archive_and_replay(workdir: Path) -> None:
    engine = MariaDbEngine(timeout=300)
    conn = engine.create_instance(
        workdir / "src5", InstanceRequest("src5", databases=(DatabaseSpec("bench"),))
    )
    try:
        position = engine.start_archiving(conn)
        full = full_backup(engine, conn, workdir / "full5.xb")
        with managed_session(conn) as c:
            c.execute("CREATE TABLE bench.ticks (n int PRIMARY KEY)")
            c.execute("XA START 'one'")
            c.execute("INSERT INTO bench.ticks VALUES (1)")
            c.execute("XA END 'one'")
            c.execute("XA PREPARE 'one'")
        # A batch may end between XA PREPARE and XA COMMIT: both are whole groups.
        first = batch_to(engine, conn, workdir / "batch5a.bin", position)
        with managed_session(conn) as c:
            c.execute("XA COMMIT 'one'")
            c.execute("CREATE TABLE bench.aria (n int) ENGINE=Aria")
            c.execute("INSERT INTO bench.aria VALUES (2)")
            # One row larger than the server's default max_allowed_packet (16 MiB).
            c.execute("CREATE TABLE bench.big (v longblob)")
            c.execute("SET GLOBAL max_allowed_packet = 67108864")
        with managed_session(conn) as c:
            c.execute("INSERT INTO bench.big SELECT REPEAT('x', 20000000)")
        second = batch_to(engine, conn, workdir / "batch5b.bin", first.stop)
        with (
            (workdir / "full5.xb").open("rb") as f,
            (workdir / "batch5a.bin").open("rb") as a,
            (workdir / "batch5b.bin").open("rb") as b,
        ):
            restored = engine.restore_instance(
                workdir / "dst5",
                [RestoreInput(full, f)],
                InstanceRequest("dst5"),
                archive=[RestoreInput(first.metadata, a), RestoreInput(second.metadata, b)],
                target_time=None,
            )
        with managed_session(restored) as c:
            c.execute("SELECT n FROM bench.aria")
            aria = [r[0] for r in c.fetchall()]
            c.execute("SELECT LENGTH(v), @@GLOBAL.max_allowed_packet FROM bench.big")
            big = c.fetchall()
        assert ticks_then_destroy(engine, workdir / "dst5", dict(restored)) == [1]
        assert aria == [2]
        # Replayed to between XA PREPARE and XA COMMIT: prepared, as on the source then.
        with (workdir / "full5.xb").open("rb") as f, (workdir / "batch5a.bin").open("rb") as a:
            prepared = engine.restore_instance(
                workdir / "dst6",
                [RestoreInput(full, f)],
                InstanceRequest("dst6"),
                archive=[RestoreInput(first.metadata, a)],
                target_time=None,
            )
        try:
            with managed_session(prepared) as c:
                c.execute("XA RECOVER")
                assert [r[3] for r in c.fetchall()] == [b"one"]
        finally:
            engine.destroy_instance(workdir / "dst6", prepared)
        assert big == ((20_000_000, 16 * 1024 * 1024),)  # the server's own setting is back
    finally:
        engine.destroy_instance(workdir / "src5", conn)


def test_a_running_statement_holds_the_batch_coverage_back(archived: dict[str, Any]) -> None:
    """A statement still running when the batch is cut may commit later stamped with its
    start: the batch covers no later than that start."""
    engine: MariaDbEngine = archived["engine"]
    conn = archived["conn"]
    started = threading.Event()
    with managed_session(conn) as c:
        began = server_now(c)

    def long_statement() -> None:
        with managed_session(conn) as c:
            started.set()
            c.execute("SELECT SLEEP(3)")

    runner = threading.Thread(target=long_statement)
    runner.start()
    try:
        assert started.wait(10)
        with managed_session(conn) as c:
            wait_until(lambda: processlist_has_sleep(c), "a second of the statement", timeout=10)
            c.execute("SHOW MASTER STATUS")
            name, offset = c.fetchone()[:2]
        here = binlog.encode(binlog.file_index(name), int(offset))
        result = engine.archive_batch(conn, io.BytesIO(), start=here)
        clock = datetime.fromisoformat(result.metadata["mark_time"])
        # Held back by the statement's second of running, to no earlier than its start.
        assert began <= result.archived_through <= clock - timedelta(seconds=1)
    finally:
        runner.join()


def processlist_has_sleep(cursor: Any) -> bool:
    """The sleeping statement has run for a second."""
    cursor.execute(
        "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
        "WHERE INFO LIKE 'SELECT SLEEP%' AND TIME_MS > 1000"
    )
    return bool(cursor.fetchone()[0])


def test_external_servers_are_not_archived() -> None:
    with pytest.raises(BackupError, match="managed"):
        MariaDbEngine().start_archiving({"host": "127.0.0.1", "port": 3306, "user": "x"})


@dataclasses.dataclass(frozen=True)
class Seen:
    pid: int
    ppid: int
    cmdline: str
    environ: str
    uid: int


class PeekingSource:
    """A batch's stream that, when the replay first reads it, records every process's
    command line, environment, parent and owner (the decoder and the client are started
    before the first read; it waits until both of this process's have replaced their
    ``runuser``, an exec away)."""

    def __init__(self, raw: bytes) -> None:
        self._inner = io.BytesIO(raw)
        self.seen: list[Seen] = []

    def read(self, size: int, /) -> bytes:
        if not self.seen:
            deadline = time.monotonic() + 30
            while not self._both_running() and time.monotonic() < deadline:
                time.sleep(0.01)
        return self._inner.read(size)

    def tools(self) -> list[Seen]:
        """The replay's own tools: children of the ``runuser`` this process started,
        once they run the tool (a child not yet past its exec still shows ``runuser``'s
        command line, as root)."""
        mine = {s.pid for s in self.seen if s.ppid == os.getpid()}
        return [
            s for s in self.seen if (s.ppid in mine or s.pid in mine) and "runuser" not in s.cmdline
        ]

    def _both_running(self) -> bool:
        self.seen = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                environ = (entry / "environ").read_bytes().replace(b"\0", b" ").decode()
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                uid = entry.stat().st_uid
            except (OSError, ValueError, IndexError):
                continue
            self.seen.append(Seen(int(entry.name), ppid, cmdline, environ, uid))
        tools = [s.cmdline for s in self.tools()]
        return all(any(m in c for c in tools) for m in ("mariadb-binlog", "--binary-mode"))


def test_replay_tools_run_as_the_instance_with_no_secret_in_sight(
    archived: dict[str, Any], workdir: Path
) -> None:
    engine: MariaDbEngine = archived["engine"]
    (first, path), *_ = archived["batches"]
    source = PeekingSource(path.read_bytes())
    with (workdir / "full.xb").open("rb") as full:
        restored = engine.restore_instance(
            workdir / "peek",
            [RestoreInput(archived["full"], full)],
            InstanceRequest("peek"),
            archive=[RestoreInput(first.metadata, source)],
            target_time=None,
        )
    try:
        owner = (workdir / "peek").stat().st_uid
        for marker in ("mariadb-binlog", "--binary-mode"):
            # runuser (root) starts each tool; the tool itself runs as the instance.
            uids = {s.uid for s in source.tools() if marker in s.cmdline}
            assert uids == {owner}, (marker, uids)
        secrets = [str(restored["admin_password"]), str(restored["backup_password"])]
        for seen in source.seen:
            for secret in secrets:
                assert secret not in seen.cmdline and secret not in seen.environ
    finally:
        engine.destroy_instance(workdir / "peek", restored)


def test_a_time_the_archive_does_not_reach_is_refused(
    archived: dict[str, Any], workdir: Path
) -> None:
    """Refused before anything is restored: the restore never stops short silently."""
    last = archived["batches"][-1][0].archived_through
    with pytest.raises(RestoreError, match="reaches"):
        restore(archived, workdir, "beyond", last + timedelta(seconds=5))
    engine: MariaDbEngine = archived["engine"]
    with (workdir / "full.xb").open("rb") as full, pytest.raises(RestoreError, match="no archived"):
        engine.restore_instance(
            workdir / "unarchived",
            [RestoreInput(archived["full"], full)],
            InstanceRequest("unarchived"),
            archive=[],
            target_time=last,
        )
    assert not (workdir / "beyond").exists() and not (workdir / "unarchived").exists()


def test_a_statement_committed_after_a_later_mark_is_not_replayed(workdir: Path) -> None:
    """A statement begun before the time asked for (its stamp) and committed after a batch
    was marked past that time is not replayed, though its stamp is before the time."""
    with ticking_source(workdir, "7") as (engine, conn, position, full):
        with managed_session(conn) as c:
            c.execute("INSERT INTO bench.ticks VALUES (1)")
            into_next_second(c)
            began = server_now(c)

        def long_statement() -> None:
            with managed_session(conn) as c:
                c.execute("INSERT INTO bench.ticks SELECT 2 FROM DUAL WHERE SLEEP(3) = 0")

        runner = threading.Thread(target=long_statement)
        runner.start()
        try:
            target = began.replace(microsecond=0) + timedelta(seconds=1)
            with managed_session(conn) as c:
                wait_until(lambda: server_now(c) > target, "the time asked for", timeout=10)
            first = batch_to(engine, conn, workdir / "batch7a.bin", position)
        finally:
            runner.join()
        assert datetime.fromisoformat(first.metadata["mark_time"]) > target
        second = batch_to(engine, conn, workdir / "batch7b.bin", first.stop)
        assert second.archived_through >= target

        def restore_to(name: str, when: datetime | None) -> list[int]:
            with (
                (workdir / "full7.xb").open("rb") as f,
                (workdir / "batch7a.bin").open("rb") as a,
                (workdir / "batch7b.bin").open("rb") as b,
            ):
                restored = engine.restore_instance(
                    workdir / name,
                    [RestoreInput(full, f)],
                    InstanceRequest(name),
                    archive=[RestoreInput(first.metadata, a), RestoreInput(second.metadata, b)],
                    target_time=when,
                )
            return ticks_then_destroy(engine, workdir / name, dict(restored))

        assert restore_to("dst7", target) == [1]
        assert restore_to("dst7-end", None) == [1, 2]


def test_batches_cut_short_by_their_caps_join_and_restore(workdir: Path) -> None:
    """A batch capped at a few hundred bytes ends at a transaction boundary and leaves the
    rest to the next; the batches join, only the last (which reached the end) covers a
    time, and they replay to every row."""
    with ticking_source(workdir, "8") as (engine, conn, position, full):
        with managed_session(conn) as c:
            for n in range(1, 21):
                c.execute("INSERT INTO bench.ticks VALUES (%s)", (n,))
        limits = archiver.Limits(batch_bytes=1000)
        cut: list[tuple[archiver.ArchiveBatch, bytes]] = []
        while not cut or cut[-1][0].archived_through == archiver.NOT_COVERED:
            sink = io.BytesIO()
            got = archiver.archive_batch(conn, sink, start=position, limits=limits)
            assert got.stop > position or got.archived_through != archiver.NOT_COVERED
            cut.append((got, sink.getvalue()))
            position = got.stop
            assert len(cut) < 50
        assert len(cut) > 3
        for (earlier, _), (later, _) in itertools.pairwise(cut):
            assert later.start == earlier.stop
        assert all(len(raw) < 2000 for _, raw in cut[:-1])
        with (workdir / "full8.xb").open("rb") as f:
            restored = engine.restore_instance(
                workdir / "dst8",
                [RestoreInput(full, f)],
                InstanceRequest("dst8"),
                archive=[RestoreInput(b.metadata(), io.BytesIO(raw)) for b, raw in cut],
                target_time=cut[-1][0].archived_through,
            )
        assert ticks_then_destroy(engine, workdir / "dst8", dict(restored)) == list(range(1, 21))


def test_a_statement_logged_load_data_is_refused_and_writes_nothing(workdir: Path) -> None:
    """A tenant's LOAD DATA logged as a statement carries the file's rows in the log: the
    replay refuses it by position, and no file of those rows is written anywhere."""
    rows = workdir / "rows9.csv"
    rows.write_text("".join(f"{n}\n" for n in range(100, 105)))
    tmp_before = set(Path("/tmp").iterdir())
    with ticking_source(workdir, "9") as (engine, conn, position, full):
        with managed_session(conn) as c:
            c.execute("INSERT INTO bench.ticks VALUES (1)")
        loader = pymysql.connect(
            user=str(conn["admin_user"]),
            password=str(conn["admin_password"]),
            unix_socket=str(conn["socket"]),
            autocommit=True,
            local_infile=True,
        )
        try:
            with loader.cursor() as c:
                c.execute("SET SESSION binlog_format = 'STATEMENT'")
                c.execute(f"LOAD DATA LOCAL INFILE '{rows}' INTO TABLE bench.ticks")
                c.execute("SELECT COUNT(*) FROM bench.ticks")
                assert c.fetchone()[0] == 6
        finally:
            loader.close()
        got = batch_to(engine, conn, workdir / "batch9.bin", position)
        with (
            (workdir / "full9.xb").open("rb") as f,
            (workdir / "batch9.bin").open("rb") as b,
            pytest.raises(RestoreError, match="LOAD DATA logged as a statement"),
        ):
            engine.restore_instance(
                workdir / "dst9",
                [RestoreInput(full, f)],
                InstanceRequest("dst9"),
                archive=[RestoreInput(got.metadata, b)],
                target_time=None,
            )
    assert not (workdir / "dst9").exists()
    leftovers = [p for p in set(Path("/tmp").iterdir()) - tmp_before if "SQL_LOAD" in p.name]
    assert leftovers == []
