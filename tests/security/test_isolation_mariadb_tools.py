"""What the MariaDB tools the service starts expose to the tenant whose files they touch.

A tenant runs programs as its server's OS user (a managed instance's, or the owner of an
external server's data directory). The tools that work on its data run as that user too,
so: a link or an ``.isl`` file it plants in the data directory leads mariabackup nowhere its
owner could not go, and a backup holding an ``.isl`` is restored nowhere, offline or not;
the password a tool reads is in no file that user can open; a tool it stops or whose pipes
it holds keeps the service waiting no longer than the job's deadline and fills none of its
memory; and a data directory it fills with entries is measured within bounds.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pwd
import secrets
import select
import shutil
import signal
import subprocess
import threading
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from strongroom.engines.base import DatabaseSpec, InstanceRequest, RestoreInput
from strongroom.engines.errors import BackupError, InvalidExternalError, RestoreError
from strongroom.engines.mariadb import MariaDbEngine, offline, replay
from strongroom.engines.mariadb import engine as engine_module
from strongroom.engines.mariadb.sessions import managed_session
from support.files import FileSink
from support.mariadb import (
    ExternalServer,
    HookSink,
    is_running,
    require_mariadb,
    scratch_root,
    server_pids,
)
from support.tenant_daemons import as_tenant

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="OS users per instance need root")

EXT_USER = "ext_backup"
EXT_PASSWORD = "ext-Backup-7"
EXT_ACCOUNTS = (
    f"CREATE USER '{EXT_USER}'@'%' IDENTIFIED BY '{EXT_PASSWORD}';\n"
    f"GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO '{EXT_USER}'@'%';\n"
)
SECRET = "ROOT-ONLY-" + secrets.token_hex(12)
STALL_DEADLINE = 3.0  # the replay's deadline while a tenant stalls its decoder
GIVE_UP = 60.0  # seconds a test waits for what must end well before
FLOOD = 96 << 20  # bytes of one stderr line a tenant writes into a tool's pipe
BIG_ROWS = 8  # rows of 1 MiB each: the replay's stream fills any pipe


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    require_mariadb()
    with scratch_root("sr-mdb-tools-") as path:
        yield path


def _tenant_user(name: str) -> pwd.struct_passwd:
    return pwd.getpwnam(name)


# -- an external server whose data directory holds links to root's files -------------------
@pytest.fixture(scope="module")
def external(base: Path) -> Iterator[tuple[MariaDbEngine, ExternalServer, dict[str, Any]]]:
    (base / "ext").mkdir(mode=0o711)
    server = ExternalServer(base / "ext" / "server", EXT_ACCOUNTS)
    server.start()
    try:
        engine = MariaDbEngine(allowed_hosts=["127.0.0.1"], allowed_datadirs=[base], timeout=120)
        params = {
            "host": "127.0.0.1",
            "port": server.port,
            "user": EXT_USER,
            "password": EXT_PASSWORD,
            "datadir": str(server.datadir),
        }
        yield engine, server, params
    finally:
        server.stop()


def _root_only(base: Path) -> Path:
    """Root's files a tenant must never get into its backup: 0600 in a 0700 directory."""
    top = base / f"root-only-{secrets.token_hex(4)}"
    top.mkdir(mode=0o700)
    (top / "db").mkdir(mode=0o700)
    for path in (top / "t.frm", top / "u.ibd", top / "db" / "x.frm", top / "db" / "db.opt"):
        path.write_text(f"{SECRET}\n" * 64)
        path.chmod(0o600)
    return top


def _plant(datadir: Path, root_only: Path) -> list[Path]:
    """What the server's OS user (the tenant) may leave in its data directory: a database
    directory whose table files are links to root's, an ``.isl`` naming root's file as a
    table's tablespace, and a database directory that is a link to root's directory."""
    owner = datadir.stat()
    leak = datadir / "leakdb"
    leak.mkdir(mode=0o700)
    (leak / "t.frm").symlink_to(root_only / "t.frm")
    (leak / "u.frm").symlink_to(root_only / "t.frm")
    (leak / "u.isl").write_text(f"{root_only / 'u.ibd'}\n")
    (datadir / "leakdir").symlink_to(root_only / "db")
    planted = [leak, leak / "t.frm", leak / "u.frm", leak / "u.isl", datadir / "leakdir"]
    for path in planted:
        os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)
    return planted


@AS_ROOT
def test_an_external_backup_takes_nothing_its_data_directory_owner_cannot_read(
    external: tuple[MariaDbEngine, ExternalServer, dict[str, Any]], base: Path
) -> None:
    engine, server, params = external
    conn = engine.register_external(params, project_id="p1")
    planted = _plant(server.datadir, _root_only(base))
    sink = io.BytesIO()
    try:
        try:
            engine.backup(conn, sink, parent=None)
        except BackupError as exc:
            # It says why: the owner may not open the files the links name.
            assert SECRET not in str(exc)
            assert str(exc).startswith("the backup failed: mariadb-backup exited"), exc
    finally:
        for path in reversed(planted):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    assert SECRET.encode() not in sink.getvalue()
    # Without the planted files the same registration backs up, as the owner.
    clean = io.BytesIO()
    result = engine.backup(conn, clean, parent=None)
    assert result.metadata["to_lsn"] > 0 and len(clean.getvalue()) > 100_000


@AS_ROOT
def test_an_external_data_directory_of_root_or_behind_a_link_is_refused(
    external: tuple[MariaDbEngine, ExternalServer, dict[str, Any]], base: Path
) -> None:
    engine, server, params = external
    conn = engine.register_external(params, project_id="p1")
    # A path through a link (as a parent directory swapped for one would be): its owner
    # is not who the backup would run as.
    link = base / f"via-link-{secrets.token_hex(4)}"
    link.symlink_to(server.datadir.parent)
    with pytest.raises(BackupError, match="symbolic link"):
        engine.backup({**conn, "datadir": str(link / "data")}, io.BytesIO(), parent=None)
    owner = server.datadir.stat()
    os.chown(server.datadir, 0, 0)
    try:
        sink = io.BytesIO()
        with pytest.raises(BackupError, match="belongs to root"):
            engine.backup(conn, sink, parent=None)
        assert sink.getvalue() == b""
        with pytest.raises(InvalidExternalError, match="belongs to root"):
            engine.register_external(params, project_id="p1")
    finally:
        os.chown(server.datadir, owner.st_uid, owner.st_gid)


# -- a managed instance with an archived binary log ----------------------------------------
@pytest.fixture(scope="module")
def archived(base: Path) -> Iterator[dict[str, Any]]:
    """A managed instance, a full backup of it, then 8 MiB of rows in its binary log,
    archived as one batch."""
    engine = MariaDbEngine(timeout=120)
    home = base / "src"
    conn = engine.create_instance(home, InstanceRequest("src", databases=(DatabaseSpec("bench"),)))
    try:
        with managed_session(conn) as c:
            c.execute("CREATE TABLE bench.big (id INT PRIMARY KEY, v LONGTEXT) ENGINE=InnoDB")
        position = engine.start_archiving(conn)
        full = FileSink(base / "full.xb")
        try:
            meta = dict(engine.backup(conn, full, parent=None).metadata)
        finally:
            full.close()
        with managed_session(conn) as c:
            c.execute(
                "INSERT INTO bench.big SELECT seq, REPEAT(SHA2(seq, 256), 16384) "
                f"FROM bench.seq_1_to_{BIG_ROWS}"
            )
        sink = FileSink(base / "batch.bin")
        try:
            batch = engine.archive_batch(conn, sink, start=position)
        finally:
            sink.close()
        yield {
            "engine": engine,
            "home": home,
            "conn": conn,
            "full": meta,
            "batch": batch,
            "path": base / "batch.bin",
        }
    finally:
        engine.destroy_instance(home, conn)


# Run as the instance's OS user while mariabackup runs: what a tenant learns from the
# tool's command line, and what it can read of the option file it names.
PROBE = r"""
import json, os
me = os.getuid()
found = {}
for pid in os.listdir("/proc"):
    if not pid.isdigit():
        continue
    try:
        with open(f"/proc/{pid}/status") as status:
            uid = next(line for line in status if line.startswith("Uid:")).split()[1]
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().decode(errors="replace").split("\0")
    except (OSError, StopIteration):
        continue
    if int(uid) != me or "--backup" not in argv:
        continue
    for arg in argv:
        name, _, value = arg.partition("=")
        if name in ("--defaults-file", "--target-dir"):
            found[name] = value
out = {"found": found, "read": {}}
paths = []
if "--defaults-file" in found:
    paths.append(found["--defaults-file"])
if "--target-dir" in found:
    scratch = os.path.dirname(found["--target-dir"])
    paths.append(os.path.join(scratch, "client.cnf"))
    try:
        paths += [os.path.join(scratch, name) for name in os.listdir(scratch)]
    except OSError as exc:
        out["list"] = exc.strerror
for path in paths:
    try:
        with open(path, "rb") as fh:
            out["read"][path] = fh.read(65536).decode(errors="replace")
    except OSError as exc:
        out["read"][path] = "error: " + str(exc.strerror)
print(json.dumps(out))
"""


@AS_ROOT
def test_the_tool_password_is_in_no_file_the_tenant_can_read(archived: dict[str, Any]) -> None:
    engine: MariaDbEngine = archived["engine"]
    conn = archived["conn"]
    user = _tenant_user(conn["os_user"])
    password = conn["backup_password"]
    seen: dict[str, Any] = {}

    def probe() -> None:  # mariabackup is connected and blocked on its stream meanwhile
        done = subprocess.run(
            ["/usr/bin/python3", "-c", PROBE],
            user=user.pw_uid,
            group=user.pw_gid,
            extra_groups=[],
            capture_output=True,
            text=True,
            timeout=GIVE_UP,
            cwd="/",
            check=True,
        )
        seen.update(json.loads(done.stdout))
        scratch = Path(seen["found"]["--target-dir"]).parent
        # Nor, seen as root, is any file left where the tool runs.
        seen["files"] = [
            p.read_bytes() for p in scratch.rglob("*") if p.is_file() and not p.is_symlink()
        ]

    engine.backup(conn, HookSink(io.BytesIO(), probe), parent=None)
    assert seen["found"].get("--defaults-file"), seen  # the probe saw the running tool
    assert seen["read"], seen
    for path, text in seen["read"].items():
        assert password not in text, f"the tenant's user read the password from {path}"
    assert all(password.encode() not in data for data in seen["files"])


# -- tools stalled, flooded or held by the tenant --------------------------------------------
# Run as the instance's OS user: waits for a tool of that user (named in argv), takes a copy
# of one of its pipe ends (pidfd_getfd: the tool is this user's), then "stall": stops the
# tool and keeps the read end of its input; "flood": writes one endless line into the pipe;
# "hold": keeps the pipe's end open after the tool is gone.
GRAB = r"""
import ctypes, os, signal, sys, time
mode, size, target, names = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
me = os.getuid()
libc = ctypes.CDLL(None, use_errno=True)

def tool():
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as fh:
                comm = fh.read().strip()
            with open(f"/proc/{pid}/status") as status:
                fields = dict(line.partition(":")[::2] for line in status)
        except OSError:
            continue
        alive = fields.get("State", "Z").split()[0] not in ("Z", "X")
        uid = int(fields.get("Uid", "-1").split()[0])
        if alive and uid == me and comm in names:
            return int(pid)
    return None

deadline = time.monotonic() + 60
while (pid := tool()) is None:
    if time.monotonic() > deadline:
        sys.exit("no such tool")
    time.sleep(0.01)
pidfd = os.pidfd_open(pid)
fd = libc.syscall(438, pidfd, target, 0)  # pidfd_getfd
if fd < 0 and mode != "stall":  # (where ptrace is restricted) stopping it still stalls
    print(f"nograb {os.strerror(ctypes.get_errno())}", flush=True)
    sys.exit(0)
if mode == "stall":
    os.kill(pid, signal.SIGSTOP)
print(f"held {pid}", flush=True)
if mode == "flood":
    line = b"x" * (1 << 20)
    for _ in range(size // len(line)):
        os.write(fd, line)
    os.close(fd)
    print("done", flush=True)
    sys.exit(0)
while True:
    signal.pause()
"""
DECODER = ("mariadb-binlog", "mysqlbinlog")
BACKUP_TOOL = ("mariadb-backup", "mariabackup")


def _grab(
    user: pwd.struct_passwd, mode: str, fd: int, names: tuple[str, ...], size: int = 0
) -> Any:
    return as_tenant(user, ["/usr/bin/python3", "-c", GRAB, mode, str(size), str(fd), *names])


def _line(daemon: subprocess.Popen[str], what: str) -> str:
    assert daemon.stdout is not None
    ready, _, _ = select.select([daemon.stdout], [], [], GIVE_UP)
    assert ready, f"the tenant's program did not say {what}"
    line = daemon.stdout.readline().strip()
    assert line.startswith(what), f"the tenant's program said {line!r}"
    return line


def _line_word(line: str, what: str) -> str:
    assert line.startswith(what), f"the tenant's program said {line!r}"
    return line.split()[1]


class Gated:
    """The archived batch, given out once the tenant's program has its hold on the
    decoder (the decoder waits on its input until then)."""

    def __init__(self, path: Path, daemon: subprocess.Popen[str]) -> None:
        self._fh = path.open("rb")
        self._daemon = daemon
        self.pid: int | None = None
        self.refused = ""
        self.held = threading.Event()

    def read(self, size: int = -1) -> bytes:
        if self.pid is None and not self.refused:
            try:
                line = _line(self._daemon, "")
                if line.startswith("nograb"):
                    self.refused = line
                    raise RuntimeError(line)
                self.pid = int(_line_word(line, "held"))
            finally:
                self.held.set()
        return self._fh.read(size)

    def close(self) -> None:
        self._fh.close()


def _replay_in_thread(
    archived: dict[str, Any], stream: Gated, timeout: float
) -> tuple[threading.Thread, list[BaseException | None]]:
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            replay.replay(
                archived["conn"],
                [RestoreInput(archived["batch"].metadata, stream)],
                [archived["full"]],
                target_time=None,
                timeout=timeout,
            )
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


@AS_ROOT
def test_a_backup_ends_when_the_tenant_holds_its_output_open(archived: dict[str, Any]) -> None:
    """mariabackup is the tenant's user's: a copy of its stdout kept by the tenant must not
    keep the service reading (and storing) after the tool is gone."""
    engine: MariaDbEngine = archived["engine"]
    conn = archived["conn"]
    daemon = _grab(_tenant_user(conn["os_user"]), "hold", 1, BACKUP_TOOL)
    said: list[str] = []
    outcome: list[Any] = []

    def held() -> None:  # mariabackup waits on its full pipe meanwhile
        said.append(_line(daemon, ""))

    def run() -> None:
        try:
            outcome.append(engine.backup(conn, HookSink(io.BytesIO(), held), parent=None))
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        thread.join(GIVE_UP)
        blocked = thread.is_alive()
    finally:
        daemon.kill()
        daemon.wait()
        thread.join(GIVE_UP)
        if daemon.stdout is not None:
            daemon.stdout.close()
    if said and said[0].startswith("nograb"):
        pytest.skip(f"no process may take another's descriptor here: {said[0]}")
    assert said and said[0].startswith("held"), said
    assert not blocked, "the backup kept reading a pipe the tenant held open"
    assert len(outcome) == 1 and outcome[0].metadata["to_lsn"] > 0, outcome


@AS_ROOT
def test_a_stalled_decoder_whose_input_the_tenant_holds_ends_at_the_deadline(
    archived: dict[str, Any],
) -> None:
    user = _tenant_user(archived["conn"]["os_user"])
    daemon = _grab(user, "stall", 0, DECODER)
    stream = Gated(archived["path"], daemon)
    thread, outcome = _replay_in_thread(archived, stream, STALL_DEADLINE)
    try:
        thread.join(STALL_DEADLINE + GIVE_UP)
        blocked = thread.is_alive()
    finally:
        daemon.kill()
        daemon.wait()
        if stream.pid is not None:  # let a write that waits on it fail, so the thread ends
            with contextlib.suppress(ProcessLookupError):
                os.kill(stream.pid, signal.SIGKILL)
        thread.join(GIVE_UP)
        stream.close()
        if daemon.stdout is not None:
            daemon.stdout.close()
    assert stream.pid is not None, "the tenant's program never held the decoder"
    assert not blocked, "the replay kept writing into a stalled pipe past its deadline"
    assert len(outcome) == 1 and isinstance(outcome[0], RestoreError), outcome
    assert "did not finish within" in str(outcome[0])


@AS_ROOT
def test_an_endless_stderr_line_does_not_fill_the_service_memory(
    archived: dict[str, Any],
) -> None:
    user = _tenant_user(archived["conn"]["os_user"])
    daemon = _grab(user, "flood", 2, DECODER, FLOOD)
    stream = Gated(archived["path"], daemon)
    tracemalloc.start()
    try:
        thread, outcome = _replay_in_thread(archived, stream, GIVE_UP)
        assert stream.held.wait(GIVE_UP), "the tenant's program never held the decoder"
        if not stream.refused:
            _line(daemon, "done")  # the service read it all (the pipe holds 64 KiB)
        thread.join(GIVE_UP)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        daemon.kill()
        daemon.wait()
        stream.close()
        if daemon.stdout is not None:
            daemon.stdout.close()
    if stream.refused:
        pytest.skip(f"no process may take another's descriptor here: {stream.refused}")
    assert not thread.is_alive() and len(outcome) == 1, outcome
    assert outcome[0] is None or isinstance(outcome[0], RestoreError), outcome
    assert peak < FLOOD // 4, f"{peak >> 20} MiB held for a {FLOOD >> 20} MiB stderr line"
    assert stream.pid is not None and not is_running(stream.pid)


# -- the size of a data directory its users fill ---------------------------------------------
def test_a_data_directory_beyond_the_walk_bounds_has_no_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = MariaDbEngine()
    datadir = tmp_path / "data"
    (datadir / "db").mkdir(parents=True)
    for i in range(40):
        (datadir / "db" / f"t{i}.ibd").write_bytes(b"x" * 100)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"y" * 100_000)
    (datadir / "link-to-dir").symlink_to(outside)
    (datadir / "link-to-file").symlink_to(outside / "big")
    os.mkfifo(datadir / "fifo")
    connection = {"managed": False, "datadir": str(datadir)}
    within = engine.data_size(connection)
    # The files, and the links themselves at most (never what they lead to).
    links = len(str(outside)) + len(str(outside / "big"))
    assert within is not None and 4_000 <= within <= 4_000 + links

    # Beyond the entries bound (lowered here; a data directory can be given millions).
    monkeypatch.setattr(engine_module, "TREE_MAX_ENTRIES", 30, raising=False)
    assert engine.data_size(connection) is None
    monkeypatch.setattr(engine_module, "TREE_MAX_ENTRIES", 1_000, raising=False)
    assert engine.data_size(connection) == within

    # Beyond the depth bound.
    monkeypatch.setattr(engine_module, "TREE_MAX_DEPTH", 8, raising=False)
    deep = datadir / "deep"
    path = deep
    for i in range(12):
        path = path / f"d{i}"
    path.mkdir(parents=True)
    (path / "leaf").write_bytes(b"z" * 10)
    assert engine.data_size(connection) is None
    shutil.rmtree(deep)
    assert engine.data_size(connection) == within

    # The directory itself a link, or no directory: no size.
    (tmp_path / "data-link").symlink_to(datadir)
    assert engine.data_size({"managed": False, "datadir": str(tmp_path / "data-link")}) is None
    assert engine.data_size({"managed": False, "datadir": str(datadir / "fifo")}) is None


@AS_ROOT
def test_a_backup_holding_a_table_stored_elsewhere_is_restored_neither_offline_nor_here(
    archived: dict[str, Any], base: Path
) -> None:
    """A table made with DATA DIRECTORY is backed up with an ``.isl`` file naming where it
    lives, a path the tenant can rewrite while its backup runs: ``--prepare`` opens and
    ``--move-back`` moves the table to it, which offline (as root) wrote a file of the
    tenant's anywhere. Such a backup is refused before either runs."""
    engine: MariaDbEngine = archived["engine"]
    conn = archived["conn"]
    where = Path(archived["home"]) / "files"
    with managed_session(conn) as c:
        c.execute(f"CREATE TABLE bench.away (x INT) ENGINE=InnoDB DATA DIRECTORY = '{where}'")
        c.execute("INSERT INTO bench.away VALUES (1)")
    try:
        sink = FileSink(base / "away.xb")
        try:
            meta = dict(engine.backup(conn, sink, parent=None).metadata)
        finally:
            sink.close()
    finally:
        with managed_session(conn) as c:
            c.execute("DROP TABLE bench.away")
    before = sorted((p.relative_to(where), p.stat().st_mtime_ns) for p in where.rglob("*"))

    staging = base / "offline-away"
    staging.mkdir(mode=0o700)
    with (base / "away.xb").open("rb") as fh, pytest.raises(RestoreError, match="DATA DIRECTORY"):
        offline.prepare_data_dir(staging, [RestoreInput(meta, fh)], timeout=120)
    home = base / "restored-away"
    with (base / "away.xb").open("rb") as fh, pytest.raises(RestoreError, match="DATA DIRECTORY"):
        engine.restore_instance(home, [RestoreInput(meta, fh)], InstanceRequest("away"))
    assert server_pids(home) == []
    after = sorted((p.relative_to(where), p.stat().st_mtime_ns) for p in where.rglob("*"))
    assert after == before
