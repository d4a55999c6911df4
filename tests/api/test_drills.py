"""Restore drills: a backup restored into a throwaway instance, checked (SQLite's
integrity_check and row counts) and removed; a damaged backup fails its drill."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures.clocked import ManualClock, make_clocked_harness, scheduler_of
from fixtures.service import Caller, Harness, make_harness, wait_for

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
    return sorted((h.settings.data_dir / "instances").glob("drill-*"))


def test_a_drill_restores_counts_and_removes_its_instance(h: Harness) -> None:
    inst = source(h.a)
    full = h.a.wait_backup(h.a.create_backup(inst["id"], "full")["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("delete from t where id >= 2000")
    incr = h.a.wait_backup(h.a.create_backup(inst["id"], "incr", incremental=1)["id"])
    instances_before = h.a.get("/instances").json()["instances"]

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
    assert h.a.get("/instances").json()["instances"] == instances_before
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
