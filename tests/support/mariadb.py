"""Helpers for driving MariaDB through the product: scratch directories the ``mysql`` user
can reach, connections as the request's users, table comparisons, a concurrent writer, a
hook that holds a running backup stream, and a standalone ``mariadbd`` for external
registration."""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymysql
import pytest

from fixtures.live import free_port
from strongroom.engines.identity import IdentityError, InstanceIdentity, name_for
from strongroom.engines.mariadb import MariaDbEngine

MUST_RUN_ENV = "STRONGROOM_TEST_MUST_RUN"
WAIT = 120.0
SYSTEM_SCHEMAS = ("mysql", "information_schema", "performance_schema", "sys")
Snapshot = dict[str, tuple[int, int]]


def require_mariadb() -> MariaDbEngine:
    """The engine, or a skip when MariaDB's tools are not installed (a failure when the
    environment says MariaDB tests must run)."""
    engine = MariaDbEngine()
    if engine.detect() is None:
        reason = "MariaDB server or mariabackup is not installed"
        if "mariadb" in os.environ.get(MUST_RUN_ENV, "").split(","):
            pytest.fail(f"mariadb is listed in {MUST_RUN_ENV} but unavailable: {reason}")
        pytest.skip(reason)
    return engine


def wait_until(predicate: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


# -- processes ---------------------------------------------------------------------------------
def _proc_state(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def is_running(pid: int) -> bool:
    state = _proc_state(pid)
    return state is not None and state not in ("Z", "X")


def server_pids(path: Path | str) -> list[int]:
    """Live ``mariadbd`` processes whose command line mentions ``path``."""
    needle = str(path)
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0].endswith((b"mariadbd", b"mysqld")):
            continue
        if needle.encode() in b" ".join(argv) and is_running(int(entry.name)):
            found.append(int(entry.name))
    return found


def processes_mentioning(path: Path | str) -> list[int]:
    """Live processes of any kind (servers, mbstream, mariabackup) whose command line
    mentions ``path``."""
    needle = str(path).encode()
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and is_running(int(entry.name)):
            found.append(int(entry.name))
    return found


def instance_pid(home: Path) -> int:
    """The pid of the managed server living in ``home`` (checked against its command line)."""
    pid = int((home / "mariadbd.pid").read_text().strip())
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert f"--defaults-file={home / 'my.cnf'}".encode() in cmdline, "not this home's server"
    return pid


def stop_pid(pid: int, *, timeout: float = 60.0) -> None:
    """SIGTERM (then SIGKILL) one server this test suite started, and wait for it."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 30.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while is_running(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not is_running(pid):
            return


def stop_servers_under(path: Path) -> None:
    for pid in server_pids(path):
        stop_pid(pid)


@contextlib.contextmanager
def scratch_root(prefix: str) -> Iterator[Path]:
    """A directory under the system temp dir that the ``mysql`` user can pass through
    (0711); every server started under it is stopped and the directory removed after."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(base, 0o711)
    try:
        yield base
    finally:
        stop_servers_under(base)
        remove_os_users_under(base)
        shutil.rmtree(base, ignore_errors=True)


def remove_os_users_under(base: Path, depth: int = 4) -> None:
    """Remove the OS users of instance homes left under ``base`` (instances a test did not
    delete through the service)."""
    if os.geteuid() != 0:
        return
    for root, dirs, _files in os.walk(base):
        if len(Path(root).relative_to(base).parts) >= depth:
            dirs.clear()
        for name in dirs:
            found = InstanceIdentity.lookup(name_for(Path(root) / name))
            if found is not None:
                with contextlib.suppress(IdentityError):
                    found.remove()


# -- SQL -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Login:
    host: str
    port: int
    user: str
    password: str
    database: str | None = None

    @classmethod
    def from_view(
        cls, connection: dict[str, Any], user: str, password: str, database: str | None = None
    ) -> Login:
        return cls(str(connection["host"]), int(connection["port"]), user, password, database)

    def connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database,
            autocommit=True,
            connect_timeout=10,
            read_timeout=300,
            write_timeout=300,
        )


def query(login: Login, sql: str, args: Any = None) -> list[tuple[Any, ...]]:
    db = login.connect()
    try:
        with db.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        db.close()


def table_state(cur: Any, name: str) -> tuple[int, int]:
    cur.execute(f"SELECT COUNT(*) FROM {name}")
    count = int(cur.fetchone()[0])
    cur.execute(f"CHECKSUM TABLE {name}")
    return count, int(cur.fetchone()[1])


def snapshot(login: Login) -> Snapshot:
    """Row count and ``CHECKSUM TABLE`` of every table the login can see outside the
    system schemas."""
    db = login.connect()
    result: Snapshot = {}
    try:
        with db.cursor() as cur:
            cur.execute(
                "SELECT table_schema, table_name FROM information_schema.TABLES "
                f"WHERE table_schema NOT IN {SYSTEM_SCHEMAS!r} AND table_type = 'BASE TABLE' "
                "ORDER BY 1, 2"
            )
            for schema, table in cur.fetchall():
                result[f"{schema}.{table}"] = table_state(cur, f"`{schema}`.`{table}`")
    finally:
        db.close()
    assert result, "no tables to compare"
    return result


def force_checkpoint(home: Path) -> None:
    """Flush every dirty page so the next backup's checkpoint LSN is current (a server
    that was just bulk-loaded has not checkpointed its load yet, and an incremental after
    a backup carries every page changed since that backup's checkpoint). Done as the
    host's root over the server's socket, as an operator could."""
    db = pymysql.connect(unix_socket=str(home / "mysqld.sock"), user="root", autocommit=True)
    try:
        with db.cursor() as cur:
            cur.execute("SELECT @@innodb_max_dirty_pages_pct, @@innodb_max_dirty_pages_pct_lwm")
            pct, lwm = cur.fetchone()
            cur.execute("SET GLOBAL innodb_max_dirty_pages_pct_lwm = 0.001")
            cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = 0")
            try:

                def settled() -> bool:
                    cur.execute("SHOW GLOBAL STATUS LIKE 'Innodb_checkpoint_age'")
                    return int(cur.fetchone()[1]) < 4096

                wait_until(settled, "InnoDB checkpointed")
            finally:
                cur.execute("SET GLOBAL innodb_max_dirty_pages_pct = %s", (pct,))
                cur.execute("SET GLOBAL innodb_max_dirty_pages_pct_lwm = %s", (lwm,))
    finally:
        db.close()


def load_items(login: Login, rows: int) -> None:
    """An InnoDB table of ``rows`` rows (~110 bytes each, hex: about as compressible as
    typical row data) and the writer's tables."""
    db = login.connect()
    try:
        with db.cursor() as cur:
            cur.execute(
                "CREATE TABLE items (id INT AUTO_INCREMENT PRIMARY KEY, grp INT NOT NULL, "
                "val VARCHAR(200) NOT NULL, n INT NOT NULL, KEY (grp)) ENGINE=InnoDB"
            )
            cur.execute(
                "INSERT INTO items (grp, val, n) SELECT seq % 97, "
                f"CONCAT(SHA2(seq, 256), MD5(seq), seq), 0 FROM seq_1_to_{rows}"
            )
            cur.execute(
                "CREATE TABLE accounts (id INT PRIMARY KEY, balance INT NOT NULL) ENGINE=InnoDB"
            )
            cur.execute(
                f"INSERT INTO accounts SELECT seq, {START_BALANCE} FROM seq_1_to_{ACCOUNTS}"
            )
            cur.execute(
                "CREATE TABLE ledger (id BIGINT PRIMARY KEY, src INT NOT NULL, dst INT NOT NULL, "
                "amount INT NOT NULL) ENGINE=InnoDB"
            )
    finally:
        db.close()


ACCOUNTS = 100
START_BALANCE = 1_000


class Writer(threading.Thread):
    """Transfers between accounts, one transaction each: ledger row ``seq`` (1, 2, …) and
    the two balance updates. The state as of transaction ``n`` can be rebuilt from the
    final state and the ledger, so a restore taken while it ran can be compared exactly."""

    def __init__(self, login: Login, first_seq: int = 1) -> None:
        super().__init__(daemon=True)
        self.login = login
        self.seq = first_seq - 1
        self.stop_event = threading.Event()
        self.cond = threading.Condition()
        self.error: BaseException | None = None

    @property
    def committed(self) -> int:
        with self.cond:
            return self.seq

    def run(self) -> None:
        rng = random.Random(11)
        try:
            db = self.login.connect()
            db.autocommit(False)
            with db.cursor() as cur:
                while not self.stop_event.is_set():
                    a, b = rng.sample(range(1, ACCOUNTS + 1), 2)
                    amount = rng.randint(1, 50)
                    seq = self.seq + 1
                    cur.execute("INSERT INTO ledger VALUES (%s, %s, %s, %s)", (seq, a, b, amount))
                    cur.execute(
                        "UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, a)
                    )
                    cur.execute(
                        "UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, b)
                    )
                    db.commit()
                    with self.cond:
                        self.seq = seq
                        self.cond.notify_all()
            db.close()
        except BaseException as exc:
            self.error = exc
            with self.cond:
                self.cond.notify_all()

    def wait_for(self, count: int) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: self.seq >= count or self.error is not None, WAIT)
        assert self.error is None, f"writer failed: {self.error!r}"
        assert ok, "the writer made no progress"

    def finish(self) -> int:
        self.stop_event.set()
        self.join(WAIT)
        assert not self.is_alive(), "the writer did not stop"
        assert self.error is None, f"writer failed: {self.error!r}"
        return self.seq


def snapshot_as_of(login: Login, seq: int) -> Snapshot:
    """The writer's tables as they were right after transaction ``seq`` (rebuilt in
    temporary tables from the current state and the ledger), every other table as it is."""
    current = snapshot(login)
    schema = login.database
    assert schema
    db = login.connect()
    try:
        with db.cursor() as cur:
            cur.execute("CREATE TEMPORARY TABLE asof_ledger LIKE ledger")
            cur.execute("INSERT INTO asof_ledger SELECT * FROM ledger WHERE id <= %s", (seq,))
            cur.execute("CREATE TEMPORARY TABLE asof_accounts LIKE accounts")
            cur.execute(
                "INSERT INTO asof_accounts SELECT a.id, a.balance "
                "+ COALESCE((SELECT SUM(amount) FROM ledger l "
                "WHERE l.src = a.id AND l.id > %s), 0) "
                "- COALESCE((SELECT SUM(amount) FROM ledger l "
                "WHERE l.dst = a.id AND l.id > %s), 0) "
                "FROM accounts a",
                (seq, seq),
            )
            current[f"{schema}.ledger"] = table_state(cur, "asof_ledger")
            current[f"{schema}.accounts"] = table_state(cur, "asof_accounts")
    finally:
        db.close()
    return current


def last_transaction(login: Login) -> int:
    """The writer's last transaction in this server; checks the ledger has no gap and the
    balances still add up."""
    rows = query(login, "SELECT COUNT(*), COALESCE(MAX(id), 0) FROM ledger")
    count, last = int(rows[0][0]), int(rows[0][1])
    assert count == last, "the ledger has gaps"
    total = query(login, "SELECT SUM(balance), COUNT(*) FROM accounts")[0]
    assert (int(total[0]), int(total[1])) == (ACCOUNTS * START_BALANCE, ACCOUNTS)
    return last


# -- a running backup, held ----------------------------------------------------------------------
class HookSink:
    """Runs ``hook`` once, before the first bytes of the stream go on."""

    def __init__(self, inner: Any, hook: Callable[[], None]) -> None:
        self.inner = inner
        self.hook: Callable[[], None] | None = hook

    def write(self, data: bytes, /) -> int:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            hook()
        written: int = self.inner.write(data)
        return written


def hook_first_write(
    monkeypatch: pytest.MonkeyPatch, engine: Any, hook: Callable[[], None]
) -> None:
    """The engine's next backups call ``hook`` when their stream has started (mariabackup
    is connected and copying; it blocks on its pipe while the hook runs)."""
    original = engine.backup

    def backup(connection: Any, sink: Any, *, parent: Any, parent_chain: Any = None) -> Any:
        return original(connection, HookSink(sink, hook), parent=parent, parent_chain=parent_chain)

    monkeypatch.setattr(engine, "backup", backup)


# -- a standalone server for external registration -----------------------------------------------
@dataclass
class ExternalServer:
    """A ``mariadbd`` of its own (datadir, socket, port), run as ``mysql``, with accounts
    made by an init file on first start."""

    root: Path
    accounts_sql: str
    port: int = field(default_factory=free_port)
    pid: int | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def socket(self) -> Path:
        return self.root / "mysqld.sock"

    def start(self) -> None:
        self.root.mkdir(mode=0o750)
        self.datadir.mkdir(mode=0o750)
        shutil.chown(self.root, "mysql", "mysql")
        shutil.chown(self.datadir, "mysql", "mysql")
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--user=mysql",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
        init = self.root / "init.sql"
        init.write_text(self.accounts_sql, encoding="utf-8")
        os.chmod(init, 0o600)
        shutil.chown(init, "mysql", "mysql")
        log = self.root / "mariadbd.err"
        self.process = subprocess.Popen(
            [
                shutil.which("mariadbd") or "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.socket}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.root / 'mariadbd.pid'}",
                f"--log-error={log}",
                "--user=mysql",
                "--log-bin=ext-bin",
                "--server-id=7",
                "--skip-name-resolve",
                "--innodb-buffer-pool-size=64M",
                "--performance-schema=OFF",
                f"--init-file={init}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.pid = self.process.pid

        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"external mariadbd exited: {log.read_text()[-2000:]}")
            # The init file has run once the server says it is ready.
            return log.exists() and "ready for connections" in log.read_text(errors="replace")

        wait_until(ready, "the external server started")
        init.unlink()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
