"""A schedule's ``copy_to``: each backup it makes is copied to another store, where
``copy_retention`` keeps its own number of copies (clock moved by the test, real SQLite
instances, two real local stores)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures.clocked import ManualClock, make_clocked_harness, scheduler_of
from fixtures.service import Harness

START = datetime(2031, 3, 2, 0, 0, 0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def h(tmp_path: Path, clock: ManualClock) -> Iterator[Harness]:
    harness = make_clocked_harness(
        tmp_path,
        clock,
        stores=[
            {"name": "local", "kind": "local", "root": str(tmp_path / "primary")},
            {"name": "offsite", "kind": "local", "root": str(tmp_path / "offsite")},
        ],
        default_store="local",
    )
    try:
        yield harness
    finally:
        harness.container.close()


def schedule(h: Harness, instance_id: str, **extra: Any) -> Any:
    body = {"backup_schedule": {"instance_id": instance_id, "name": "n", "cron": "0 3 * * *"}}
    body["backup_schedule"].update(extra)
    return h.a.post("/backup_schedules", body)


def instance(h: Harness) -> tuple[str, str]:
    inst = h.a.create_instance("db")
    path = h.a.wait_instance(inst["id"])["connection"]["path"]
    with sqlite3.connect(path) as db:
        db.execute("create table notes(id integer primary key, body text)")
        db.executemany("insert into notes values (?, ?)", [(i, "x" * 50) for i in range(500)])
    return inst["id"], path


def run_due(h: Harness, clock: ManualClock, schedule_id: str) -> dict[str, Any]:
    shown = h.a.get(f"/backup_schedules/{schedule_id}").json()["backup_schedule"]
    clock.set(datetime.fromisoformat(shown["next_run_at"]))
    assert scheduler_of(h).tick() == 1
    last = h.a.get(f"/backup_schedules/{schedule_id}").json()["backup_schedule"]
    backup = h.a.wait_backup(last["last_backup_id"])
    scheduler_of(h).follow_up()  # starts the copy
    h.wait_idle()
    scheduler_of(h).follow_up()  # nothing pending: a no-op
    return backup


def copies(h: Harness) -> dict[str, list[dict[str, Any]]]:
    return {b["id"]: b["copies"] for b in h.a.get("/backups").json()["backups"]}


def test_each_scheduled_backup_is_copied_and_copy_retention_keeps_its_own_count(
    h: Harness, clock: ManualClock, tmp_path: Path
):
    inst, _ = instance(h)
    r = schedule(
        h,
        inst,
        copy_to={"storage_driver": "offsite", "swift_container": "far"},
        copy_retention={"keep_last": 1},
        retention={"keep_last": 3},
    )
    assert r.status_code == 200, r.text
    created = r.json()["backup_schedule"]
    assert created["copy_to"] == {"storage_driver": "offsite", "swift_container": "far"}
    assert created["copy_retention"] == {"keep_last": 1}
    first = run_due(h, clock, created["id"])
    assert [c["state"] for c in copies(h)[first["id"]]] == ["COMPLETED"]
    assert (tmp_path / "offsite" / "far" / first["id"] / "manifest.json").exists()
    # Copy retention runs when a run is followed up, as its own copy starts: that copy
    # counts as running (kept), so the second run keeps the first copy as the newest done.
    second = run_due(h, clock, created["id"])
    now = copies(h)
    assert [c["state"] for c in now[first["id"]]] == ["COMPLETED"]
    assert [c["state"] for c in now[second["id"]]] == ["COMPLETED"]
    third = run_due(h, clock, created["id"])
    now = copies(h)
    assert now[first["id"]] == []  # dropped from the copy store: keep_last 1 kept the second
    assert [c["state"] for c in now[second["id"]]] == ["COMPLETED"]
    assert [c["state"] for c in now[third["id"]]] == ["COMPLETED"]
    assert not (tmp_path / "offsite" / "far" / first["id"]).exists()
    # Its backup stays in the primary store (primary retention keeps 3).
    assert h.a.get(f"/backups/{first['id']}").json()["backup"]["status"] == "COMPLETED"
    assert (tmp_path / "primary" / h.settings.default_container / first["id"]).is_dir()


def test_copy_to_is_checked(h: Harness):
    inst, _ = instance(h)
    same = schedule(h, inst, copy_to={"storage_driver": "local"})
    assert same.status_code == 400 and "another store" in same.text
    assert schedule(h, inst, copy_to={"storage_driver": "nowhere"}).status_code == 400
    assert schedule(h, inst, copy_retention={"keep_last": 2}).status_code == 400
    bad = schedule(h, inst, copy_to={"storage_driver": "offsite", "swift_container": ".."})
    assert bad.status_code == 400
    r = schedule(h, inst, copy_to={"storage_driver": "offsite"}, copy_retention={"keep_x": 1})
    assert r.status_code == 400
    plain = schedule(h, inst)
    assert plain.status_code == 200
    assert plain.json()["backup_schedule"]["copy_to"] is None


def test_copy_retention_keeps_the_chain_of_a_kept_copy(h: Harness, clock: ManualClock):
    inst, _ = instance(h)
    created = schedule(
        h,
        inst,
        incremental=True,
        full_every=3,
        copy_to={"storage_driver": "offsite"},
        copy_retention={"keep_last": 1},
    ).json()["backup_schedule"]
    runs = [run_due(h, clock, created["id"]) for _ in range(4)]
    assert [r["parent_id"] for r in runs] == [None, runs[0]["id"], runs[1]["id"], None]
    # Run 4 is followed up with run 3 the newest copy done: run 3 and its parents stay.
    now = copies(h)
    assert all(len(now[r["id"]]) == 1 for r in runs)
    runs.append(run_due(h, clock, created["id"]))
    assert runs[4]["parent_id"] == runs[3]["id"]
    now = copies(h)
    assert [len(now[r["id"]]) for r in runs] == [0, 0, 0, 1, 1]
