"""Point-in-time restore through the API with a real managed MariaDB server: writers
commit rows stamped with their statement's start (the binary log's own stamp) while the
archiver cuts batches, restores to several times (in the quiet seconds between bursts,
and the end of the window) hold exactly the rows committed before each, a time in a gap
or outside the window is refused, an archiver killed while storing a batch leaves no
gap, and an external server is refused."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import Harness, make_harness, wait_for
from strongroom.domain.model import Instance, InstanceId, InstanceKind, InstanceStatus, ProjectId
from support.mariadb import Login, query, require_mariadb, scratch_root
from support.service_calls import (
    archive_objects,
    backup,
    check_refused_in_gap,
    check_retention,
    fault_message,
    put,
    show,
    tick,
    wait_status,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
APP_PASSWORD = "app-Pw-5c1e7a"
WRITERS = 3
MARIADB = {"type": "mariadb"}
BACKUPS: dict[str, str] = {}  # backups the retention test deletes


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    require_mariadb()
    with scratch_root("strongroom-mpitrapi-") as path:
        yield path


@pytest.fixture(scope="module")
def h(base: Path) -> Iterator[Harness]:
    root = base / "service"
    root.mkdir(mode=0o711)
    harness = make_harness(root, datastores=["sqlite", "mariadb"], engine_timeout=300)
    assert harness.container.archiver is not None
    harness.container.archiver.stop()  # the tests drive the archiver's passes
    try:
        yield harness
    finally:
        harness.container.close()


@pytest.fixture(scope="module")
def source(h: Harness) -> dict[str, Any]:
    created = h.a.create_instance(
        "source",
        datastore=MARIADB,
        databases=[{"name": "bench"}],
        users=[{"name": "app", "password": APP_PASSWORD, "databases": [{"name": "bench"}]}],
    )
    view = wait_status(lambda: show(h.a, "instance", created["id"]), "ACTIVE", timeout=300)
    login = Login.from_view(view["connection"], "app", APP_PASSWORD, "bench")
    query(
        login,
        "CREATE TABLE ticks (n int AUTO_INCREMENT PRIMARY KEY, writer int NOT NULL, "
        "at datetime(6) NOT NULL)",
    )
    return {"id": created["id"], "login": login}


def server_now(login: Login) -> datetime:
    value: datetime = query(login, "SELECT UTC_TIMESTAMP(6)")[0][0]
    return value


class Writers:
    """Threads committing rows, each stamped with its statement's start (UTC), in bursts
    the test starts and pauses."""

    def __init__(self, login: Login) -> None:
        self.login = login
        self.running = threading.Event()
        self.done = threading.Event()
        self.idle = [threading.Event() for _ in range(WRITERS)]
        self.errors: list[BaseException] = []
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(WRITERS)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self, index: int) -> None:
        try:
            db = self.login.connect()
            with db.cursor() as cur:
                while not self.done.is_set():
                    if not self.running.is_set():
                        self.idle[index].set()
                        self.running.wait(0.05)
                        continue
                    self.idle[index].clear()
                    cur.execute(
                        "INSERT INTO ticks (writer, at) VALUES (%s, UTC_TIMESTAMP(6))", (index,)
                    )
            db.close()
        except BaseException as exc:  # reported by pause()
            self.errors.append(exc)
            self.idle[index].set()

    def burst(self) -> None:
        self.running.set()

    def pause(self) -> None:
        self.running.clear()
        for flag in self.idle:
            assert flag.wait(30)
        assert not self.errors, self.errors

    def stop(self) -> None:
        self.running.clear()
        self.done.set()
        for thread in self.threads:
            thread.join(30)


def quiet_time(login: Login) -> datetime:
    """With the writers paused: a time 0.25 s into the next whole second, once the
    server's clock is past it (so every row so far is stamped in an earlier second and
    the next burst in a later one)."""
    target = server_now(login).replace(microsecond=0) + timedelta(seconds=1.25)
    wait_for(lambda: server_now(login) > target + timedelta(seconds=0.3), timeout=10)
    return target


def rows_stamped_before(login: Login, when: datetime) -> list[int]:
    second = when.replace(microsecond=0)
    return [r[0] for r in query(login, "SELECT n FROM ticks WHERE at < %s ORDER BY n", (second,))]


def iso(when: datetime) -> str:
    return when.isoformat(timespec="microseconds") + "Z"


def restored_rows(h: Harness, name: str, restore_point: dict[str, Any]) -> list[int]:
    created = h.a.create_instance(name, datastore=MARIADB, restorePoint=restore_point)
    view = wait_status(lambda: show(h.a, "instance", created["id"]), "ACTIVE", timeout=300)
    try:
        login = Login.from_view(view["connection"], "app", APP_PASSWORD, "bench")
        return [r[0] for r in query(login, "SELECT n FROM ticks ORDER BY n")]
    finally:
        assert h.a.delete(f"/instances/{created['id']}").status_code == 202


def test_restores_to_times_under_load(h: Harness, source: dict[str, Any]) -> None:
    path = f"/instances/{source['id']}/pitr"
    r = put(h.a, path, {"pitr": {"enabled": True, "storage_driver": "local"}})
    assert r.status_code == 200, r.text
    assert tick(h) == 1
    login = source["login"]
    full = backup(h.a, source["id"], "base")
    BACKUPS["base"] = full["id"]
    writers = Writers(login)
    times: list[datetime] = []
    try:
        for _ in range(3):
            writers.burst()
            # Batches are cut while the writers commit.
            wait_for(lambda: query(login, "SELECT COUNT(*) FROM ticks")[0][0] > 0, timeout=10)
            time.sleep(0.5)  # half a second of load before the cut
            assert tick(h) == 1
            time.sleep(0.5)
            writers.pause()
            times.append(quiet_time(login))
    finally:
        writers.stop()
    assert tick(h) == 1
    expected = [rows_stamped_before(login, t) for t in times]
    assert len(expected[0]) > WRITERS and len(set(map(len, expected))) == len(expected)

    view = show(h.a, "instance", source["id"])
    (window,) = view["restorable_window"]
    assert window["from"] <= iso(times[0]) and iso(times[-1]) <= window["to"]
    assert view["pitr"]["enabled"] is True
    for i in (0, 1):
        point = {"instanceRef": source["id"], "restoreTime": iso(times[i])}
        assert restored_rows(h, f"to-{i}", point) == expected[i]
    point = {"backupRef": full["id"], "restoreTime": window["to"]}
    everything = [r[0] for r in query(login, "SELECT n FROM ticks ORDER BY n")]
    assert restored_rows(h, "to-end", point) == everything

    # Before the window, and another project's source.
    early = iso(datetime.now(UTC).replace(tzinfo=None) - timedelta(days=1))
    body = {"name": "x", "datastore": MARIADB}
    r = h.a.post(
        "/instances",
        {"instance": dict(body, restorePoint={"instanceRef": source["id"], "restoreTime": early})},
    )
    assert r.status_code == 400 and window["from"] in fault_message(r), r.text
    r = h.b.post(
        "/instances",
        {"instance": dict(body, restorePoint={"instanceRef": source["id"], "restoreTime": early})},
    )
    assert r.status_code == 404, r.text


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from strongroom.bootstrap import build
    from strongroom.config import Settings

    root, marker = Path(sys.argv[1]), Path(sys.argv[2])

    class Stall:
        def __init__(self, inner):
            self.inner = inner
        def __getattr__(self, name):
            return getattr(self.inner, name)
        def put(self, key, data):
            if "/wal/" in key and key.endswith("manifest.json"):
                # Whole or not at all: the test reads the key as soon as the marker exists.
                marker.with_suffix(".part").write_text(key)
                marker.with_suffix(".part").replace(marker)
                time.sleep(3600)  # killed here: the batch's chunks are stored, not its manifest
            self.inner.put(key, data)

    settings = Settings(
        data_dir=root / "data",
        datastores=["sqlite", "mariadb"],
        sqlite_roots=[root / "external"],
        engine_timeout=300,
    )
    container = build(settings, run_scheduler=False, wrap_store=lambda _name, b: Stall(b))
    container.archiver.stop()
    container.archiver.tick()
    """
)


def test_an_archiver_killed_while_storing_leaves_no_gap(
    h: Harness, source: dict[str, Any], base: Path
) -> None:
    login = source["login"]
    with h.container.uow() as uow:
        before = uow.pitr.batches(source["id"])
        policy = uow.pitr.policy(source["id"])
    assert policy is not None and policy.next_start == before[-1].stop
    query(login, "INSERT INTO ticks (writer, at) VALUES (9, UTC_TIMESTAMP(6))")
    marker = base / "killed-at"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(base / "service"), str(marker)], env=env
    )
    try:
        wait_for(marker.exists, timeout=120)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    killed = marker.read_text().rsplit("/", 1)[0] + "/"
    # One batch's directory, never a wider prefix that every object would match.
    assert f"/{source['id']}/wal/" in killed and not killed.endswith("/wal/")
    assert [p for p in archive_objects(h, source["id"]) if killed in str(p)]  # its chunks
    with h.container.uow() as uow:
        assert uow.pitr.batches(source["id"]) == before  # nothing recorded
        policy = uow.pitr.policy(source["id"])
    assert policy is not None and policy.next_start == before[-1].stop
    # The next pass removes the killed pass's chunks and archives from the same position.
    assert tick(h) == 1
    assert not [p for p in archive_objects(h, source["id"]) if killed in str(p)]
    with h.container.uow() as uow:
        after = uow.pitr.batches(source["id"])
    assert after[-1].start == before[-1].stop
    (window,) = show(h.a, "instance", source["id"])["restorable_window"]
    everything = [r[0] for r in query(login, "SELECT n FROM ticks ORDER BY n")]
    point = {"instanceRef": source["id"], "restoreTime": window["to"]}
    assert restored_rows(h, "after-kill", point) == everything


def test_a_pause_splits_the_window_and_a_time_in_it_is_refused(
    h: Harness, source: dict[str, Any]
) -> None:
    path = f"/instances/{source['id']}/pitr"
    login = source["login"]
    assert put(h.a, path, {"pitr": {"enabled": False}}).status_code == 200
    assert tick(h) == 0
    query(login, "INSERT INTO ticks (writer, at) VALUES (8, UTC_TIMESTAMP(6))")
    unarchived = server_now(login)
    assert put(h.a, path, {"pitr": {"enabled": True}}).status_code == 200
    assert tick(h) == 1  # a new run
    BACKUPS["after-pause"] = backup(h.a, source["id"], "after-pause")["id"]
    query(login, "INSERT INTO ticks (writer, at) VALUES (8, UTC_TIMESTAMP(6))")
    assert tick(h) == 1
    check_refused_in_gap(h, source["id"], "mariadb", iso(unarchived))


def test_retention_keeps_the_archive_back_to_the_oldest_backup(
    h: Harness, source: dict[str, Any]
) -> None:
    check_retention(h, source["id"], oldest=BACKUPS["base"], newest=BACKUPS["after-pause"])


def test_a_reset_binary_log_starts_a_new_run_and_the_old_one_still_restores(
    h: Harness, source: dict[str, Any]
) -> None:
    """A tenant with root may RESET MASTER: the stored position is gone (a gap), the new
    run starts at lower positions, and a time in the older run still restores."""
    path = f"/instances/{source['id']}/pitr"
    login = source["login"]
    r = h.a.post(f"/instances/{source['id']}/root", {})
    assert r.status_code == 200, r.text
    root = dataclasses.replace(login, user="root", password=r.json()["user"]["password"])
    query(login, "DELETE FROM ticks")
    assert put(h.a, path, {"pitr": {"enabled": True}}).status_code == 200
    assert tick(h) == 1
    backup(h.a, source["id"], "before-reset")
    query(login, "INSERT INTO ticks (writer, at) VALUES (7, UTC_TIMESTAMP(6))")
    kept = [r[0] for r in query(login, "SELECT n FROM ticks")]
    before_reset = quiet_time(login)
    assert tick(h) == 1
    query(root, "RESET MASTER")
    query(login, "INSERT INTO ticks (writer, at) VALUES (7, UTC_TIMESTAMP(6))")
    assert tick(h) == 0  # the position is gone: a new run starts
    with h.container.uow() as uow:
        policy = uow.pitr.policy(source["id"])
    assert policy is not None and "gap" in (policy.last_error or "")
    assert tick(h) == 1
    backup(h.a, source["id"], "after-reset")
    query(login, "INSERT INTO ticks (writer, at) VALUES (7, UTC_TIMESTAMP(6))")
    assert tick(h) == 1
    first, second = show(h.a, "instance", source["id"])["restorable_window"]
    assert first["to"] < second["from"]
    point = {"instanceRef": source["id"], "restoreTime": iso(before_reset)}
    assert restored_rows(h, "before-reset", point) == kept
    everything = [r[0] for r in query(login, "SELECT n FROM ticks ORDER BY n")]
    point = {"instanceRef": source["id"], "restoreTime": second["to"]}
    assert restored_rows(h, "after-reset", point) == everything


def test_external_servers_are_refused(h: Harness) -> None:
    """Registered servers are not archived: 400 with the reason, nothing recorded."""
    catalog = h.container.services.datastores
    version_id = catalog.get("mariadb").default_version_id or ""
    now = datetime.now(UTC).replace(tzinfo=None)
    instance_id = "0b7e3f52-6a1d-4c8e-9d2f-3a5b7c9e1f20"
    with h.container.uow(write=True) as uow:
        uow.instances.add(
            Instance(
                id=InstanceId(instance_id),
                project_id=ProjectId(h.a.project),
                name="registered",
                kind=InstanceKind.EXTERNAL,
                datastore_version_id=version_id,
                status=InstanceStatus.ACTIVE,
                created=now,
                updated=now,
            ),
            None,  # the policy is refused before any connection is opened
        )
        uow.commit()
    r = put(h.a, f"/instances/{instance_id}/pitr", {"pitr": {"enabled": True}})
    assert r.status_code == 400, r.text
    assert "external" in fault_message(r)
    with h.container.uow() as uow:
        assert uow.pitr.policy(instance_id) is None
