"""SqliteEngine against real files and real sqlite3 connections (no server needed): what
only this engine does; what every engine shares is in tests/contract/test_engines.py."""

from __future__ import annotations

import io
import json
import os
import sqlite3
import struct
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Callable
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest

from strongroom.engines.base import Engine, InstanceRequest, Metadata, RestoreInput
from strongroom.engines.errors import (
    BackupError,
    ExternalNotAllowedError,
    IncompatibleBackupError,
    InstanceError,
    InvalidExternalError,
    RestoreError,
)
from strongroom.engines.sqlite import SqliteEngine
from strongroom.engines.sqlite.files import FileLocation, open_database
from strongroom.engines.sqlite.pagereader import PageReadError, open_beside
from strongroom.engines.sqlite.snapshot import Snapshot

pytestmark = pytest.mark.integration

READ_LIMIT = 1 << 20
WAIT = 30.0
REQUEST = InstanceRequest(name="restored")


# -- helpers ---------------------------------------------------------------------------
class MemorySink:
    def __init__(self, on_first_write: Callable[[], None] | None = None) -> None:
        self.parts: list[bytes] = []
        self._on_first_write = on_first_write

    def write(self, data: bytes, /) -> int:
        if self._on_first_write is not None:
            hook, self._on_first_write = self._on_first_write, None
            hook()
        self.parts.append(bytes(data))
        return len(data)

    def getvalue(self) -> bytes:
        return b"".join(self.parts)


class DiscardSink:
    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.size += len(data)
        return len(data)


class BoundedSource:
    """A stream whose ``read(n)`` must be asked for a bounded, positive ``n``."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.sizes: list[int] = []

    def read(self, size: int, /) -> bytes:
        assert 0 < size <= READ_LIMIT, f"unbounded read({size})"
        self.sizes.append(size)
        return self._data.read(size)


def open_db(path: Path, *, mode: str | None = None) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60)
    if mode is not None:
        conn.execute(f"PRAGMA journal_mode={mode}")
    return conn


def fill(conn: sqlite3.Connection, rows: int, *, blob: int = 1000, start: int = 1) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, v BLOB, n INT)")
    conn.execute("CREATE INDEX IF NOT EXISTS items_n ON items (n)")
    conn.execute(
        "WITH RECURSIVE s(i) AS (SELECT ? UNION ALL SELECT i + 1 FROM s WHERE i < ?) "
        "INSERT INTO items (id, v, n) SELECT i, randomblob(?), abs(random()) % 1000 FROM s",
        (start, start + rows - 1, blob),
    )


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name"
            )
        ]
        return {t: conn.execute(f'SELECT * FROM "{t}" ORDER BY rowid').fetchall() for t in tables}
    finally:
        conn.close()


def integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def restore(
    engine: SqliteEngine, home: Path, links: list[tuple[Metadata, bytes]]
) -> tuple[Path, list[BoundedSource]]:
    sources = [BoundedSource(data) for _, data in links]
    chain = [RestoreInput(meta, src) for (meta, _), src in zip(links, sources, strict=True)]
    conn = engine.restore_instance(home, chain, REQUEST)
    return Path(conn["path"]), sources


def backup(
    engine: SqliteEngine, conn: dict[str, Any], parent: Metadata | None = None
) -> tuple[Metadata, bytes]:
    sink = MemorySink()
    result = engine.backup(conn, sink, parent=parent)
    assert result.incremental is (parent is not None)
    return result.metadata, sink.getvalue()


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    root = tmp_path / "allowed"
    root.mkdir()
    return root


@pytest.fixture
def engine(allowed: Path) -> SqliteEngine:
    return SqliteEngine(allowed_roots=[allowed])


# -- basics ----------------------------------------------------------------------------
def test_engine_satisfies_protocol_and_detects_sqlite3(engine: SqliteEngine) -> None:
    assert isinstance(engine, Engine)
    info = engine.detect()
    assert info is not None
    assert (info.datastore, info.version) == ("sqlite", "3")
    assert info.extra["library_version"] == sqlite3.sqlite_version


def test_managed_instance_lifecycle(engine: SqliteEngine, tmp_path: Path) -> None:
    home = tmp_path / "home"
    request = InstanceRequest(name="app")
    conn = engine.create_instance(home, request)
    path = Path(conn["path"])
    assert path.parent == home.resolve() and path.suffix == ".db"
    db = open_db(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("CREATE TABLE t (x)")
    db.close()
    assert engine.start_instance(home, conn) == conn
    engine.stop_instance(home, conn)
    assert engine.public_view(conn) == {"path": str(path)}
    size = engine.data_size(conn)
    assert size is not None and size >= path.stat().st_size > 0
    with pytest.raises(InstanceError):
        engine.create_instance(home, request)
    engine.destroy_instance(home, conn)
    assert not home.exists()
    engine.destroy_instance(home, conn)  # a missing instance is not an error
    with pytest.raises(InstanceError):
        engine.start_instance(home, conn)


# -- private files ---------------------------------------------------------------------
def _modes(home: Path) -> dict[str, int]:
    found = {".": home.stat().st_mode & 0o777}
    found.update({p.name: p.stat().st_mode & 0o777 for p in home.iterdir()})
    return found


@pytest.fixture
def open_umask() -> Any:
    """The most permissive umask: the engine must not rely on the service's."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("open_umask")
def test_managed_files_are_private(engine: SqliteEngine, allowed: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir(mode=0o755)  # as the service makes it
    conn = engine.create_instance(home, InstanceRequest(name="app"))
    db = open_db(Path(conn["path"]))
    fill(db, 50)  # -wal and -shm exist while it is open
    assert _modes(home) == {
        ".": 0o700,
        "data.db": 0o600,
        "data.db-wal": 0o600,
        "data.db-shm": 0o600,
    }
    source = _rows_db(allowed / "src.db", "a")
    meta, stream = backup(engine, engine.register_external({"path": str(source)}, project_id="p"))
    db.close()
    restored_home = tmp_path / "restored"
    restored_home.mkdir(mode=0o777)
    restored, _ = restore(engine, restored_home, [(meta, stream)])
    check = open_db(restored)
    check.execute("SELECT count(*) FROM owner").fetchone()
    assert _modes(restored_home) == {
        ".": 0o700,
        "data.db": 0o600,
        "data.db-wal": 0o600,
        "data.db-shm": 0o600,
    }
    check.close()


def test_restore_never_writes_through_a_planted_link(
    engine: SqliteEngine, small_backup: tuple[Metadata, bytes], tmp_path: Path
) -> None:
    outside = tmp_path / "outside.db"
    outside.write_bytes(b"keep")
    home = tmp_path / "home"
    home.mkdir()
    (home / "data.db").symlink_to(outside)
    with pytest.raises(RestoreError, match="already holds"):
        restore(engine, home, [small_backup])
    assert outside.read_bytes() == b"keep"
    assert [p.name for p in home.iterdir()] == ["data.db"]


def test_managed_backup_checks_the_file_it_created(engine: SqliteEngine, tmp_path: Path) -> None:
    home = tmp_path / "home"
    conn = engine.create_instance(home, InstanceRequest(name="app"))
    db = open_db(Path(conn["path"]))
    fill(db, 20)
    db.close()
    meta, stream = backup(engine, conn)
    assert dump(restore(engine, tmp_path / "copy", [(meta, stream)])[0]) == dump(Path(conn["path"]))
    os.replace(_rows_db(tmp_path / "other" / "data.db", "x"), Path(conn["path"]))
    with pytest.raises(BackupError, match="replaced"):
        engine.backup(conn, MemorySink(), parent=None)


# -- consistency under concurrent writers --------------------------------------------
class PairWriter(threading.Thread):
    """Commits transactions that each insert a pair of rows and bump the totals row."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path = path
        self.committed = 0
        self.stop = threading.Event()
        self.cond = threading.Condition()
        self.attempting = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = open_db(self.path)
            conn.execute("PRAGMA wal_autocheckpoint=20")  # checkpoints run during the backup
            conn.execute("PRAGMA synchronous=NORMAL")
            while not self.stop.is_set():
                txn = self.committed + 1
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(
                    "INSERT INTO pairs (txn, side, pad) VALUES (?, 0, randomblob(300)), "
                    "(?, 1, randomblob(300))",
                    (txn, txn),
                )
                conn.execute(
                    "UPDATE pairs SET pad = randomblob(300) WHERE id = "
                    "(SELECT id FROM pairs WHERE txn = 0 ORDER BY random() LIMIT 1)"
                )
                conn.execute("UPDATE totals SET txns = txns + 1, rows = rows + 2")
                with self.cond:
                    self.attempting = txn
                    self.cond.notify_all()
                conn.execute("COMMIT")
                with self.cond:
                    self.committed = txn
                    self.cond.notify_all()
            conn.close()
        except BaseException as exc:
            self.error = exc
            with self.cond:
                self.cond.notify_all()

    def wait_for_commit_attempt(self) -> bool:
        """Wait until a transaction has reached COMMIT and is not through it yet."""
        with self.cond:
            return self.cond.wait_for(lambda: self.attempting > self.committed, WAIT)

    def wait_for(self, count: int) -> bool:
        with self.cond:
            done = self.cond.wait_for(
                lambda: self.committed >= count or self.error is not None, WAIT
            )
            return done and self.error is None


@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_full_backup_is_one_point_in_time_under_concurrent_writer(
    engine: SqliteEngine, allowed: Path, tmp_path: Path, mode: str
) -> None:
    path = allowed / "live.db"
    db = open_db(path, mode=mode)
    db.execute("CREATE TABLE pairs (id INTEGER PRIMARY KEY, txn INT, side INT, pad BLOB)")
    db.execute("CREATE TABLE totals (txns INT, rows INT)")
    db.execute("INSERT INTO totals VALUES (0, 0)")
    db.execute(
        "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < 6000) "
        "INSERT INTO pairs (txn, side, pad) SELECT 0, 0, randomblob(300) FROM s"
    )
    db.close()
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    writer = PairWriter(path)
    writer.start()
    assert writer.wait_for(20)

    def during_backup() -> None:
        if mode == "wal":  # writers keep committing while the snapshot is read
            assert writer.wait_for(writer.committed + 50), writer.error
        else:  # a writer reaches COMMIT and has to wait for the backup's read lock
            assert writer.wait_for_commit_attempt()

    before = writer.committed
    sink = MemorySink(on_first_write=during_backup)
    try:
        result = engine.backup(conn, sink, parent=None)
        after = writer.committed
    finally:
        writer.stop.set()
        writer.join(WAIT)
    assert writer.error is None
    restored, _ = restore(engine, tmp_path / "home", [(result.metadata, sink.getvalue())])

    assert integrity(restored) == "ok"
    check = sqlite3.connect(restored)
    txns, rows = check.execute("SELECT txns, rows FROM totals").fetchone()
    pair_rows, distinct_txns, bad_txns = check.execute(
        "SELECT count(*), count(DISTINCT txn), "
        "(SELECT count(*) FROM (SELECT txn FROM pairs WHERE txn > 0 GROUP BY txn "
        "HAVING count(*) != 2 OR sum(side) != 1)) FROM pairs WHERE txn > 0"
    ).fetchone()
    check.close()
    assert (rows, txns) == (pair_rows, distinct_txns)
    assert bad_txns == 0
    assert before <= txns <= after
    if mode == "wal":
        assert txns < after - 40  # the snapshot excludes what committed while it was read


def test_wal_snapshot_survives_wal_restart_during_backup(
    engine: SqliteEngine, allowed: Path, tmp_path: Path
) -> None:
    """Every frame was checkpointed when the backup began; a writer then restarts the WAL
    and overwrites the frames the snapshot's page map points at."""
    path = allowed / "restart.db"
    db = open_db(path, mode="wal")
    db.execute("PRAGMA wal_autocheckpoint=0")
    fill(db, 4000)
    db.execute("UPDATE items SET v = randomblob(1000) WHERE id % 3 = 0")
    busy, log_frames, backfilled = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert busy == 0 and log_frames == backfilled > 0
    expected = dump(path)
    conn = engine.register_external({"path": str(path)}, project_id="p1")

    def overwrite_wal() -> None:
        db.execute("UPDATE items SET v = randomblob(1000), n = -1")

    sink = MemorySink(on_first_write=overwrite_wal)
    result = engine.backup(conn, sink, parent=None)
    db.close()
    stats = result.metadata["snapshot"]
    assert stats["wal_restarted"] or stats["reread_from_db"] > 0
    restored, _ = restore(engine, tmp_path / "home", [(result.metadata, sink.getvalue())])
    assert integrity(restored) == "ok"
    assert dump(restored) == expected


# -- incremental chains ----------------------------------------------------------------
@pytest.mark.parametrize("mode", ["wal", "delete"])
def test_chain_restores_each_point_in_time(
    engine: SqliteEngine, allowed: Path, tmp_path: Path, mode: str
) -> None:
    path = allowed / "chain.db"
    db = open_db(path, mode=mode)
    fill(db, 3000)
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    links = [backup(engine, conn)]
    states = [dump(path)]

    db.execute("UPDATE items SET v = randomblob(900), n = n + 1 WHERE id % 17 = 0")
    db.execute("DELETE FROM items WHERE id BETWEEN 100 AND 400")
    fill(db, 200, start=5000)
    links.append(backup(engine, conn, links[-1][0]))
    states.append(dump(path))

    db.execute("DELETE FROM items WHERE id % 5 != 0")
    db.execute("VACUUM")
    links.append(backup(engine, conn, links[-1][0]))
    states.append(dump(path))
    assert links[2][0]["page_count"] < links[1][0]["page_count"] // 2

    fill(db, 1500, blob=1500, start=20000)
    db.execute("CREATE TABLE extra (k TEXT PRIMARY KEY, v TEXT)")
    db.execute("INSERT INTO extra VALUES ('a', 'b')")
    links.append(backup(engine, conn, links[-1][0]))
    states.append(dump(path))
    assert links[3][0]["page_count"] > links[2][0]["page_count"]
    db.close()

    for upto, state in enumerate(states):
        restored, sources = restore(engine, tmp_path / f"home{upto}", links[: upto + 1])
        assert integrity(restored) == "ok"
        assert dump(restored) == state
        assert all(src.read(1) == b"" for src in sources)  # each stream read to its end
        assert max(max(src.sizes) for src in sources) <= READ_LIMIT


def test_incremental_after_small_change_is_small(engine: SqliteEngine, allowed: Path) -> None:
    path = allowed / "big.db"
    db = open_db(path, mode="wal")
    fill(db, 8000)  # about 8 MB
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    full_meta, full = backup(engine, conn)
    db.execute("UPDATE items SET v = randomblob(1000) WHERE id BETWEEN 4000 AND 4079")  # 1 %
    db.close()
    incr_meta, incr = backup(engine, conn, full_meta)
    assert len(incr) < 0.1 * len(full)
    assert incr_meta["pages_written"] < 0.05 * incr_meta["page_count"]
    assert incr_meta["parent_sha256"] == full_meta["sha256"]
    # compact metadata: about 8 bytes per page, base64-encoded
    assert len(json.dumps(incr_meta)) < 12 * incr_meta["page_count"] + 2048


def test_incremental_refuses_a_parent_with_another_page_size(
    engine: SqliteEngine, allowed: Path
) -> None:
    path = allowed / "pages.db"
    db = open_db(path, mode="delete")
    fill(db, 300)
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    parent, _ = backup(engine, conn)
    db.execute("PRAGMA page_size = 8192")
    db.execute("VACUUM")
    db.close()
    with pytest.raises(BackupError, match="page size"):
        engine.backup(conn, MemorySink(), parent=parent)
    with pytest.raises(BackupError):
        engine.backup(conn, MemorySink(), parent={**parent, "format_version": 99})
    assert backup(engine, conn)[0]["page_size"] == 8192


# -- restore refusals -------------------------------------------------------------------
HEADER_SIZE = 56
TRAILER_SIZE = 48


def _page_records(stream: bytes, page_size: int) -> list[tuple[int, bytes]]:
    body = stream[HEADER_SIZE:-TRAILER_SIZE]
    step = 4 + page_size
    return [
        (struct.unpack(">I", body[i : i + 4])[0], body[i + 4 : i + step])
        for i in range(0, len(body), step)
    ]


@pytest.fixture
def small_backup(engine: SqliteEngine, allowed: Path) -> tuple[Metadata, bytes]:
    path = allowed / "small.db"
    db = open_db(path, mode="delete")
    fill(db, 200)
    db.close()
    return backup(engine, engine.register_external({"path": str(path)}, project_id="p1"))


def _assert_refused(
    engine: SqliteEngine, home: Path, links: list[tuple[Metadata, bytes]], match: str
) -> None:
    with pytest.raises(RestoreError, match=match):
        restore(engine, home, links)
    assert not home.exists() or list(home.iterdir()) == []


def test_restore_refuses_a_corrupted_page(
    engine: SqliteEngine, small_backup: tuple[Metadata, bytes], tmp_path: Path
) -> None:
    meta, stream = small_backup
    damaged = bytearray(stream)
    damaged[HEADER_SIZE + 4 + 2 * (4 + meta["page_size"]) + 100] ^= 0xFF
    _assert_refused(engine, tmp_path / "home", [(meta, bytes(damaged))], "checksum")


def test_restore_refuses_an_image_failing_integrity_check(
    engine: SqliteEngine, small_backup: tuple[Metadata, bytes], tmp_path: Path
) -> None:
    """A consistent stream (checksums match) of a damaged database is still refused."""
    meta, stream = small_backup
    page_size = meta["page_size"]
    pages = _page_records(stream, page_size)
    assert pages[1][0] == 2  # the first table's root page
    pages[1] = (2, b"\x0d" + bytes(page_size - 1))  # a leaf claiming garbage cells
    image_sha = sha256(b"".join(page for _, page in pages)).digest()
    body = b"".join(struct.pack(">I", n) + page for n, page in pages)
    trailer = struct.pack(">II32s8s", 0, len(pages), image_sha, b"SRSQLEND")
    forged = stream[:HEADER_SIZE] + body + trailer
    forged_meta = {**meta, "sha256": image_sha.hex()}
    _assert_refused(engine, tmp_path / "home", [(forged_meta, forged)], "integrity")


def test_restore_refuses_links_out_of_order(
    engine: SqliteEngine, allowed: Path, tmp_path: Path
) -> None:
    path = allowed / "order.db"
    db = open_db(path, mode="wal")
    fill(db, 200)
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    full = backup(engine, conn)
    db.execute("UPDATE items SET n = n + 1")
    one = backup(engine, conn, full[0])
    db.execute("UPDATE items SET n = n + 1")
    db.close()
    two = backup(engine, conn, one[0])
    _assert_refused(engine, tmp_path / "a", [full, two], "not taken on top")
    _assert_refused(engine, tmp_path / "b", [one], "does not start with a full")
    # the stream of another link under this link's metadata
    _assert_refused(engine, tmp_path / "c", [full, (one[0], two[1])], "does not match")


def test_unknown_format_version_is_not_restorable(
    engine: SqliteEngine, small_backup: tuple[Metadata, bytes], tmp_path: Path
) -> None:
    meta, stream = small_backup
    engine.check_restorable(meta)
    future = {**meta, "format_version": 2}
    with pytest.raises(IncompatibleBackupError):
        engine.check_restorable(future)
    with pytest.raises(IncompatibleBackupError):
        engine.check_restorable({"format": "something-else"})
    with pytest.raises(IncompatibleBackupError):
        restore(engine, tmp_path / "home", [(future, stream)])


# -- external registration -------------------------------------------------------------
def _make_db(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = open_db(path)
    db.execute("CREATE TABLE t (x)")
    db.close()
    return path


def test_external_registration_disabled_without_roots(tmp_path: Path) -> None:
    path = _make_db(tmp_path / "a.db")
    with pytest.raises(ExternalNotAllowedError, match="allows no"):
        SqliteEngine().register_external({"path": str(path)}, project_id="p1")


def test_external_registration_inside_roots(
    engine: SqliteEngine, allowed: Path, tmp_path: Path
) -> None:
    path = _make_db(allowed / "sub" / "ok.db")
    assert engine.register_external({"path": str(path)}, project_id="p1")["path"] == str(
        path.resolve()
    )
    link = allowed / "link.db"
    link.symlink_to(path)
    assert engine.register_external({"path": str(link)}, project_id="p1")["path"] == str(
        path.resolve()
    )
    dotted = allowed / "sub" / ".." / "sub" / "ok.db"
    assert engine.register_external({"path": str(dotted)}, project_id="p1")["path"] == str(
        path.resolve()
    )


@pytest.mark.parametrize("how", ["outside", "dotdot", "symlink", "symlinked_dir", "missing"])
def test_external_registration_refuses_escapes(
    engine: SqliteEngine, allowed: Path, tmp_path: Path, how: str
) -> None:
    outside = _make_db(tmp_path / "outside" / "secret.db")
    if how == "outside":
        raw = str(outside)
    elif how == "dotdot":
        raw = f"{allowed}/../outside/secret.db"
    elif how == "symlink":
        (allowed / "innocent.db").symlink_to(outside)
        raw = str(allowed / "innocent.db")
    elif how == "symlinked_dir":
        (allowed / "dir").symlink_to(outside.parent, target_is_directory=True)
        raw = str(allowed / "dir" / "secret.db")
    else:  # a missing file outside must not be told apart from an existing one
        raw = str(tmp_path / "outside" / "nothing.db")
    with pytest.raises(ExternalNotAllowedError):
        engine.register_external({"path": raw}, project_id="p1")


@pytest.mark.parametrize("how", ["relative", "nul", "missing", "not_db", "directory", "empty"])
def test_external_registration_refuses_invalid_files(
    engine: SqliteEngine, allowed: Path, how: str
) -> None:
    params: dict[str, Any] = {"path": str(allowed / "missing.db")}
    if how == "relative":
        params = {"path": "allowed/x.db"}
    elif how == "nul":
        params = {"path": f"{allowed}/x\x00.db"}
    elif how == "not_db":
        (allowed / "text.db").write_bytes(b"hello, this is not a database" * 100)
        params = {"path": str(allowed / "text.db")}
    elif how == "directory":
        (allowed / "d.db").mkdir()
        params = {"path": str(allowed / "d.db")}
    elif how == "empty":
        (allowed / "empty.db").touch()
        params = {"path": str(allowed / "empty.db")}
    with pytest.raises(InvalidExternalError):
        engine.register_external(params, project_id="p1")


def test_backup_refuses_a_path_swapped_for_a_symlink(
    engine: SqliteEngine, allowed: Path, tmp_path: Path
) -> None:
    path = _make_db(allowed / "swap.db")
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    outside = _make_db(tmp_path / "outside" / "other.db")
    path.unlink()
    path.symlink_to(outside)
    with pytest.raises(BackupError, match="symbolic link"):
        engine.backup(conn, MemorySink(), parent=None)


def _rows_db(path: Path, label: str, rows: int = 300, mode: str = "wal") -> Path:
    """A database whose rows all say ``label`` (the same size whatever the label)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = open_db(path, mode=mode)
    db.execute("CREATE TABLE owner (id INTEGER PRIMARY KEY, who TEXT, pad BLOB)")
    db.executemany("INSERT INTO owner (who, pad) VALUES (?, zeroblob(200))", [(label,)] * rows)
    db.close()
    return path


def test_external_connection_records_root_and_file_identity(allowed: Path, tmp_path: Path) -> None:
    inner = allowed / "team"
    path = _rows_db(inner / "app" / "a.db", "a")
    engine = SqliteEngine(allowed_roots=[allowed, inner])
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    st = path.stat()
    assert conn == {"path": str(path), "root": str(inner), "dev": st.st_dev, "ino": st.st_ino}
    assert engine.external_identity(conn) == f"sqlite:{st.st_dev}:{st.st_ino}"


def test_backup_of_a_connection_without_root_walks_from_the_top(
    engine: SqliteEngine, allowed: Path, tmp_path: Path
) -> None:
    path = _rows_db(allowed / "old" / "a.db", "a")
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    del conn["root"]  # registered before roots were recorded
    meta, stream = backup(engine, conn)
    restored, _ = restore(engine, tmp_path / "home", [(meta, stream)])
    assert dump(restored) == dump(path)
    (allowed / "old").rename(allowed / "old.real")
    (allowed / "old").symlink_to(allowed / "old.real")
    with pytest.raises(BackupError, match="symbolic link"):
        engine.backup(conn, MemorySink(), parent=None)


def test_backup_fails_when_the_registered_file_is_replaced(
    engine: SqliteEngine, allowed: Path
) -> None:
    path = _rows_db(allowed / "app" / "a.db", "a")
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    other = _rows_db(allowed / "elsewhere" / "a.db", "other")
    os.replace(other, path)  # same name, another file
    with pytest.raises(BackupError, match="the registered file was replaced"):
        engine.backup(conn, MemorySink(), parent=None)
    assert engine.data_size(conn) is None


def test_backup_fails_when_the_directory_becomes_a_symlink(
    engine: SqliteEngine, allowed: Path, tmp_path: Path
) -> None:
    path = _rows_db(allowed / "app2" / "a.db", "a")
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    victim = _rows_db(tmp_path / "victim" / "a.db", "victim")
    (allowed / "app2").rename(allowed / "app2.real")
    (allowed / "app2").symlink_to(victim.parent, target_is_directory=True)
    with pytest.raises(BackupError, match="symbolic link"):
        engine.backup(conn, MemorySink(), parent=None)
    assert engine.data_size(conn) is None


def test_backup_fails_without_hanging_when_a_fifo_stands_in_place(
    engine: SqliteEngine, allowed: Path
) -> None:
    path = _rows_db(allowed / "app" / "a.db", "a")
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    path.unlink()
    os.mkfifo(path)
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            engine.backup(conn, MemorySink(), parent=None)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(WAIT)
    if worker.is_alive():  # unblock it: a writer lets a blocked reader go
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("the backup hung on a FIFO")
    assert len(outcome) == 1 and isinstance(outcome[0], BackupError), outcome
    assert "no longer a regular file" in str(outcome[0])


class HeldOpen:
    """Another process keeping a WAL database open (so its -wal and -shm stay)."""

    def __init__(self, path: Path) -> None:
        code = (
            "import sqlite3, sys\n"
            "c = sqlite3.connect(sys.argv[1])\n"
            "c.execute('SELECT count(*) FROM sqlite_schema').fetchone()\n"
            "print('open', flush=True)\n"
            "sys.stdin.read()\n"
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"open\n"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(WAIT)


@pytest.mark.parametrize("mode", ["delete", "wal"])
@pytest.mark.parametrize("swap", ["symlink", "directory"])
def test_snapshot_fails_when_sqlite_is_led_to_another_file(
    engine: SqliteEngine, allowed: Path, tmp_path: Path, swap: str, mode: str
) -> None:
    """The directory is swapped after the engine holds it and before SQLite opens the file
    by name: SQLite reaches the other database (same size), the page reader still reads the
    registered one, and the backup fails instead of using an unlocked snapshot."""

    path = _rows_db(allowed / "app2" / "a.db", "a", mode=mode)
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    other = _rows_db(tmp_path / "victim" / "a.db", "b", mode=mode)
    assert other.stat().st_size == path.stat().st_size
    location = FileLocation(conn["root"], conn["path"])
    held = HeldOpen(path) if mode == "wal" else None
    try:
        _swap_under_snapshot(location, conn, allowed, other, swap)
    finally:
        if held is not None:
            held.close()


def _swap_under_snapshot(
    location: FileLocation, conn: dict[str, Any], allowed: Path, other: Path, swap: str
) -> None:

    with open_database(location, (conn["dev"], conn["ino"])) as files:
        (allowed / "app2").rename(allowed / "app2.real")
        if swap == "symlink":
            (allowed / "app2").symlink_to(other.parent, target_is_directory=True)
        else:
            (allowed / "app2").mkdir()
            os.link(other, allowed / "app2" / "a.db")
        with (
            pytest.raises(
                BackupError, match=r"not the registered file|path to the registered file changed"
            ),
            Snapshot(files, busy_timeout=5) as snap,
        ):
            list(snap.chunks())


@pytest.mark.parametrize("suffix", ["-wal", "-shm", "-journal"])
@pytest.mark.parametrize("plant", ["symlink", "hardlink", "fifo"])
def test_backup_refuses_planted_companions(
    engine: SqliteEngine, allowed: Path, tmp_path: Path, suffix: str, plant: str
) -> None:
    """SQLite opens -wal, -shm and -journal by name, as root: a link planted there would
    lead it to roll back or checkpoint through it into another file."""
    path = _rows_db(allowed / "app" / "a.db", "a")
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    victim = _rows_db(tmp_path / "victim" / "b.db", "b")
    victim_bytes, a_bytes = victim.read_bytes(), path.read_bytes()
    companion = Path(f"{path}{suffix}")
    companion.unlink(missing_ok=True)  # a read-only connection leaves -wal and -shm behind
    if plant == "symlink":
        companion.symlink_to(victim)
    elif plant == "hardlink":
        os.link(victim, companion)
    else:
        os.mkfifo(companion)
    with pytest.raises(BackupError, match=f"{suffix} file (is not a regular file|has other names)"):
        engine.backup(conn, MemorySink(), parent=None)
    with pytest.raises(InvalidExternalError, match=suffix):
        engine.register_external({"path": str(path)}, project_id="p1")
    assert victim.read_bytes() == victim_bytes and path.read_bytes() == a_bytes
    companion.unlink()
    assert backup(engine, conn)[0]["page_count"] > 0


def test_page_reader_opens_nothing_but_regular_files_beside_it(tmp_path: Path) -> None:

    (tmp_path / "a.db").write_bytes(b"x")
    (tmp_path / "link.db").symlink_to(tmp_path / "a.db")
    os.mkfifo(tmp_path / "fifo.db")
    dir_fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        st = (tmp_path / "a.db").stat()
        os.close(open_beside(dir_fd, "a.db", (st.st_dev, st.st_ino)))
        for name, reason in [
            ("link.db", "symbolic link"),
            ("missing.db", "missing"),
            ("fifo.db", "not a regular file"),
            ("../a.db", "not a file name"),
            ("", "not a file name"),
        ]:
            with pytest.raises(PageReadError, match=reason):
                open_beside(dir_fd, name)
        with pytest.raises(PageReadError, match="replaced"):
            open_beside(dir_fd, "a.db", (st.st_dev, st.st_ino + 1))
    finally:
        os.close(dir_fd)


# -- memory ----------------------------------------------------------------------------
def test_backup_of_100_mb_keeps_memory_bounded(engine: SqliteEngine, allowed: Path) -> None:
    path = allowed / "large.db"
    db = open_db(path, mode="wal")
    fill(db, 100_000)
    db.close()
    size = os.path.getsize(path)
    assert size > 100_000_000
    conn = engine.register_external({"path": str(path)}, project_id="p1")
    sink = DiscardSink()
    tracemalloc.start()
    try:
        result = engine.backup(conn, sink, parent=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sink.size > size
    assert result.metadata["page_count"] * result.metadata["page_size"] == size
    assert peak < 20 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB"
