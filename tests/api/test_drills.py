"""Restore drills: a backup restored into a throwaway instance, checked (SQLite's
integrity_check and row counts) and removed; a damaged backup fails its drill; the
instance view names the newest backup whose drill passed; a drill takes no room in the
project's instance quota and holds up none of its requests."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures.clocked import ManualClock, make_clocked_harness, scheduler_of
from fixtures.service import Caller, Harness, make_harness, wait_for
from strongroom.engines.base import Engine, InstanceRequest

ODD_NAME = 'we"ird; drop table t; --'


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = make_harness(tmp_path, chunk_size=64 * 1024)
    try:
        yield harness
    finally:
        harness.container.close()


def source(caller: Caller, rows: int = 3000) -> dict[str, Any]:
    inst = caller.wait_instance(caller.create_instance("src")["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, body text)")
        db.executemany("insert into t values (?, ?)", [(i, f"row {i} " * 30) for i in range(rows)])
        quoted = ODD_NAME.replace('"', '""')
        db.execute(f'create table "{quoted}"(x)')
        db.executemany(f'insert into "{quoted}" values (?)', [(1,), (2,), (3,)])
    return inst


def drill(caller: Caller, backup_id: str) -> dict[str, Any]:
    r = caller.post(f"/backups/{backup_id}/drill")
    assert r.status_code == 202, r.text
    assert r.json()["backup"]["drill_status"] == "RUNNING"

    def finished() -> dict[str, Any] | None:
        b: dict[str, Any] = caller.get(f"/backups/{backup_id}").json()["backup"]
        return b if b["drill_status"] != "RUNNING" else None

    result: dict[str, Any] = wait_for(finished, timeout=60)
    return result


def leftovers(h: Harness) -> list[Path]:
    """Drill homes and their lock files."""
    return sorted((h.settings.data_dir / "instances").glob("drill-*"))


def test_a_drill_restores_counts_and_removes_its_instance(h: Harness) -> None:
    inst = source(h.a)
    full = h.a.wait_backup(h.a.create_backup(inst["id"], "full")["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("delete from t where id >= 2000")
    incr = h.a.wait_backup(h.a.create_backup(inst["id"], "incr", incremental=1)["id"])
    instances_before = [i["id"] for i in h.a.get("/instances").json()["instances"]]

    done = drill(h.a, full["id"])
    assert done["drill_status"] == "OK" and done["drill_error"] is None, done
    assert done["drill_report"] == {
        "restored_links": 1,
        "checks": {"integrity_check": "ok"},
        "tables": 2,
        "rows": {"t": 3000, ODD_NAME: 3},
    }
    done = drill(h.a, incr["id"])
    assert done["drill_status"] == "OK", done
    assert done["drill_report"]["restored_links"] == 2
    assert done["drill_report"]["rows"] == {"t": 2000, ODD_NAME: 3}
    assert leftovers(h) == []
    assert [i["id"] for i in h.a.get("/instances").json()["instances"]] == instances_before
    with sqlite3.connect(inst["connection"]["path"]) as db:  # the source was never touched
        assert db.execute("select count(*) from t").fetchone() == (2000,)


def test_a_damaged_backup_fails_its_drill_and_leaves_nothing(h: Harness) -> None:
    inst = source(h.a)
    backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    manifest = Path(backup["locationRef"].removeprefix("file://"))
    chunk = sorted(manifest.parent.glob("chunk-*"))[1]
    raw = bytearray(chunk.read_bytes())
    raw[100] ^= 0x04
    chunk.write_bytes(bytes(raw))
    done = drill(h.a, backup["id"])
    assert done["drill_status"] == "FAILED"
    assert "chunk 1" in done["drill_error"] and "Traceback" not in done["drill_error"]
    assert done["drill_report"] is None
    assert leftovers(h) == []


def test_drills_are_scoped_and_need_a_completed_backup(h: Harness) -> None:
    inst = source(h.a, rows=10)
    backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    r = h.b.post(f"/backups/{backup['id']}/drill")
    assert r.status_code == 404 and "itemNotFound" in r.json()
    h.container.queue.hold()
    try:
        running = h.a.create_backup(inst["id"], "running")
        assert h.a.post(f"/backups/{running['id']}/drill").status_code == 409
        assert h.a.post(f"/backups/{backup['id']}/drill").status_code == 202
        assert h.a.post(f"/backups/{backup['id']}/drill").status_code == 422
    finally:
        h.container.queue.release()
    h.a.wait_backup(running["id"])
    wait_for(lambda: h.a.get(f"/backups/{backup['id']}").json()["backup"]["drill_status"] == "OK")


def test_drill_cron_drills_the_schedules_newest_backup(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2031, 3, 2))  # a Sunday
    h = make_clocked_harness(tmp_path, clock)
    try:
        inst = source(h.a, rows=50)
        body = {
            "backup_schedule": {
                "instance_id": inst["id"],
                "name": "drilled",
                "cron": "0 3 * * *",
                "drill_cron": "0 5 * * 0",
            }
        }
        schedule = h.a.post("/backup_schedules", body).json()["backup_schedule"]
        assert schedule["next_drill_at"] == "2031-03-02T05:00:00"
        clock.set(datetime(2031, 3, 2, 3))
        assert scheduler_of(h).tick() == 1
        shown = h.a.get(f"/backup_schedules/{schedule['id']}").json()["backup_schedule"]
        backup_id = shown["last_backup_id"]
        h.a.wait_backup(backup_id)
        clock.set(datetime(2031, 3, 2, 5))
        assert scheduler_of(h).drills() == 1
        assert scheduler_of(h).drills() == 0  # claimed: the next is a week later
        shown = h.a.get(f"/backup_schedules/{schedule['id']}").json()["backup_schedule"]
        assert shown["next_drill_at"] == "2031-03-09T05:00:00"
        done = wait_for(
            lambda: (
                b
                if (b := h.a.get(f"/backups/{backup_id}").json()["backup"]).get("drill_status")
                not in (None, "RUNNING")
                else None
            ),
            timeout=60,
        )
        assert done["drill_status"] == "OK"
        assert done["drill_report"]["rows"]["t"] == 50
    finally:
        h.container.close()


def engine_of(h: Harness, datastore: str) -> Engine:
    catalog = h.container.services.datastores
    version = catalog.version_by_id(catalog.get(datastore).default_version_id or "")
    return catalog.engine_for(version)


def test_the_instance_view_names_its_newest_backup_whose_drill_passed(h: Harness) -> None:
    inst = source(h.a, rows=20)
    shown = h.a.get(f"/instances/{inst['id']}").json()["instance"]
    assert shown["last_restorable_backup_id"] is None
    assert shown["last_verified_restorable_at"] is None
    older = h.a.wait_backup(h.a.create_backup(inst["id"], "older")["id"])
    newer = h.a.wait_backup(h.a.create_backup(inst["id"], "newer")["id"])
    damaged = h.a.wait_backup(h.a.create_backup(inst["id"], "damaged")["id"])
    manifest = Path(damaged["locationRef"].removeprefix("file://"))
    chunk = sorted(manifest.parent.glob("chunk-*"))[0]
    raw = bytearray(chunk.read_bytes())
    raw[60] ^= 0x10
    chunk.write_bytes(bytes(raw))

    drilled_older = drill(h.a, older["id"])
    shown = h.a.get(f"/instances/{inst['id']}").json()["instance"]
    assert shown["last_restorable_backup_id"] == older["id"]
    assert shown["last_verified_restorable_at"] == drilled_older["drilled_at"]
    drilled_newer = drill(h.a, newer["id"])
    assert drill(h.a, damaged["id"])["drill_status"] == "FAILED"
    # A failed drill of a newer backup does not move it; a passed drill of a newer one does.
    (listed,) = h.a.get("/instances").json()["instances"]
    assert listed["last_restorable_backup_id"] == newer["id"]
    assert listed["last_verified_restorable_at"] == drilled_newer["drilled_at"]
    # Another project sees neither the instance nor its drills.
    assert h.b.get(f"/instances/{inst['id']}").status_code == 404


def test_a_drill_needs_no_room_in_the_instance_quota_and_blocks_no_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = make_harness(tmp_path, chunk_size=64 * 1024, max_instances=1)
    try:
        inst = source(h.a, rows=50)
        backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
        engine = engine_of(h, "sqlite")
        restoring, release = threading.Event(), threading.Event()
        real_restore = engine.restore_instance

        def held_restore(home: Path, chain: Any, request: InstanceRequest, **kw: Any) -> Any:
            restoring.set()
            assert release.wait(30), "the drill was never released"
            return real_restore(home, chain, request, **kw)

        monkeypatch.setattr(engine, "restore_instance", held_restore)
        assert h.a.post(f"/backups/{backup['id']}/drill").status_code == 202
        assert restoring.wait(30)
        try:
            # The project's requests answer and its backups run while the drill is held.
            assert h.a.get("/instances").json()["instances"][0]["id"] == inst["id"]
            later = h.a.wait_backup(h.a.create_backup(inst["id"], "during")["id"])
            assert later["status"] == "COMPLETED"
            # At its quota of one instance: the drill's instance is not the project's.
            r = h.a.post(
                "/instances",
                {"instance": {"name": "x", "datastore": {"type": "sqlite"}}},
            )
            assert r.status_code == 413, r.text
        finally:
            release.set()
        done = wait_for(
            lambda: (
                b
                if (b := h.a.get(f"/backups/{backup['id']}").json()["backup"])["drill_status"]
                != "RUNNING"
                else None
            ),
            timeout=60,
        )
        assert done["drill_status"] == "OK", done
        assert done["drill_report"]["rows"]["t"] == 50
        assert [i["id"] for i in h.a.get("/instances").json()["instances"]] == [inst["id"]]
        assert leftovers(h) == []
    finally:
        h.container.close()


def test_a_drill_removes_what_a_dead_drill_left_and_spares_a_running_one(h: Harness) -> None:
    inst = source(h.a, rows=10)
    backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    instances = h.settings.data_dir / "instances"
    version_id = h.a.get(f"/backups/{backup['id']}").json()["backup"]["datastore"]["version_id"]
    # A drill whose process died: its home and its lock file, which nobody holds.
    dead = instances / "drill-0123456789abcdef0123456789abcdef"
    dead.mkdir(parents=True)
    (dead / "data.db").write_bytes(b"left behind")
    dead.with_name(dead.name + ".lock").write_text(version_id)
    # A drill running in another process holds its lock.
    alive = instances / "drill-fedcba9876543210fedcba9876543210"
    alive.mkdir()
    alive_lock = alive.with_name(alive.name + ".lock")
    alive_lock.write_text(version_id)
    fd = os.open(alive_lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        done = drill(h.a, backup["id"])
        assert done["drill_status"] == "OK", done
        assert not dead.exists() and not dead.with_name(dead.name + ".lock").exists()
        assert alive.is_dir() and alive_lock.exists()
    finally:
        os.close(fd)
    assert leftovers(h) == [alive, alive_lock]


def test_a_drill_counts_the_rows_of_the_first_thousand_tables_only(h: Harness) -> None:
    inst = h.a.wait_instance(h.a.create_instance("many")["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        for n in range(1003):
            db.execute(f"create table t{n:04d}(x)")
        db.execute("insert into t0000 values (1), (2)")
    backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    done = drill(h.a, backup["id"])
    assert done["drill_status"] == "OK", done
    report = done["drill_report"]
    assert report["tables"] == 1003
    assert sorted(report["rows"]) == [f"t{n:04d}" for n in range(1000)]
    assert report["rows"]["t0000"] == 2
