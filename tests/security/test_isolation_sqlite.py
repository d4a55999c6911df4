"""SQLite tenants through the real service: per-project roots, and a tenant who swaps the
directories on the way to its registered file while its backups run.

Every backup that COMPLETED is restored and compared row for row with the tenant's own
rows; every one that FAILED carries a reason.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import PROJECT_A, Harness, make_harness, wait_for
from security.wire import assert_fault
from strongroom.engines.errors import EngineError
from strongroom.engines.sqlite import SqliteEngine

FINAL = ("COMPLETED", "FAILED")
# lstat calls spent with the real directory in place between two flips, one per backup:
# from flipping flat out (most backups fail early) to letting most of a backup through.
DWELLS = (0, 0, 0, 10, 10, 30, 30, 100, 100, 300, 300, 3000)
MAX_SWAPS = 1_000_000  # per backup
REGISTRATIONS = 200
RACE_SECONDS = 20.0  # per backup
RENAME_EXCHANGE = 2
AT_FDCWD = -100

_libc = ctypes.CDLL(None, use_errno=True)


def exchange(a: Path, b: Path) -> None:
    """Swap two names atomically (renameat2 RENAME_EXCHANGE): the name never vanishes."""
    if _libc.renameat2(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def make_db(path: Path, label: str, rows: int, mode: str = "wal") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA journal_mode={mode}")
    db.execute("CREATE TABLE IF NOT EXISTS owner (id INTEGER PRIMARY KEY, who TEXT, pad BLOB)")
    db.executemany("INSERT INTO owner (who, pad) VALUES (?, randomblob(500))", [(label,)] * rows)
    db.close()
    return path


def rows(path: Path | str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute("SELECT id, who, pad FROM owner ORDER BY id").fetchall()
    finally:
        db.close()


@dataclass
class Roots:
    h: Harness
    only_a: Path  # serves project A only
    plain: Path  # serves every project


@pytest.fixture
def roots(tmp_path: Path) -> Iterator[Roots]:
    only_a, plain = tmp_path / "root-a", tmp_path / "external"
    only_a.mkdir()
    h = make_harness(
        tmp_path,
        sqlite_roots=[{"path": str(only_a), "projects": [PROJECT_A]}, str(plain)],
    )
    try:
        yield Roots(h, only_a, plain)
    finally:
        h.container.close()


def register(caller: Any, path: Path | str) -> Any:
    body = {
        "instance": {
            "name": "ext",
            "datastore": {"type": "sqlite"},
            "external": {"path": str(path)},
        }
    }
    return caller.post("/instances", body)


def registered(caller: Any, path: Path) -> str:
    r = register(caller, path)
    assert r.status_code == 200, r.text
    instance_id: str = r.json()["instance"]["id"]
    caller.wait_instance(instance_id)
    return instance_id


def backup_outcome(caller: Any, instance_id: str) -> dict[str, Any]:
    backup = caller.create_backup(instance_id)
    return caller.wait_backup(backup["id"], FINAL)


def restored_rows(caller: Any, backup_id: str) -> list[tuple[Any, ...]]:
    instance = caller.create_instance("copy", restorePoint={"backupRef": backup_id})
    ready = caller.wait_instance(instance["id"])
    return rows(ready["connection"]["path"])


# -- per-project roots -----------------------------------------------------------------
def test_project_registers_under_its_own_root_and_others_are_refused(roots: Roots) -> None:
    a_file = make_db(roots.only_a / "app" / "a.db", "a", 10)
    instance_id = registered(roots.h.a, a_file)
    assert_fault(register(roots.h.b, a_file), 403)
    b_file = make_db(roots.only_a / "b-app" / "b.db", "b", 10)
    assert_fault(register(roots.h.b, b_file), 403)
    # through a link in a root that serves B: judged on where it leads
    (roots.plain / "to-a.db").symlink_to(a_file)
    assert_fault(register(roots.h.b, roots.plain / "to-a.db"), 403)
    (roots.plain / "to-a-dir").symlink_to(a_file.parent, target_is_directory=True)
    assert_fault(register(roots.h.b, roots.plain / "to-a-dir" / "a.db"), 403)
    assert_fault(register(roots.h.b, f"{roots.plain}/../{roots.only_a.name}/app/a.db"), 403)
    # A's own backups work and restore A's rows
    done = backup_outcome(roots.h.a, instance_id)
    assert done["status"] == "COMPLETED", done.get("fail_reason")
    assert restored_rows(roots.h.a, done["id"]) == rows(a_file)


def test_plain_root_serves_every_project(roots: Roots) -> None:
    for caller, label in ((roots.h.a, "a"), (roots.h.b, "b")):
        path = make_db(roots.plain / label / "app.db", label, 20)
        done = backup_outcome(caller, registered(caller, path))
        assert done["status"] == "COMPLETED", done.get("fail_reason")
        assert restored_rows(caller, done["id"]) == rows(path)


# -- the registered file changes under the service -------------------------------------
@pytest.mark.parametrize("change", ["replaced", "symlink", "fifo", "directory_symlink"])
def test_backup_fails_with_a_reason_when_the_file_changes(
    roots: Roots, tmp_path: Path, change: str
) -> None:
    path = make_db(roots.only_a / "app2" / "a.db", "a", 20)
    instance_id = registered(roots.h.a, path)
    other = make_db(tmp_path / "other" / "a.db", "b", 20)
    if change == "replaced":
        os.replace(make_db(roots.only_a / "app2" / "new.db", "b", 20), path)
        reason = "the registered file was replaced"
    elif change == "symlink":
        path.unlink()
        path.symlink_to(other)
        reason = "symbolic link"
    elif change == "fifo":
        path.unlink()
        os.mkfifo(path)
        reason = "no longer a regular file"
    else:
        (roots.only_a / "app2").rename(roots.only_a / "app2.real")
        (roots.only_a / "app2").symlink_to(other.parent, target_is_directory=True)
        reason = "symbolic link"
    started = time.monotonic()
    done = backup_outcome(roots.h.a, instance_id)
    assert time.monotonic() - started < 30  # a FIFO does not hang the worker
    assert done["status"] == "FAILED"
    assert reason in done["fail_reason"]


# -- a tenant swapping its directory while its backups run ------------------------------
class Swapper(threading.Thread):
    """Flips ``directory`` with a link to ``victim`` and back, then keeps the directory for
    ``dwell`` lstat calls, until told to stop, ``MAX_SWAPS`` flips or ``RACE_SECONDS``; it
    always leaves the real directory in place."""

    def __init__(self, directory: Path, victim: Path, dwell: int) -> None:
        super().__init__(daemon=True)
        self.directory = directory
        self.dwell = dwell
        self.link = directory.with_name(directory.name + ".link")
        self.link.symlink_to(victim, target_is_directory=True)
        self.stop = threading.Event()
        self.swaps = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        deadline = time.monotonic() + RACE_SECONDS
        try:
            while not self.stop.is_set() and self.swaps < MAX_SWAPS and time.monotonic() < deadline:
                exchange(self.directory, self.link)  # the name is now the link
                exchange(self.directory, self.link)  # and the directory again
                self.swaps += 1
                for _ in range(self.dwell):
                    os.lstat(self.directory)
        except BaseException as exc:
            self.error = exc


@pytest.mark.parametrize("mode", ["delete", "wal"])
def test_swapping_the_directory_during_backups_never_yields_another_tenants_data(
    roots: Roots, mode: str
) -> None:
    # B's real managed instance, with rows of its own, is what the link leads to.
    b_instance = roots.h.b.create_instance("victim")
    b_path = Path(roots.h.b.wait_instance(b_instance["id"])["connection"]["path"])
    make_db(b_path, "b", 4000)
    b_rows = rows(b_path)
    # A's file has the same name in a directory A controls.
    a_path = make_db(roots.only_a / "app2" / b_path.name, "a", 4000, mode)
    a_rows = rows(a_path)
    instance_id = registered(roots.h.a, a_path)

    outcomes: list[tuple[dict[str, Any], int]] = []
    for dwell in DWELLS:
        swapper = Swapper(a_path.parent, b_path.parent, dwell)
        swapper.start()
        try:
            wait_for(lambda s=swapper: s.swaps > 0 or s.error is not None)
            done = backup_outcome(roots.h.a, instance_id)
        finally:
            swapper.stop.set()
            swapper.join(RACE_SECONDS)
            swapper.link.unlink()
        assert not swapper.is_alive() and swapper.error is None, swapper.error
        assert a_path.parent.is_dir() and not a_path.parent.is_symlink()
        outcomes.append((done, swapper.swaps))

    for done, swaps in outcomes:
        assert swaps > 0
        if done["status"] == "FAILED":
            assert done["fail_reason"], done
        else:
            assert restored_rows(roots.h.a, done["id"]) == a_rows
    assert rows(b_path) == b_rows  # and B's file was only read
    # without the swapper the same file backs up
    done = backup_outcome(roots.h.a, instance_id)
    assert done["status"] == "COMPLETED", done.get("fail_reason")
    assert restored_rows(roots.h.a, done["id"]) == a_rows


def test_registration_during_swaps_records_only_the_tenants_file(tmp_path: Path) -> None:
    """Registering while the directory flips: refused, or the tenant's own file recorded."""
    root = tmp_path / "root"
    a_path = make_db(root / "app2" / "data.db", "a", 50)
    victim = make_db(tmp_path / "victim" / "data.db", "b", 50)
    a_identity = (a_path.stat().st_dev, a_path.stat().st_ino)
    engine = SqliteEngine(allowed_roots=[root])
    swapper = Swapper(a_path.parent, victim.parent, dwell=10)
    swapper.start()
    accepted = refused = 0
    try:
        wait_for(lambda: swapper.swaps > 0 or swapper.error is not None)
        for _ in range(REGISTRATIONS):
            try:
                conn = engine.register_external({"path": str(a_path)}, project_id="p")
            except EngineError as exc:
                assert str(exc)
                refused += 1
                continue
            assert (conn["dev"], conn["ino"]) == a_identity and conn["path"] == str(a_path)
            accepted += 1
    finally:
        swapper.stop.set()
        swapper.join(RACE_SECONDS)
        swapper.link.unlink()
    assert swapper.error is None and swapper.swaps > 0
    assert accepted + refused == REGISTRATIONS


def test_managed_instances_are_private_on_disk(roots: Roots) -> None:
    instance = roots.h.a.create_instance("private")
    path = Path(roots.h.a.wait_instance(instance["id"])["connection"]["path"])
    make_db(path, "a", 10)
    done = backup_outcome(roots.h.a, instance["id"])
    assert done["status"] == "COMPLETED", done.get("fail_reason")
    copy = roots.h.a.create_instance("copy", restorePoint={"backupRef": done["id"]})
    copy_path = Path(roots.h.a.wait_instance(copy["id"])["connection"]["path"])
    for db in (path, copy_path):
        conn = sqlite3.connect(db)  # -wal and -shm exist while it is open
        conn.execute("SELECT count(*) FROM owner").fetchone()
        modes = {p.name: p.stat().st_mode & 0o777 for p in db.parent.iterdir()}
        conn.close()
        assert db.parent.stat().st_mode & 0o777 == 0o700
        assert modes == {
            "data.db": 0o600,
            "data.db-wal": 0o600,
            "data.db-shm": 0o600,
        }


# -- what SQLite does by name, when the directory is swapped under it --------------------
@pytest.mark.skipif(os.geteuid() != 0, reason="the service acting as root is what is attacked")
@pytest.mark.parametrize("step", ["registration", "backup"])
def test_sqlite_creates_nothing_as_root_where_a_swapped_directory_leads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, step: str
) -> None:
    """SQLite opens the file, then creates its ``-wal`` and ``-shm`` beside it by name. A
    tenant swapping its directory for a link right after the service's checks (here at the
    moment SQLite connects, every time) would have root create them, owned by the tenant,
    in a directory only root may write (``/etc/cron.daily``, say). SQLite works as the
    file's owner, so it can create nothing there."""
    from strongroom.engines.sqlite import engine as sqlite_engine
    from strongroom.engines.sqlite import snapshot

    nobody = 65534
    # Where the file's owner can reach its file (pytest's tmp_path is root's alone).
    base = Path(tempfile.mkdtemp(prefix="sr-sqlite-swap-"))
    os.chmod(base, 0o711)
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    root = base / "root"
    tenant = root / "t"
    tenant.mkdir(parents=True)
    os.chmod(root, 0o755)
    os.chown(tenant, nobody, nobody)
    path = make_db(tenant / "d" / "app.db", "a", 5)
    guarded = base / "root-only"  # root's, 0755: the tenant cannot write here
    guarded.mkdir(mode=0o755)
    make_db(guarded / "app.db", "b", 5)
    for p in (tenant / "d", path, guarded / "app.db"):
        os.chown(p, nobody, nobody)
        os.chmod(p, 0o777 if p.is_dir() else 0o666)
    engine = SqliteEngine(allowed_roots=[root])
    connection = engine.register_external({"path": str(path)}, project_id=PROJECT_A)
    real_connect = snapshot.connect

    def swapped_then_connect(name: str, **kwargs: Any) -> sqlite3.Connection:
        directory = tenant / "d"
        if not directory.is_symlink():
            directory.rename(tenant / "d.real")
            directory.symlink_to(guarded, target_is_directory=True)
        return real_connect(name, **kwargs)

    monkeypatch.setattr(snapshot, "connect", swapped_then_connect)
    monkeypatch.setattr(sqlite_engine, "connect", swapped_then_connect)
    with pytest.raises(EngineError):
        if step == "registration":
            engine.register_external({"path": str(path)}, project_id=PROJECT_A)
        else:
            with (tmp_path / "sink").open("wb") as sink:
                engine.backup(connection, sink, parent=None)
    assert sorted(p.name for p in guarded.iterdir()) == ["app.db"]
