"""MariaDbEngine against real mariadbd servers the engine creates in private directories.

The source server holds InnoDB tables with real data. A writer thread runs transactions
that keep two invariants (the sum of all balances is constant; the ledger has exactly as
many rows as the counter says); backups taken while it runs are checked for them after
restore. Exact comparisons (row counts and ``CHECKSUM TABLE`` of every table) use backups
taken with the writer stopped. What every engine shares (restore equals, chains, a tampered
stream refused) is in tests/contract/test_engines.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from strongroom.engines import process
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
    RestoreError,
)
from strongroom.engines.mariadb import MariaDbEngine, accounts
from support.mariadb import remove_os_users_under

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

ROWS = 50_000
ACCOUNTS = 100
START_BALANCE = 1_000
APP_USER = "alice"
APP_PASSWORD = "alice-Secret-1"
OVERLAP_TRANSACTIONS = 25
WAIT = 60.0
MUST_RUN_ENV = "STRONGROOM_TEST_MUST_RUN"


# -- helpers ------------------------------------------------------------------------------------
def admin(conn: dict[str, Any]) -> pymysql.connections.Connection:
    return pymysql.connect(
        unix_socket=conn["socket"],
        user=conn["admin_user"],
        password=conn["admin_password"],
        autocommit=True,
    )


def app_connection(conn: dict[str, Any]) -> pymysql.connections.Connection:
    """The request's user over TCP, as an application would connect."""
    return pymysql.connect(
        host=conn["host"],
        port=conn["port"],
        user=APP_USER,
        password=APP_PASSWORD,
        database="app",
        autocommit=True,
    )


def query(conn: dict[str, Any], sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    db = admin(conn)
    try:
        with db.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        db.close()


def snapshot(conn: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """Row count and CHECKSUM TABLE of every table in every user database."""
    db = admin(conn)
    result: dict[str, tuple[int, int]] = {}
    try:
        with db.cursor() as cur:
            cur.execute(
                "SELECT table_schema, table_name FROM information_schema.TABLES "
                "WHERE table_schema NOT IN "
                "('mysql', 'information_schema', 'performance_schema', 'sys') "
                "ORDER BY 1, 2"
            )
            for schema, table in cur.fetchall():
                name = f"`{schema}`.`{table}`"
                cur.execute(f"SELECT COUNT(*) FROM {name}")
                count = int(cur.fetchone()[0])
                cur.execute(f"CHECKSUM TABLE {name}")
                result[f"{schema}.{table}"] = (count, int(cur.fetchone()[1]))
    finally:
        db.close()
    return result


def force_checkpoint(conn: dict[str, Any]) -> None:
    """Flush every dirty page so the next backup's checkpoint LSN is current (a busy
    server gets there by itself; a freshly loaded test server needs a push)."""
    db = admin(conn)
    try:
        with db.cursor() as cur:
            cur.execute("SELECT @@innodb_max_dirty_pages_pct, @@innodb_max_dirty_pages_pct_lwm")
            pct, lwm = cur.fetchone()
            cur.execute("SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0.001")
            cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
            deadline = time.monotonic() + WAIT
            try:
                while True:
                    cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_checkpoint_age'")
                    if int(cur.fetchone()[1]) < 4096:
                        break
                    assert time.monotonic() < deadline, "InnoDB never checkpointed"
                    time.sleep(0.05)
            finally:
                cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = %s", (pct,))
                cur.execute("SET GLOBAL innodb_max_dirty_pages_pct_lwm = %s", (lwm,))
    finally:
        db.close()


@contextlib.contextmanager
def scratch_made(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Path]]:
    """The scratch directories this process makes meanwhile. Not a listing of the temporary
    directory: other tests running at the same time (another worker, another run on this
    machine) make and remove their own there."""
    made: list[Path] = []
    original = tempfile.mkdtemp

    def spy(*args: Any, **kwargs: Any) -> str:
        path = original(*args, **kwargs)
        made.append(Path(path))
        return path

    monkeypatch.setattr(tempfile, "mkdtemp", spy)
    yield made
    monkeypatch.setattr(tempfile, "mkdtemp", original)


def server_processes(home: Path) -> list[int]:
    """mariadbd processes (not zombies) whose command line mentions ``home``."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if "mariadbd" in cmdline and str(home) in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


class FileSink:
    """Backup stream into a file, counting bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle = path.open("wb")
        self.size = 0

    def write(self, data: bytes, /) -> int:
        self.size += len(data)
        return self.handle.write(data)

    def close(self) -> None:
        self.handle.close()


class FileSource:
    def __init__(self, path: Path) -> None:
        self.handle = path.open("rb")

    def read(self, size: int, /) -> bytes:
        return self.handle.read(size)


class HookSink(FileSink):
    """Calls ``hook`` once, on the first chunk of the stream (the backup is running)."""

    def __init__(self, path: Path, hook: Callable[[], None]) -> None:
        super().__init__(path)
        self.hook: Callable[[], None] | None = hook

    def write(self, data: bytes, /) -> int:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        return super().write(data)


class Writer(threading.Thread):
    """Transfers between accounts, each with a ledger row, a counter bump, a new item
    and an updated item, in one transaction."""

    def __init__(self, conn: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.conn = conn
        self.stop_event = threading.Event()
        self.cond = threading.Condition()
        self.committed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            db = app_connection(self.conn)
            db.autocommit(False)
            with db.cursor() as cur:
                while not self.stop_event.is_set():
                    a, b = rng.sample(range(1, ACCOUNTS + 1), 2)
                    amount = rng.randint(1, 50)
                    cur.execute(
                        "UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, a)
                    )
                    cur.execute(
                        "UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, b)
                    )
                    cur.execute(
                        "INSERT INTO ledger (src, dst, amount) VALUES (%s, %s, %s)",
                        (a, b, amount),
                    )
                    cur.execute("UPDATE counter SET n = n + 1 WHERE id = 1")
                    cur.execute(
                        "INSERT INTO items (grp, val, n) VALUES (%s, REPEAT('w', 120), 0)",
                        (amount,),
                    )
                    cur.execute("UPDATE items SET n = n + 1 WHERE id = %s", (rng.randint(1, ROWS),))
                    db.commit()
                    with self.cond:
                        self.committed += 1
                        self.cond.notify_all()
            db.close()
        except BaseException as exc:
            self.error = exc
            with self.cond:
                self.cond.notify_all()

    def wait_for(self, count: int) -> None:
        with self.cond:
            ok = self.cond.wait_for(
                lambda: self.committed >= count or self.error is not None, timeout=WAIT
            )
        assert self.error is None, f"writer failed: {self.error!r}"
        assert ok, "the writer made no progress"

    def finish(self) -> int:
        self.stop_event.set()
        self.join(WAIT)
        assert not self.is_alive()
        assert self.error is None, f"writer failed: {self.error!r}"
        return self.committed


def load_source(conn: dict[str, Any]) -> None:
    db = app_connection(conn)
    with db.cursor() as cur:
        cur.execute(
            "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, grp INT NOT NULL, "
            "val VARCHAR(200) NOT NULL, n INT NOT NULL, KEY (grp)) ENGINE=InnoDB"
        )
        cur.execute(
            "INSERT INTO items (grp, val, n) SELECT seq % 97, "
            "CONCAT(REPEAT(CHAR(97 + seq % 26), 100), seq), 0 FROM seq_1_to_50000"
        )
        cur.execute("CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL)")
        cur.execute(f"INSERT INTO accounts SELECT seq, {START_BALANCE} FROM seq_1_to_{ACCOUNTS}")
        cur.execute(
            "CREATE TABLE ledger (id BIGINT AUTO_INCREMENT PRIMARY KEY, src INT, dst INT, "
            "amount INT)"
        )
        cur.execute("CREATE TABLE counter (id INT PRIMARY KEY, n BIGINT NOT NULL)")
        cur.execute("INSERT INTO counter VALUES (1, 0)")
    db.close()


def assert_invariants(conn: dict[str, Any]) -> tuple[int, int]:
    db = app_connection(conn)
    with db.cursor() as cur:
        cur.execute("SELECT SUM(balance), COUNT(*) FROM accounts")
        total, accounts = cur.fetchone()
        cur.execute("SELECT COUNT(*) FROM ledger")
        ledger = int(cur.fetchone()[0])
        cur.execute("SELECT n FROM counter WHERE id = 1")
        counter = int(cur.fetchone()[0])
        cur.execute("SELECT COUNT(*) FROM items")
        items = int(cur.fetchone()[0])
    db.close()
    assert accounts == ACCOUNTS
    assert int(total) == ACCOUNTS * START_BALANCE
    assert ledger == counter
    assert items == ROWS + counter
    return ledger, items


# -- fixtures ------------------------------------------------------------------------------------
class Lab:
    """Homes under one directory the server's user can reach; everything is destroyed
    at the end."""

    def __init__(self, engine: MariaDbEngine) -> None:
        self.engine = engine
        self.base = Path(tempfile.mkdtemp(prefix="sr-mdb-"))
        os.chmod(self.base, 0o711)
        self.instances: list[tuple[Path, dict[str, Any]]] = []
        self.counter = 0

    def home(self, name: str) -> Path:
        self.counter += 1
        return self.base / f"{name}-{self.counter}"

    def create(self, name: str, request: InstanceRequest) -> tuple[Path, dict[str, Any]]:
        home = self.home(name)
        conn = self.engine.create_instance(home, request)
        self.instances.append((home, conn))
        return home, conn

    def restore(
        self, name: str, chain: list[tuple[dict[str, Any], Path]]
    ) -> tuple[Path, dict[str, Any]]:
        home = self.home(name)
        links = [RestoreInput(meta, FileSource(path)) for meta, path in chain]
        conn = self.engine.restore_instance(home, links, InstanceRequest(name))
        self.instances.append((home, conn))
        return home, conn

    def backup(
        self, conn: dict[str, Any], name: str, parent: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], Path, float]:
        path = self.base / f"{name}.xb"
        sink = FileSink(path)
        started = time.monotonic()
        try:
            result = self.engine.backup(conn, sink, parent=parent)
        finally:
            sink.close()
        assert result.incremental is (parent is not None)
        return result.metadata, path, time.monotonic() - started

    def close(self) -> None:
        for home, conn in reversed(self.instances):
            with contextlib.suppress(Exception):
                self.engine.destroy_instance(home, conn)
        remove_os_users_under(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


REQUEST = InstanceRequest(
    "source",
    databases=(DatabaseSpec("app"), DatabaseSpec("empty_db")),
    users=(UserSpec(APP_USER, APP_PASSWORD, ("app",)),),
)


@pytest.fixture(scope="module")
def engine() -> MariaDbEngine:
    engine = MariaDbEngine()
    if engine.detect() is None:
        reason = "MariaDB server or mariabackup is not installed"
        if "mariadb" in os.environ.get(MUST_RUN_ENV, "").split(","):
            pytest.fail(f"mariadb is listed in {MUST_RUN_ENV} but unavailable: {reason}")
        pytest.skip(reason)
    return engine


@pytest.fixture(scope="module")
def lab(engine: MariaDbEngine) -> Iterator[Lab]:
    lab = Lab(engine)
    yield lab
    lab.close()


@pytest.fixture(scope="module")
def source(lab: Lab) -> tuple[Path, dict[str, Any]]:
    home, conn = lab.create("source", REQUEST)
    load_source(conn)
    force_checkpoint(conn)
    return home, conn


@pytest.fixture(scope="module")
def quiet_full(
    lab: Lab, source: tuple[Path, dict[str, Any]]
) -> tuple[dict[str, Any], Path, dict[str, tuple[int, int]], str]:
    """A full backup taken with no writes running, and the source as of that backup."""
    _, conn = source
    expected = snapshot(conn)
    gtid = query(conn, "SELECT @@gtid_binlog_pos")[0][0]
    meta, path, elapsed = lab.backup(conn, "quiet-full")
    print(f"\nfull backup: {path.stat().st_size / 1e6:.1f} MB in {elapsed:.2f} s")
    return meta, path, expected, gtid


# -- tests ---------------------------------------------------------------------------------------
def test_detect_reports_installed_series(engine: MariaDbEngine) -> None:
    assert isinstance(engine, Engine)
    info = engine.detect()
    assert info is not None
    out = subprocess.run(["mariadbd", "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"Ver (\d+)\.(\d+)\.", out.stdout)
    assert match is not None
    assert info.datastore == "mariadb"
    assert info.version == f"{match[1]}.{match[2]}"
    assert str(info.extra["server_version"]).startswith(info.version + ".")


def test_managed_instance_lifecycle(
    engine: MariaDbEngine, lab: Lab, source: tuple[Path, dict[str, Any]]
) -> None:
    home, conn = source
    view = engine.public_view(conn)
    assert set(view) == {"host", "port", "users", "databases"}
    assert view["users"] == [{"name": APP_USER, "host": "%", "databases": ["app"]}]
    assert "app" in view["databases"]
    assert "password" not in repr(view).lower()
    assert conn["admin_password"] not in repr(view)
    # The server runs as the unprivileged user and the request's objects exist.
    pids = server_processes(home)
    assert len(pids) == 1
    if os.geteuid() == 0:
        assert os.stat(f"/proc/{pids[0]}").st_uid == os.stat(home / "data").st_uid != 0
    cmdline = Path(f"/proc/{pids[0]}/cmdline").read_bytes()
    for secret in (conn["admin_password"], conn["backup_password"]):
        assert secret.encode() not in cmdline
    assert ("empty_db",) in query(conn, "SHOW DATABASES")
    assert list((home / "private").iterdir()) == []  # the init file is gone
    size = engine.data_size(conn)
    assert size is not None and size > 1_000_000
    # Idempotent start, then stop and start again on the same data.
    assert engine.start_instance(home, conn)["port"] == conn["port"]
    engine.stop_instance(home, conn)
    assert server_processes(home) == []
    engine.stop_instance(home, conn)  # stopping a stopped server is fine
    restarted = engine.start_instance(home, conn)
    conn.update(restarted)
    assert len(server_processes(home)) == 1
    assert query(conn, "SELECT COUNT(*) FROM app.items")[0][0] == ROWS


def test_full_backup_restores_exactly(
    engine: MariaDbEngine,
    lab: Lab,
    source: tuple[Path, dict[str, Any]],
    quiet_full: tuple[dict[str, Any], Path, dict[str, tuple[int, int]], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, source_conn = source
    meta, path, expected, gtid = quiet_full
    assert meta["datastore"] == "mariadb" and meta["backup_type"] == "full"
    assert meta["version"] == engine.detect().version  # type: ignore[union-attr]
    assert meta["from_lsn"] == 0 < meta["to_lsn"] <= meta["last_lsn"]
    assert meta["binlog"]["file"].startswith("mariadb-bin.")
    assert meta["binlog"]["position"] > 0
    assert meta["binlog"]["gtid"] == gtid
    engine.check_restorable(meta)

    # Record every tool command line: no secret may appear in one.
    argvs: list[list[str]] = []
    for name in ("run", "stream_in", "stream_out"):
        original = getattr(process, name)

        def spy(argv: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            argvs.append([str(a) for a in argv])
            return _original(argv, *args, **kwargs)

        monkeypatch.setattr(process, name, spy)

    with scratch_made(monkeypatch) as scratch:
        home, conn = lab.restore("restored-full", [(meta, path)])
    assert snapshot(conn) == expected
    assert any("--prepare" in argv for argv in argvs)
    secrets_ = [conn["admin_password"], conn["backup_password"], source_conn["backup_password"]]
    for argv in argvs:
        for secret in secrets_:
            assert all(secret not in arg for arg in argv)
    # Own credentials, the request's user carried over, no scratch left behind.
    assert conn["admin_password"] != source_conn["admin_password"]
    assert conn["backup_password"] != source_conn["backup_password"]
    assert conn["port"] != source_conn["port"]
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(
            unix_socket=conn["socket"],
            user=source_conn["admin_user"],
            password=source_conn["admin_password"],
        )
    assert engine.public_view(conn)["users"] == [
        {"name": APP_USER, "host": "%", "databases": ["app"]}
    ]
    app_connection(conn).close()
    assert not (home / "restore").exists()
    assert list((home / "private").iterdir()) == []
    assert not [path for path in scratch if path.exists()]
    # The restored server is a managed instance like any other: it can be backed up.
    meta2, _, _ = lab.backup(conn, "restored-full-again")
    assert meta2["to_lsn"] >= meta["to_lsn"]


def test_backup_under_concurrent_writes_is_consistent(
    lab: Lab, source: tuple[Path, dict[str, Any]]
) -> None:
    _, conn = source
    writer = Writer(conn)
    writer.start()
    try:
        writer.wait_for(1)
        seen: dict[str, int] = {}

        def overlap() -> None:
            # The stream has started: let the writer commit more before it goes on.
            seen["at_start"] = writer.committed
            writer.wait_for(writer.committed + OVERLAP_TRANSACTIONS)

        path = lab.base / "busy-full.xb"
        sink = HookSink(path, overlap)
        try:
            result = lab.engine.backup(conn, sink, parent=None)
        finally:
            sink.close()
        at_end = writer.committed
    finally:
        total = writer.finish()
    assert at_end - seen["at_start"] >= OVERLAP_TRANSACTIONS  # the writes overlapped
    _, restored = lab.restore("restored-busy", [(result.metadata, path)])
    ledger, _ = assert_invariants(restored)
    # A point in time inside the backup window.
    assert seen["at_start"] <= ledger <= total
    assert ledger >= seen["at_start"] + OVERLAP_TRANSACTIONS
    assert_invariants(conn)


def test_incremental_chain_restores_each_link(
    engine: MariaDbEngine, lab: Lab, source: tuple[Path, dict[str, Any]]
) -> None:
    _, conn = source
    force_checkpoint(conn)
    full, full_path, full_time = lab.backup(conn, "chain-full")
    states = [snapshot(conn)]
    chain = [(full, full_path)]
    sizes: list[tuple[str, int, float]] = [("full", full_path.stat().st_size, full_time)]
    max_id = int(query(conn, "SELECT MAX(id) FROM app.items")[0][0])
    for step in (1, 2):
        # About 1% of the rows, clustered as recent rows are, plus a few new ones.
        low = max_id // 3 * step
        query(
            conn,
            "UPDATE app.items SET n = n + %s, val = CONCAT('changed-', id) "
            "WHERE id BETWEEN %s AND %s",
            (step, low, low + ROWS // 100 - 1),
        )
        query(
            conn,
            "INSERT INTO app.items (grp, val, n) SELECT seq, 'new', %s FROM app.seq_1_to_200",
            (step,),
        )
        query(conn, "UPDATE app.accounts SET balance = balance + 1 WHERE id = %s", (step,))
        query(conn, "UPDATE app.accounts SET balance = balance - 1 WHERE id = %s", (step + 1,))
        meta, path, elapsed = lab.backup(conn, f"chain-incr-{step}", parent=chain[-1][0])
        assert meta["backup_type"] == "incremental"
        assert meta["from_lsn"] == chain[-1][0]["to_lsn"] == meta["parent_to_lsn"]
        assert meta["to_lsn"] >= meta["from_lsn"]
        states.append(snapshot(conn))
        chain.append((meta, path))
        sizes.append((f"incremental {step}", path.stat().st_size, elapsed))
    for name, size, elapsed in sizes:
        print(f"\n{name}: {size / 1e6:.2f} MB in {elapsed:.2f} s", end="")
    print()
    full_size = sizes[0][1]
    for _, size, _ in sizes[1:]:
        assert size * 4 < full_size, sizes
    for length in (1, 2, 3):
        started = time.monotonic()
        home, restored = lab.restore(f"chain-{length}", chain[:length])
        print(f"restore of {length} link(s): {time.monotonic() - started:.2f} s")
        assert snapshot(restored) == states[length - 1]
        engine.destroy_instance(home, restored)
        assert not home.exists()


def test_server_killed_mid_backup_fails_with_reason(engine: MariaDbEngine, lab: Lab) -> None:
    home, conn = lab.create("doomed", REQUEST)
    load_source(conn)
    pid = int((home / "mariadbd.pid").read_text())

    def kill_server() -> None:
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + WAIT
        while server_processes(home):
            assert time.monotonic() < deadline
            time.sleep(0.01)

    sink = HookSink(lab.base / "doomed.xb", kill_server)
    started = time.monotonic()
    try:
        with pytest.raises(BackupError) as caught:
            engine.backup(conn, sink, parent=None)
    finally:
        sink.close()
    assert time.monotonic() - started < WAIT
    message = str(caught.value)
    assert re.search(r"maria(db-)?backup exited with status \d+: .*(gone away|connect)", message)
    assert conn["backup_password"] not in message
    # A server that is down is refused up front, with a reason.
    with pytest.raises(BackupError, match="cannot connect"):
        engine.backup(conn, io.BytesIO(), parent=None)
    # After the crash the instance starts again (InnoDB recovers) and backs up fine.
    conn.update(engine.start_instance(home, conn))
    assert query(conn, "SELECT COUNT(*) FROM app.items")[0][0] == ROWS
    assert engine.backup(conn, io.BytesIO(), parent=None).metadata["to_lsn"] > 0


def test_failing_sink_stops_the_backup(
    engine: MariaDbEngine, source: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, conn = source

    class StorageDown(Exception):
        pass

    class FailingSink:
        writes = 0

        def write(self, data: bytes, /) -> int:
            self.writes += 1
            if self.writes == 3:
                raise StorageDown("storage is down")
            return len(data)

    with scratch_made(monkeypatch) as scratch, pytest.raises(StorageDown):
        engine.backup(conn, FailingSink(), parent=None)
    assert scratch and not [path for path in scratch if path.exists()]
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            assert not (b"--backup" in cmdline and conn["datadir"].encode() in cmdline)


def test_failure_after_server_start_leaves_nothing_running(
    engine: MariaDbEngine,
    lab: Lab,
    quiet_full: tuple[dict[str, Any], Path, dict[str, tuple[int, int]], str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    meta, path, _, _ = quiet_full
    started: list[int] = []

    def broken(cursor: Any, request: InstanceRequest) -> None:
        started.extend(server_processes(home))
        raise pymysql.err.OperationalError(2013, "Lost connection to server during query")

    monkeypatch.setattr(accounts, "apply_request", broken)
    home = lab.home("late-failure")
    with pytest.raises(RestoreError, match="Lost connection"):
        engine.restore_instance(home, [RestoreInput(meta, FileSource(path))], InstanceRequest("x"))
    assert len(started) == 1  # the server was up when the step failed
    assert not home.exists()
    assert server_processes(home) == []


def test_invalid_requests_are_refused_before_any_work(engine: MariaDbEngine, lab: Lab) -> None:
    for request in (
        InstanceRequest("x", users=(UserSpec("root", "pw", ()),)),
        InstanceRequest("x", users=(UserSpec("strongroom_admin", "pw", ()),)),
        InstanceRequest("x", databases=(DatabaseSpec("mysql"),)),
        InstanceRequest("x", databases=(DatabaseSpec("../etc"),)),
    ):
        home = lab.home("invalid")
        with pytest.raises(InstanceError):
            engine.create_instance(home, request)
        assert not home.exists()


def test_other_versions_are_refused(
    engine: MariaDbEngine,
    lab: Lab,
    source: tuple[Path, dict[str, Any]],
    quiet_full: tuple[dict[str, Any], Path, dict[str, tuple[int, int]], str],
) -> None:
    meta, path, _, _ = quiet_full
    installed = engine.detect().version  # type: ignore[union-attr]
    other = {**meta, "version": "10.6", "server_version": "10.6.18-MariaDB"}
    with pytest.raises(IncompatibleBackupError, match=r"10\.6.*" + re.escape(installed)):
        engine.check_restorable(other)
    with pytest.raises(IncompatibleBackupError, match="not a MariaDB backup"):
        engine.check_restorable({**meta, "datastore": "postgresql"})
    home = lab.home("other-version")
    with pytest.raises(IncompatibleBackupError):
        engine.restore_instance(home, [RestoreInput(other, FileSource(path))], InstanceRequest("x"))
    assert not home.exists()
    _, conn = source
    with pytest.raises(BackupError, match=r"10\.6"):
        engine.backup(conn, io.BytesIO(), parent=other)
    with pytest.raises(BackupError, match="another server"):
        engine.backup(conn, io.BytesIO(), parent={**meta, "source_id": "elsewhere"})


def test_external_registration(
    engine: MariaDbEngine, lab: Lab, source: tuple[Path, dict[str, Any]]
) -> None:
    _, conn = source
    params = {
        "host": "127.0.0.1",
        "port": conn["port"],
        "user": "ext_backup",
        "password": "ext-Pass-9",
        "datadir": conn["datadir"],
    }
    with pytest.raises(ExternalNotAllowedError, match="not enabled"):
        engine.register_external(params, project_id="p1")
    datadir = Path(conn["datadir"])
    elsewhere = MariaDbEngine(allowed_hosts=["127.0.0.1"], allowed_datadirs=[lab.base / "none"])
    with pytest.raises(ExternalNotAllowedError, match="data directory"):
        elsewhere.register_external(params, project_id="p1")
    other_host = MariaDbEngine(allowed_hosts=["db.example"], allowed_datadirs=[lab.base])
    with pytest.raises(ExternalNotAllowedError, match=r"127\.0\.0\.1"):
        other_host.register_external(params, project_id="p1")
    # ../ tricks resolve before the allow-list check.
    sneaky = MariaDbEngine(allowed_hosts=["127.0.0.1"], allowed_datadirs=[datadir / "app"])
    with pytest.raises(ExternalNotAllowedError):
        sneaky.register_external(
            {**params, "datadir": str(datadir / "app" / "..")}, project_id="p1"
        )

    allowed = MariaDbEngine(allowed_hosts=["127.0.0.1"], allowed_datadirs=[lab.base])
    with pytest.raises(InvalidExternalError, match="cannot connect"):
        allowed.register_external(params, project_id="p1")  # the user does not exist yet
    query(conn, "CREATE USER 'ext_backup'@'%' IDENTIFIED BY 'ext-Pass-9'")
    query(conn, "GRANT RELOAD, PROCESS ON *.* TO 'ext_backup'@'%'")
    with pytest.raises(InvalidExternalError, match="LOCK TABLES, BINLOG MONITOR"):
        allowed.register_external(params, project_id="p1")
    query(conn, "GRANT LOCK TABLES, BINLOG MONITOR ON *.* TO 'ext_backup'@'%'")
    with pytest.raises(InvalidExternalError, match="not the server's data directory"):
        allowed.register_external({**params, "datadir": str(lab.base)}, project_id="p1")
    external = allowed.register_external(params, project_id="p1")
    assert external["managed"] is False
    view = allowed.public_view(external)
    assert view == {"host": "127.0.0.1", "port": conn["port"], "users": [{"name": "ext_backup"}]}
    assert allowed.data_size(external)
    sink = io.BytesIO()
    result = allowed.backup(external, sink, parent=None)
    assert result.metadata["to_lsn"] > 0 and len(sink.getvalue()) > 1_000_000
    query(conn, "DROP USER 'ext_backup'@'%'")


def test_a_backup_that_cannot_checkpoint_fails_with_a_reason(
    engine: MariaDbEngine, source: tuple[Path, dict[str, Any]]
) -> None:
    _, conn = source
    wrong = "wrong-Admin-Pw-0"
    sink = io.BytesIO()
    with pytest.raises(BackupError, match="could not write a checkpoint") as caught:
        engine.backup({**conn, "admin_password": wrong}, sink, parent=None)
    assert wrong not in str(caught.value) and "Access denied" in str(caught.value)
    assert sink.getvalue() == b""
