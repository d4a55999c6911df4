"""Helpers for the PostgreSQL engine integration tests: data, snapshots, a writer that
keeps an invariant, a plain (non-engine) server to play the external one."""

from __future__ import annotations

import contextlib
import os
import pwd
import random
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg

from strongroom.engines.base import Connection
from support.files import FileSink as FileSink  # shared with the MariaDB tests


def bin_dir() -> Path:
    roots = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name))
    return roots[-1]


def conninfo(conn: Connection, dbname: str = "bench") -> dict[str, Any]:
    if conn.get("managed"):
        return {
            "host": conn["socket_dir"],
            "port": conn["port"],
            "user": conn["superuser"],
            "password": conn["password"],
            "dbname": dbname,
        }
    return {
        "host": conn["host"],
        "port": conn["port"],
        "user": conn["user"],
        "password": conn["password"],
        "dbname": dbname,
    }


def connect(conn: Connection, dbname: str = "bench", **extra: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(**conninfo(conn, dbname), autocommit=True, **extra)


def pgbench_init(conn: Connection, scale: int, dbname: str = "bench") -> None:
    info = conninfo(conn, dbname)
    env = dict(os.environ, PGPASSWORD=str(info.get("password") or ""))
    subprocess.run(
        [
            str(bin_dir() / "pgbench"),
            "-i",
            "-q",
            "-s",
            str(scale),
            "-h",
            str(info["host"]),
            "-p",
            str(info["port"]),
            "-U",
            str(info["user"]),
            dbname,
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=300,
    )


def snapshot(conn: Connection, dbname: str = "bench") -> dict[str, tuple[int, str]]:
    """Per table of the public schema: row count and md5 of all rows in a fixed order."""
    out: dict[str, tuple[int, str]] = {}
    with connect(conn, dbname) as c:
        tables = [
            r[0]
            for r in c.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
            )
        ]
        for table in tables:
            row = c.execute(
                psycopg.sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), ''))"
                    " FROM {} t"
                ).format(psycopg.sql.Identifier(table))
            ).fetchone()
            assert row is not None
            out[table] = (int(row[0]), str(row[1]))
    return out


def invariant(conn: Connection, dbname: str = "bench") -> dict[str, int]:
    with connect(conn, dbname) as c:
        row = c.execute(
            "SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts),"
            " (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers),"
            " (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches),"
            " (SELECT coalesce(sum(delta), 0) FROM pgbench_history),"
            " (SELECT count(*) FROM pgbench_history)"
        ).fetchone()
    assert row is not None
    return dict(
        zip(
            ("accounts", "tellers", "branches", "history", "history_rows"),
            map(int, row),
            strict=True,
        )
    )


class TpcbWriter(threading.Thread):
    """pgbench's TPC-B-like transaction in a loop on its own connection: each one adds a
    delta to one account, one teller and one branch, and :meth:`record` writes it down
    (subclasses say where). Commits are numbered 1, 2, 3… in commit order."""

    def __init__(self, params: dict[str, Any], scale: int, seed: int) -> None:
        super().__init__(daemon=True)
        self._params = params
        self._scale = scale
        self._seed = seed
        self.stop_event = threading.Event()
        self.commits = 0
        self.error: BaseException | None = None
        self._cond = threading.Condition()

    def record(
        self, c: psycopg.Connection[Any], n: int, aid: int, tid: int, bid: int, delta: int
    ) -> None:
        raise NotImplementedError

    def run(self) -> None:
        rnd = random.Random(self._seed)
        try:
            with psycopg.connect(**self._params) as c:
                while not self.stop_event.is_set():
                    n = self.commits + 1
                    aid = rnd.randint(1, 100000 * self._scale)
                    tid = rnd.randint(1, 10 * self._scale)
                    bid = rnd.randint(1, self._scale)
                    delta = rnd.randint(-5000, 5000)
                    with c.transaction():
                        c.execute(
                            "UPDATE pgbench_accounts SET abalance = abalance + %s WHERE aid = %s",
                            (delta, aid),
                        )
                        c.execute(
                            "UPDATE pgbench_tellers SET tbalance = tbalance + %s WHERE tid = %s",
                            (delta, tid),
                        )
                        c.execute(
                            "UPDATE pgbench_branches SET bbalance = bbalance + %s WHERE bid = %s",
                            (delta, bid),
                        )
                        self.record(c, n, aid, tid, bid, delta)
                    with self._cond:
                        self.commits = n
                        self._cond.notify_all()
        except BaseException as exc:  # reported to the test by wait_for/stop
            self.error = exc
            with self._cond:
                self._cond.notify_all()

    def wait_for(self, commits: int, timeout: float = 60) -> int:
        with self._cond:
            ok = self._cond.wait_for(
                lambda: self.commits >= commits or self.error is not None, timeout
            )
        assert self.error is None, f"writer failed: {self.error}"
        assert ok, f"writer made only {self.commits} of {commits} commits in {timeout} s"
        return self.commits

    def stop(self) -> int:
        self.stop_event.set()
        self.join(timeout=60)
        assert not self.is_alive(), "writer did not stop"
        assert self.error is None, f"writer failed: {self.error}"
        return self.commits


class Writer(TpcbWriter):
    """Records each transaction in ``pgbench_history``, so the sums of the four tables
    always agree in any consistent state."""

    def __init__(self, conn: Connection, scale: int, dbname: str = "bench") -> None:
        super().__init__(conninfo(conn, dbname), scale, seed=42)

    def record(
        self, c: psycopg.Connection[Any], n: int, aid: int, tid: int, bid: int, delta: int
    ) -> None:
        c.execute(
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime)"
            " VALUES (%s, %s, %s, %s, now())",
            (tid, bid, aid, delta),
        )


class OffsetFileSource:
    """A stream file read as the pipeline's reader reads a backup: also from an offset
    (``reader_at``), so the engine lays out a link's segments on several threads."""

    def __init__(self, path: Path, offset: int = 0) -> None:
        self.path = path
        self._fh = path.open("rb")
        self._fh.seek(offset)

    def read(self, size: int, /) -> bytes:
        return self._fh.read(size)

    def reader_at(self, offset: int, /) -> OffsetFileSource:
        return OffsetFileSource(self.path, offset)

    def close(self) -> None:
        self._fh.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PlainServer:
    """A PostgreSQL server set up by hand (not by the engine): the 'external' one."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.data = home / "data"
        self.port = free_port()
        self.superuser_password = "ext-super-pw"

    def _as_postgres(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> None:
        self.home.mkdir(mode=0o700)
        if os.geteuid() == 0:
            shutil.chown(self.home, "postgres", "postgres")
        pw = self.home / "pw"
        pw.write_text(self.superuser_password + "\n")
        if os.geteuid() == 0:
            shutil.chown(pw, "postgres", "postgres")
        subprocess.run(
            self._as_postgres(
                [
                    str(bin_dir() / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "admin",
                    f"--pwfile={pw}",
                    "--auth=scram-sha-256",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        with (self.data / "postgresql.conf").open("a") as fh:
            fh.write(
                f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.home}'\nmax_wal_senders = 5\n"
            )
        for _ in range(5):
            result = subprocess.run(
                self._as_postgres(
                    [
                        str(bin_dir() / "pg_ctl"),
                        "start",
                        "-D",
                        str(self.data),
                        "-l",
                        str(self.home / "log"),
                        "-w",
                        "-t",
                        "60",
                    ]
                ),
                capture_output=True,
                timeout=90,
            )
            if result.returncode == 0:
                return
            self.port = free_port()
            conf = (self.data / "postgresql.conf").read_text()
            (self.data / "postgresql.conf").write_text(conf + f"port = {self.port}\n")
        raise AssertionError("external test server did not start")

    def admin(self, dbname: str = "postgres") -> psycopg.Connection[Any]:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="admin",
            password=self.superuser_password,
            dbname=dbname,
            autocommit=True,
        )

    def stop(self) -> None:
        subprocess.run(
            self._as_postgres(
                [str(bin_dir() / "pg_ctl"), "stop", "-D", str(self.data), "-m", "immediate", "-w"]
            ),
            capture_output=True,
            timeout=60,
        )


def stop_server(data_dir: str | Path, mode: str = "immediate") -> None:
    """Stop a server as the owner of its data directory (each managed one has its own)."""
    argv = [str(bin_dir() / "pg_ctl"), "stop", "-D", str(data_dir), "-m", mode, "-w", "-s"]
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwuid(os.stat(data_dir).st_uid).pw_name
        except KeyError:
            return  # its OS user is gone, and its processes went with it
        argv = ["runuser", "-u", owner, "--", *argv]
    subprocess.run(argv, capture_output=True, timeout=60)


@contextlib.contextmanager
def homes_dir(prefix: str) -> Iterator[Path]:
    """A directory for instances' homes (0711: their OS users reach their own), cleaned up
    with :func:`cleanup_homes` and removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    os.chmod(path, 0o711)
    try:
        yield path
    finally:
        cleanup_homes(path)
        shutil.rmtree(path, ignore_errors=True)


def cleanup_homes(base: Path) -> None:
    """Stop every server whose data directory is under ``base``, remove the socket
    directories their homes keep outside ``base`` (homes with long paths) and the OS
    users of their instances."""
    from strongroom.engines.identity import InstanceIdentity, name_for
    from strongroom.engines.postgresql.cluster import socket_dir_for

    for pid_file in base.rglob("postmaster.pid"):
        stop_server(pid_file.parent)
    for version_file in base.rglob("data/PG_VERSION"):
        home = version_file.parent.parent
        socket_dir = socket_dir_for(home)
        if not socket_dir.is_relative_to(base):
            shutil.rmtree(socket_dir, ignore_errors=True)
        identity = InstanceIdentity.lookup(name_for(home)) if os.geteuid() == 0 else None
        if identity is not None:
            identity.remove()


def servers_running_in(path: Path) -> list[str]:
    """Command lines of processes whose argv mentions ``path`` (a leftover server)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(path) in cmd:
            found.append(cmd)
    return found


def wait_until(predicate: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()
