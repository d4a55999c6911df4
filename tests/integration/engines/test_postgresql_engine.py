"""PostgresEngine against real PostgreSQL servers started in temporary directories: what
only this engine does. What every engine shares (restore equals, chains, a tampered stream
refused) is in tests/contract/test_engines.py."""

from __future__ import annotations

import copy
import io
import itertools
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import zstandard

from strongroom.engines.base import (
    DatabaseSpec,
    Engine,
    InstanceRequest,
    RestoreInput,
    UserSpec,
)
from strongroom.engines.errors import (
    BackupError,
    ExternalNotAllowedError,
    IncompatibleBackupError,
    InstanceError,
    InvalidExternalError,
)
from strongroom.engines.postgresql import PostgresEngine, cluster, filestream
from support.postgresql import (
    FileSink,
    OffsetFileSource,
    PlainServer,
    Writer,
    cleanup_homes,
    connect,
    invariant,
    pgbench_init,
    snapshot,
    stop_server,
)

SCALE = 5

_probe = PostgresEngine()
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_probe.detect() is None, reason="PostgreSQL server tools not installed"),
]


@pytest.fixture(scope="module")
def engine() -> PostgresEngine:
    return PostgresEngine(timeout=120, page_deltas=True)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    # Instance homes must be reachable by the server's OS user; pytest's tmp_path is not.
    base = Path(tempfile.mkdtemp(prefix="strongroom-pgtest-"))
    os.chmod(base, 0o711)
    yield base
    cleanup_homes(base)
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def source(engine: PostgresEngine, workdir: Path) -> Iterator[dict[str, Any]]:
    request = InstanceRequest(
        "source",
        databases=(DatabaseSpec("bench"),),
        users=(UserSpec("app", "app-secret-pw", ("bench",)),),
    )
    conn = engine.create_instance(workdir / "source", request)
    pgbench_init(conn, SCALE)
    yield conn
    engine.destroy_instance(workdir / "source", conn)


def _backup(
    engine: PostgresEngine,
    conn: dict[str, Any],
    path: Path,
    parent: dict[str, Any] | None = None,
    chain: list[tuple[dict[str, Any], Path]] | None = None,
    **sink_kw: Any,
) -> tuple[dict[str, Any], int]:
    """With ``chain`` (the parent's chain, full first, as written), the engine may store
    changed pages as deltas against it."""
    sink = FileSink(path, **sink_kw)
    opened: list[OffsetFileSource] = []

    def parent_chain() -> list[RestoreInput]:
        opened.extend(OffsetFileSource(p) for _, p in chain or [])
        return [RestoreInput(m, fh) for (m, _), fh in zip(chain or [], opened, strict=True)]

    try:
        result = engine.backup(
            conn, sink, parent=parent, parent_chain=parent_chain if chain else None
        )
    finally:
        sink.close()
        for fh in opened:
            fh.close()
    assert result.incremental is (parent is not None)
    return result.metadata, sink.size


def _restore(
    engine: PostgresEngine,
    home: Path,
    links: list[tuple[dict[str, Any], Path]],
    request: InstanceRequest | None = None,
    *,
    by_segments: bool = False,
) -> dict[str, Any]:
    files: list[Any] = [
        OffsetFileSource(path) if by_segments else path.open("rb") for _, path in links
    ]
    try:
        chain = [RestoreInput(meta, fh) for (meta, _), fh in zip(links, files, strict=True)]
        return engine.restore_instance(home, chain, request or InstanceRequest(home.name))
    finally:
        for fh in files:
            fh.close()


@pytest.fixture(scope="module")
def quiet_full(
    engine: PostgresEngine, source: dict[str, Any], workdir: Path
) -> tuple[dict[str, Any], Path, dict[str, tuple[int, str]]]:
    """A full backup taken with no concurrent writes, and the source's state then."""
    before = snapshot(source)
    meta, _ = _backup(engine, source, workdir / "quiet-full.tar")
    return meta, workdir / "quiet-full.tar", before


def test_engine_protocol_and_detect(engine: PostgresEngine) -> None:
    assert isinstance(engine, Engine)
    info = engine.detect()
    assert info is not None
    assert info.datastore == "postgresql"
    assert info.version.isdigit() and info.extra["server_version"].startswith(info.version)
    assert PostgresEngine(bin_dir=Path("/nonexistent")).detect() is None


def test_managed_instance_view_size_and_users(
    engine: PostgresEngine, source: dict[str, Any]
) -> None:
    view = engine.public_view(source)
    assert view["databases"] == ["bench"] and view["users"] == ["app"]
    assert source["password"] not in repr(view)
    assert (engine.data_size(source) or 0) > 50 * 1024 * 1024
    with psycopg.connect(
        host="127.0.0.1",
        port=source["port"],
        user="app",
        password="app-secret-pw",
        dbname="bench",
        autocommit=True,
    ) as c:
        c.execute("CREATE TABLE app_owned (id int)")
        c.execute("DROP TABLE app_owned")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(
            host="127.0.0.1", port=source["port"], user="app", password="wrong", dbname="bench"
        ).close()


def test_full_backup_restores_identical_data(
    engine: PostgresEngine, workdir: Path, source: dict[str, Any], quiet_full: Any
) -> None:
    meta, path, before = quiet_full
    assert meta["method"] == "pgdata-files"  # a managed server's files are read directly
    assert meta["server_major"] == engine.major
    for key in ("start_lsn", "stop_lsn", "timeline", "system_identifier", "server_version"):
        assert meta[key]
    request = InstanceRequest("copy", users=(UserSpec("reader", "reader-pw", ("bench",)),))
    restored = _restore(engine, workdir / "restored-full", [(meta, path)], request)
    try:
        assert snapshot(restored) == before
        assert restored["password"] != source["password"]
        with psycopg.connect(
            host="127.0.0.1",
            port=restored["port"],
            user=restored["superuser"],
            password=restored["password"],
            dbname="bench",
            autocommit=True,
        ) as c:
            assert c.execute("SELECT pg_is_in_recovery()").fetchone() == (False,)
            # the restored server is a new timeline, writable
            c.execute("CREATE TABLE after_restore (id int)")
        with psycopg.connect(
            host="127.0.0.1",
            port=restored["port"],
            user="reader",
            password="reader-pw",
            dbname="bench",
        ) as c:
            assert c.execute("SELECT count(*) FROM pgbench_branches").fetchone() == (SCALE,)
        assert "reader" in restored["users"] and "app" in restored["users"]
    finally:
        engine.destroy_instance(workdir / "restored-full", restored)
    assert not (workdir / "restored-full").exists()


def test_full_backup_is_consistent_under_concurrent_writes(
    engine: PostgresEngine, source: dict[str, Any], workdir: Path
) -> None:
    writer = Writer(source, SCALE)
    writer.start()
    marks: dict[str, int] = {}
    try:
        writer.wait_for(10)

        def during_backup() -> None:
            # pg_basebackup is blocked on its stdout now, mid-stream: the backup has
            # started and cannot have stopped. Let the writer commit more meanwhile.
            marks["at_first_chunk"] = writer.commits
            marks["released"] = writer.wait_for(writer.commits + 50)

        meta, size = _backup(
            engine, source, workdir / "busy-full.tar", on_first_write=during_backup
        )
        marks["after"] = writer.wait_for(writer.commits + 1)
    finally:
        writer.stop()
    assert marks["released"] >= marks["at_first_chunk"] + 50
    restored = _restore(engine, workdir / "restored-busy", [(meta, workdir / "busy-full.tar")])
    try:
        sums = invariant(restored)
        print(
            f"\nconcurrent full backup: {size} bytes, history rows {sums['history_rows']}, "
            f"writer commits during backup >= {marks['released'] - marks['at_first_chunk']}"
        )
        assert sums["accounts"] == sums["tellers"] == sums["branches"] == sums["history"]
        # every commit made while the backup ran is in it
        assert sums["history_rows"] >= marks["released"]
    finally:
        engine.destroy_instance(workdir / "restored-busy", restored)


def test_incremental_chain_is_consistent_under_concurrent_writes(
    engine: PostgresEngine, source: dict[str, Any], workdir: Path
) -> None:
    """Pages change while the full and the incremental copy them: the chain restores
    to a consistent state holding every commit made before the incremental began."""
    history_before = invariant(source)["history_rows"]
    writer = Writer(source, SCALE)
    writer.start()
    marks: dict[str, int] = {}
    try:
        writer.wait_for(10)
        full_meta, _ = _backup(
            engine,
            source,
            workdir / "busy-chain-0",
            on_first_write=lambda: writer.wait_for(writer.commits + 30),
        )
        writer.wait_for(writer.commits + 50)

        def during_incremental() -> None:
            marks["at_first_write"] = writer.commits
            marks["released"] = writer.wait_for(writer.commits + 50)

        inc_meta, _ = _backup(
            engine,
            source,
            workdir / "busy-chain-1",
            parent=full_meta,
            on_first_write=during_incremental,
        )
    finally:
        writer.stop()
    assert inc_meta["method"] == "pgdata-pages" and inc_meta["changed_pages"] > 0
    restored = _restore(
        engine,
        workdir / "restored-busy-chain",
        [(full_meta, workdir / "busy-chain-0"), (inc_meta, workdir / "busy-chain-1")],
    )
    try:
        sums = invariant(restored)
        assert sums["accounts"] == sums["tellers"] == sums["branches"] == sums["history"]
        assert sums["history_rows"] >= history_before + marks["at_first_write"]
    finally:
        engine.destroy_instance(workdir / "restored-busy-chain", restored)


def _stored(path: Path) -> int:
    """Bytes of the stream after zstd level 1, as the pipeline stores it."""
    out = io.BytesIO()
    with path.open("rb") as fh:
        zstandard.ZstdCompressor(level=1).copy_stream(fh, out)
    return out.tell()


def _states(conn: dict[str, Any], databases: tuple[str, ...]) -> dict[str, Any]:
    return {db: snapshot(conn, db) for db in databases}


def test_incremental_chain(
    engine: PostgresEngine,
    source: dict[str, Any],
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each prefix of a four-link chain restores the state it recorded; the streams are
    cut into small segments, laid out on several threads (other tests read them whole)."""
    monkeypatch.setattr(filestream, "SEGMENT_BYTES", 256 * 1024)
    dbs: tuple[str, ...] = ("bench",)
    states = [_states(source, dbs)]
    full_meta, _ = _backup(engine, source, workdir / "chain-0")
    with connect(source) as c:
        # ~1% of pgbench_accounts rows
        updated = c.execute(
            "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid <= %s", (1000 * SCALE,)
        ).rowcount
    assert updated == SCALE * 1000
    states.append(_states(source, dbs))
    links = [(full_meta, workdir / "chain-0")]
    inc1_meta, _ = _backup(engine, source, workdir / "chain-1", parent=full_meta, chain=links)
    links.append((inc1_meta, workdir / "chain-1"))
    with connect(source) as c:
        c.execute(
            "CREATE TABLE extra AS SELECT g AS id, md5(g::text) AS v "
            "FROM generate_series(1, 20000) g"
        )
        c.execute("DELETE FROM pgbench_history WHERE tid % 2 = 0")
        c.execute("UPDATE pgbench_branches SET filler = 'changed'")
        c.execute("TRUNCATE pgbench_tellers")
        # the table's tail pages are removed: the file shrinks
        c.execute("DELETE FROM pgbench_accounts WHERE aid > %s", (95000 * SCALE,))
        c.execute("VACUUM pgbench_accounts")
    with connect(source, "postgres") as c:
        c.execute("CREATE DATABASE second")
        # a file-level copy: its pages keep the template's old LSNs
        c.execute("CREATE DATABASE copied TEMPLATE bench STRATEGY FILE_COPY")
    dbs = ("bench", "copied")
    states.append(_states(source, dbs))
    inc2_meta, _ = _backup(engine, source, workdir / "chain-2", parent=inc1_meta, chain=links)
    links.append((inc2_meta, workdir / "chain-2"))
    with connect(source) as c:
        # a rewrite into a new relation file
        c.execute("VACUUM FULL pgbench_accounts")
        # every page of a table changes by a few bytes: deltas on deltas
        c.execute("UPDATE extra SET v = upper(v) WHERE id % 40 = 0")
    with connect(source, "copied") as c:
        c.execute("UPDATE pgbench_branches SET bbalance = bbalance + 1")
    states.append(_states(source, dbs))
    inc3_meta, _ = _backup(engine, source, workdir / "chain-3", parent=inc2_meta, chain=links)
    full_size, inc1_size = _stored(workdir / "chain-0"), _stored(workdir / "chain-1")
    print(
        f"\nfull backup: {full_size} bytes stored; incremental after updating {updated} of "
        f"{SCALE * 100000} pgbench_accounts rows (1%): {inc1_size} bytes "
        f"({100 * inc1_size / full_size:.2f}% of the full), "
        f"{inc1_meta['changed_pages']} pages"
    )
    metas = [full_meta, inc1_meta, inc2_meta, inc3_meta]
    assert all(len(meta["segment_offsets"]) > 2 for meta in metas)
    for parent, child in itertools.pairwise(metas):
        assert child["method"] == "pgdata-pages"
        assert child["threshold_lsn"] == parent["start_lsn"]
        assert child["page_format"] == "realigned-deltas" and child["delta_pages"] > 0
    assert inc1_size < full_size / 20

    links = [(meta, workdir / f"chain-{n}") for n, meta in enumerate(metas)]
    for n in range(len(links)):
        home = workdir / f"restored-chain-{n}"
        restored = _restore(engine, home, links[: n + 1], by_segments=True)
        try:
            databases = tuple(db for db in states[n])
            assert _states(restored, databases) == states[n], f"chain up to link {n} differs"
            if n >= 2:
                assert {"second", "copied"} <= set(restored["databases"])
        finally:
            engine.destroy_instance(home, restored)


def test_incremental_refuses_unusable_parent(
    engine: PostgresEngine, source: dict[str, Any], quiet_full: Any, workdir: Path
) -> None:
    meta = quiet_full[0]
    other = dict(meta, system_identifier="12345")
    with pytest.raises(BackupError, match="another server"):
        engine.backup(source, FileSink(workdir / "x1"), parent=other)
    with pytest.raises(BackupError, match="timeline changed"):
        engine.backup(source, FileSink(workdir / "x2"), parent=dict(meta, timeline=7))
    with pytest.raises(BackupError, match="take a full backup"):
        engine.backup(source, FileSink(workdir / "x3"), parent=dict(meta, method="wal-range"))
    # a parent from the server's future (e.g. a server restored from an older backup)
    with pytest.raises(BackupError, match="after the server's current WAL position"):
        engine.backup(source, FileSink(workdir / "x4"), parent=dict(meta, start_lsn="FF/0"))


def test_check_restorable_other_major(
    engine: PostgresEngine, quiet_full: Any, workdir: Path
) -> None:
    meta = copy.deepcopy(quiet_full[0])
    other = str(int(engine.major) - 1)
    meta["server_major"] = other
    with pytest.raises(IncompatibleBackupError) as info:
        engine.check_restorable(meta)
    assert str(info.value) == f"backup is from PostgreSQL {other}, this host runs {engine.major}"
    with pytest.raises(IncompatibleBackupError):
        _restore(engine, workdir / "restored-old", [(meta, quiet_full[1])])
    assert not (workdir / "restored-old").exists()
    engine.check_restorable(quiet_full[0])


def test_server_stopped_mid_backup(engine: PostgresEngine, workdir: Path) -> None:
    home = workdir / "victim"
    conn = engine.create_instance(home, InstanceRequest("victim"))
    try:
        started = time.monotonic()
        with pytest.raises(BackupError) as info:
            _backup(
                engine,
                conn,
                workdir / "victim.tar",
                on_first_write=lambda: stop_server(conn["data_dir"]),
            )
        print(f"\nstopped mid-backup: {info.value}")
        assert re.search(r"connection|terminat", str(info.value))
        assert time.monotonic() - started < 60
        assert conn["password"] not in str(info.value)
        with pytest.raises(BackupError):
            engine.backup(conn, FileSink(workdir / "victim2.tar"), parent=None)
    finally:
        engine.destroy_instance(home, conn)


def test_stop_start_keeps_or_moves_port(engine: PostgresEngine, workdir: Path) -> None:
    home = workdir / "restartable"
    conn = engine.create_instance(home, InstanceRequest("r", databases=(DatabaseSpec("d"),)))
    try:
        assert engine.start_instance(home, conn) == conn  # already running
        engine.stop_instance(home, conn)
        engine.stop_instance(home, conn)  # idempotent
        again = engine.start_instance(home, conn)
        # Kept, unless something else (another test worker) bound it while it was stopped.
        assert again["port"] == conn["port"] or not cluster.port_is_free("127.0.0.1", conn["port"])
        engine.stop_instance(home, again)
        with socket.socket() as squatter:
            squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            squatter.bind(("127.0.0.1", conn["port"]))
            squatter.listen()
            moved = engine.start_instance(home, again)
            assert moved["port"] != conn["port"]
        with connect(moved, "d") as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        engine.destroy_instance(home, conn)
    assert not home.exists()
    engine.destroy_instance(home, conn)  # missing server is fine


def test_long_home_path_puts_the_socket_in_a_short_directory(
    engine: PostgresEngine, workdir: Path
) -> None:
    # a home whose home/run/.s.PGSQL.<port> would not fit in a socket address
    parent = workdir / ("deep-" + "x" * 60)
    parent.mkdir(mode=0o711)
    home = parent / "instance-0123456789abcdef"
    assert len(str(home / "run" / ".s.PGSQL.65535")) > 107
    conn = engine.create_instance(home, InstanceRequest("deep", databases=(DatabaseSpec("d"),)))
    socket_dir = Path(conn["socket_dir"])
    try:
        assert not socket_dir.is_relative_to(home)
        assert len(str(socket_dir / ".s.PGSQL.65535")) <= 107
        assert socket_dir.stat().st_mode & 0o777 == 0o700
        with connect(conn, "d") as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
        # after a reboot the directory is gone; starting again makes it again
        engine.stop_instance(home, conn)
        shutil.rmtree(socket_dir)
        again = engine.start_instance(home, conn)
        with connect(again, "d") as c:
            assert c.execute("SELECT 1").fetchone() == (1,)
    finally:
        engine.destroy_instance(home, conn)
    assert not home.exists() and not socket_dir.exists()


def test_socket_directory_taken_by_someone_else_is_refused(
    engine: PostgresEngine, workdir: Path
) -> None:
    parent = workdir / ("squat-" + "y" * 60)
    parent.mkdir(mode=0o711)
    home = parent / "instance-0123456789abcdef"
    socket_dir = cluster.socket_dir_for(home)
    assert not socket_dir.is_relative_to(home)
    socket_dir.mkdir(mode=0o777)
    try:
        os.chmod(socket_dir, 0o777)
        if os.geteuid() != 0:
            pytest.skip("needs another OS user to own the directory")
        with pytest.raises(InstanceError, match="not a private directory"):
            engine.create_instance(home, InstanceRequest("squat"))
        assert not home.exists()
        assert socket_dir.is_dir()  # not ours: left alone
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def external(workdir: Path) -> Iterator[PlainServer]:
    server = PlainServer(workdir / "external")
    server.start()
    with server.admin() as c:
        c.execute("CREATE ROLE backup_role LOGIN REPLICATION PASSWORD 'repl-pw'")
        c.execute("CREATE ROLE plain_role LOGIN PASSWORD 'plain-pw'")
        c.execute("CREATE DATABASE bench")
    yield server
    server.stop()


def test_external_requires_allowed_host(external: PlainServer) -> None:
    params = {
        "host": "127.0.0.1",
        "port": external.port,
        "user": "backup_role",
        "password": "repl-pw",
        "database": "postgres",
    }
    with pytest.raises(ExternalNotAllowedError, match="not allowed"):
        PostgresEngine().register_external(params, project_id="p1")
    with pytest.raises(ExternalNotAllowedError, match="localhost"):
        PostgresEngine(allowed_hosts=["127.0.0.1"]).register_external(
            dict(params, host="localhost"), project_id="p1"
        )


def test_external_role_checks(external: PlainServer) -> None:
    eng = PostgresEngine(allowed_hosts=["127.0.0.1"])
    base = {"host": "127.0.0.1", "port": external.port, "database": "postgres"}
    with pytest.raises(InvalidExternalError) as info:
        eng.register_external(dict(base, user="plain_role", password="plain-pw"), project_id="p1")
    assert str(info.value) == "role plain_role lacks the REPLICATION attribute"
    with pytest.raises(InvalidExternalError) as info:
        eng.register_external(
            dict(base, user="backup_role", password="wrong-pw-123"), project_id="p1"
        )
    assert "wrong-pw-123" not in str(info.value)
    assert "password authentication failed" in str(info.value)
    # Bound but not listening: connections are refused, and no other process can take it.
    with socket.socket() as closed, pytest.raises(InvalidExternalError, match="cannot connect"):
        closed.bind(("127.0.0.1", 0))
        closed_port = closed.getsockname()[1]
        eng.register_external(
            dict(base, port=closed_port, user="backup_role", password="repl-pw"), project_id="p1"
        )


def test_external_backup_and_restore(
    engine: PostgresEngine, external: PlainServer, workdir: Path
) -> None:
    eng = PostgresEngine(allowed_hosts=["127.0.0.1"], timeout=120)
    conn = eng.register_external(
        {
            "host": "127.0.0.1",
            "port": external.port,
            "user": "backup_role",
            "password": "repl-pw",
            "database": "bench",
        },
        project_id="p1",
    )
    assert "repl-pw" not in repr(eng.public_view(conn))
    admin_view = {
        "managed": False,
        "host": "127.0.0.1",
        "port": external.port,
        "user": "admin",
        "password": external.superuser_password,
    }
    pgbench_init(admin_view, 1)
    state0 = snapshot(admin_view)
    full_meta, full_size = _backup(eng, conn, workdir / "ext-0.tar")
    with external.admin("bench") as c:
        c.execute("UPDATE pgbench_accounts SET abalance = 3 WHERE aid <= 1000")
    state1 = snapshot(admin_view)
    inc_meta, inc_size = _backup(eng, conn, workdir / "ext-1.wal", parent=full_meta)
    print(f"\nexternal: full {full_size} bytes, incremental {inc_size} bytes")
    assert inc_size < full_size / 10
    home = workdir / "restored-external"
    restored = _restore(
        engine, home, [(full_meta, workdir / "ext-0.tar"), (inc_meta, workdir / "ext-1.wal")]
    )
    try:
        assert restored["superuser"] == "admin"
        assert snapshot(restored) == state1 != state0
    finally:
        engine.destroy_instance(home, restored)
    eng.destroy_instance(workdir / "unused", conn)  # drops the external's slot
    with external.admin() as c:
        assert c.execute("SELECT count(*) FROM pg_replication_slots").fetchone() == (0,)


def test_external_with_data_dir_reads_its_files(external: PlainServer, workdir: Path) -> None:
    params = {
        "host": "127.0.0.1",
        "port": external.port,
        "user": "admin",
        "password": external.superuser_password,
        "database": "postgres",
        "data_dir": str(external.data),
    }
    not_allowed = PostgresEngine(allowed_hosts=["127.0.0.1"], timeout=120)
    with pytest.raises(ExternalNotAllowedError, match="data directory"):
        not_allowed.register_external(params, project_id="p1")
    eng = PostgresEngine(
        allowed_hosts=["127.0.0.1"], allowed_data_dirs=[external.home], timeout=120
    )
    with pytest.raises(InvalidExternalError, match="not the server's data directory"):
        eng.register_external(dict(params, data_dir=str(external.home)), project_id="p1")
    with pytest.raises(InvalidExternalError, match="pg_backup_start"):
        eng.register_external(dict(params, user="backup_role", password="repl-pw"), project_id="p1")
    conn = eng.register_external(params, project_id="p1")
    assert eng.public_view(conn)["data_dir"] == str(external.data.resolve())
    with external.admin() as c:
        c.execute("CREATE DATABASE files_db")
    with external.admin("files_db") as c:
        c.execute(
            "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g"
        )
    full_meta, _ = _backup(eng, conn, workdir / "extf-0")
    with external.admin("files_db") as c:
        c.execute("UPDATE t SET v = 'changed' WHERE id <= 500")
    state = snapshot(conn, "files_db")
    inc_meta, _ = _backup(eng, conn, workdir / "extf-1", parent=full_meta)
    assert (full_meta["method"], inc_meta["method"]) == ("pgdata-files", "pgdata-pages")
    assert inc_meta["changed_pages"] < 100
    home = workdir / "restored-external-files"
    restored = _restore(
        eng, home, [(full_meta, workdir / "extf-0"), (inc_meta, workdir / "extf-1")]
    )
    try:
        assert snapshot(restored, "files_db") == state
    finally:
        eng.destroy_instance(home, restored)


def test_no_leftover_threads() -> None:
    assert not [t for t in threading.enumerate() if isinstance(t, Writer) and t.is_alive()]


def test_a_spread_update_is_stored_as_deltas_and_restores_row_for_row(
    engine: PostgresEngine, source: dict[str, Any], workdir: Path
) -> None:
    """5 % of the rows, every 20th, so nearly every page of the table changes by a tuple:
    an incremental of deltas stores a fraction of one of whole pages, and restores the
    same rows, alone after the full and under a further delta link."""
    full_meta, _ = _backup(engine, source, workdir / "spread-0")
    chain = [(full_meta, workdir / "spread-0")]
    with connect(source) as c:
        c.execute("UPDATE pgbench_accounts SET abalance = abalance + 3 WHERE aid % 20 = 1")
        c.execute("CHECKPOINT")
    state1 = snapshot(source)
    whole_meta, _ = _backup(engine, source, workdir / "spread-whole", parent=full_meta)
    default = PostgresEngine(timeout=120)  # the engine alone: whole pages
    off = workdir / "spread-off"
    default_meta, _ = _backup(default, source, off, parent=full_meta, chain=chain)
    assert "page_format" not in default_meta
    delta_meta, _ = _backup(engine, source, workdir / "spread-1", parent=full_meta, chain=chain)
    chain.append((delta_meta, workdir / "spread-1"))
    assert "page_format" not in whole_meta and delta_meta["page_format"] == "realigned-deltas"
    assert delta_meta["delta_pages"] > delta_meta["changed_pages"] * 0.8
    whole, deltas = _stored(workdir / "spread-whole"), _stored(workdir / "spread-1")
    print(f"\nspread update: whole pages {whole} bytes stored, deltas {deltas} bytes")
    assert deltas < whole * 0.5
    with connect(source) as c:
        c.execute("UPDATE pgbench_accounts SET abalance = abalance - 1 WHERE aid % 20 = 2")
    state2 = snapshot(source)
    delta2_meta, _ = _backup(engine, source, workdir / "spread-2", parent=delta_meta, chain=chain)
    chain.append((delta2_meta, workdir / "spread-2"))
    for n, expected in ((2, state1), (3, state2)):
        home = workdir / f"restored-spread-{n}"
        restored = _restore(engine, home, chain[:n], by_segments=n == 3)
        try:
            assert snapshot(restored) == expected, f"chain up to link {n - 1} differs"
        finally:
            engine.destroy_instance(home, restored)


def test_pages_pruned_since_the_parent_are_stored_as_realigned_deltas(
    engine: PostgresEngine, source: dict[str, Any], workdir: Path
) -> None:
    """Rows of md5 text, every 20th updated before the full and another 20th after it:
    the second update prunes every page (its tuples move), so XOR deltas do not pay and
    realigned ones do; the chain restores the same rows."""
    with connect(source) as c:
        c.execute(
            "CREATE TABLE moved (id int PRIMARY KEY, v text) "
            "WITH (fillfactor = 100, autovacuum_enabled = off)"
        )
        c.execute(
            "INSERT INTO moved SELECT g, md5(g::text) || md5((-g)::text) "
            "FROM generate_series(1, 60000) g"
        )
        c.execute("UPDATE moved SET v = upper(v) WHERE id % 20 = 0")
        c.execute("CHECKPOINT")
    full_meta, _ = _backup(engine, source, workdir / "moved-0")
    chain = [(full_meta, workdir / "moved-0")]
    with connect(source) as c:
        c.execute("UPDATE moved SET v = upper(v) WHERE id % 20 = 1")
        c.execute("CHECKPOINT")
    expected = snapshot(source)
    whole_meta, _ = _backup(engine, source, workdir / "moved-whole", parent=full_meta)
    meta, _ = _backup(engine, source, workdir / "moved-1", parent=full_meta, chain=chain)
    chain.append((meta, workdir / "moved-1"))
    whole, deltas = _stored(workdir / "moved-whole"), _stored(workdir / "moved-1")
    print(f"\npruned pages: whole {whole} bytes stored, realigned deltas {deltas} bytes")
    assert "page_format" not in whole_meta and meta["page_format"] == "realigned-deltas"
    assert meta["realigned_pages"] > meta["changed_pages"] * 0.5
    assert deltas < whole * 0.3
    home = workdir / "restored-moved"
    restored = _restore(engine, home, chain, by_segments=True)
    try:
        assert snapshot(restored) == expected
    finally:
        engine.destroy_instance(home, restored)
