"""A schedule's restore drill is held to the rule a requested one is: a project has at most
one drill queued or running. A due drill of a project that has one is skipped, and the
schedule records why beside (not over) its backup run's outcome; another project's due
drill starts; the next drill of the skipped schedule runs at its next time. A drill's
restore ends with its budget: from a store too slow to give the backup in time, the drill
stops reading at the budget and fails saying so. Through the API, in-process, on a clock
the test holds (the scheduler loop is off), real SQLite instances and backups in a local
store (slowed down by a wrapper)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fakes import FailingBackend
from fixtures.clocked import ManualClock, make_clocked_harness, scheduler_of
from fixtures.service import Caller, Harness, make_harness, wait_for

SUNDAY = datetime(2031, 3, 2)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(SUNDAY)


@pytest.fixture
def h(tmp_path: Path, clock: ManualClock) -> Iterator[Harness]:
    harness = make_clocked_harness(tmp_path, clock)
    try:
        yield harness
    finally:
        harness.container.queue.release()
        harness.container.close()


def source(caller: Caller) -> str:
    inst = caller.wait_instance(caller.create_instance("src")["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(x)")
        db.executemany("insert into t values (?)", [(i,) for i in range(7)])
    return str(inst["id"])


def drilled_schedule(caller: Caller, instance_id: str) -> dict[str, Any]:
    body = {
        "backup_schedule": {
            "instance_id": instance_id,
            "name": "nightly",
            "cron": "0 3 * * *",
            "drill_cron": "0 5 * * 0",  # Sundays at five
        }
    }
    r = caller.post("/backup_schedules", body)
    assert r.status_code == 200, r.text
    schedule: dict[str, Any] = r.json()["backup_schedule"]
    return schedule


def shown(caller: Caller, schedule_id: str) -> dict[str, Any]:
    view: dict[str, Any] = caller.get(f"/backup_schedules/{schedule_id}").json()["backup_schedule"]
    return view


def drill_status(caller: Caller, backup_id: str) -> str | None:
    status: str | None = caller.get(f"/backups/{backup_id}").json()["backup"].get("drill_status")
    return status


def test_a_scheduled_drill_is_skipped_while_the_project_has_a_drill_running(
    h: Harness, clock: ManualClock
) -> None:
    mine, theirs = source(h.a), source(h.b)
    asked = h.a.wait_backup(h.a.create_backup(mine, "asked for")["id"])["id"]
    schedule = drilled_schedule(h.a, mine)
    other = drilled_schedule(h.b, theirs)
    clock.set(datetime(2031, 3, 2, 3))
    assert scheduler_of(h).tick() == 2
    scheduled = shown(h.a, schedule["id"])["last_backup_id"]
    h.a.wait_backup(scheduled)
    h.b.wait_backup(shown(h.b, other["id"])["last_backup_id"])
    scheduler_of(h).follow_up()

    h.container.queue.hold()  # the requested drill stays queued
    assert h.a.post(f"/backups/{asked}/drill").status_code == 202
    clock.set(datetime(2031, 3, 2, 5))
    assert scheduler_of(h).drills() == 1  # the other project's only
    view = shown(h.a, schedule["id"])
    error = view["last_drill_error"]
    assert error.startswith(f"restore drill of backup {scheduled} skipped"), error
    assert "at most 1 at a time" in error, error
    assert view["last_drill_backup_id"] == scheduled
    assert view["last_drill_at"] == "2031-03-02T05:00:00"
    # The backup run's record is kept as it was.
    assert (view["last_backup_id"], view["last_status"], view["last_error"]) == (
        scheduled,
        "COMPLETED",
        None,
    )
    assert view["next_drill_at"] == "2031-03-09T05:00:00"
    assert drill_status(h.a, scheduled) is None  # nothing was queued for it
    assert drill_status(h.b, shown(h.b, other["id"])["last_backup_id"]) == "RUNNING"

    h.container.queue.release()
    wait_for(lambda: drill_status(h.a, asked) == "OK", timeout=60)
    h.wait_idle()
    clock.set(datetime(2031, 3, 9, 5))  # the next Sunday: the project has room again
    assert scheduler_of(h).drills() == 2
    wait_for(lambda: drill_status(h.a, scheduled) == "OK", timeout=60)
    view = shown(h.a, schedule["id"])
    assert (view["last_drill_at"], view["last_drill_error"]) == ("2031-03-09T05:00:00", None)


CHUNK = 64 * 1024
SLOW_GET = 1.0  # seconds a chunk takes to come from the slowed store
BUDGET = 2.0  # seconds the drill may take


def test_a_drill_from_a_store_too_slow_stops_reading_at_its_budget(tmp_path: Path) -> None:
    stores: dict[str, FailingBackend] = {}

    def wrap(name: str, backend: Any) -> FailingBackend:
        stores[name] = FailingBackend(backend)
        return stores[name]

    h = make_harness(tmp_path, wrap_store=wrap, chunk_size=CHUNK, drill_timeout=BUDGET)
    try:
        inst = h.a.wait_instance(h.a.create_instance("big")["id"])
        with sqlite3.connect(inst["connection"]["path"]) as db:
            db.execute("create table t(id integer primary key, body blob)")
            db.executemany(
                "insert into t values (?, randomblob(4000))", [(i,) for i in range(2000)]
            )
        backup = h.a.wait_backup(h.a.create_backup(inst["id"], "big")["id"])
        chunks = -(-int(backup["stored_bytes"]) // CHUNK)
        # Read whole, the backup takes several budgets even on every fetch thread at once.
        threads = h.settings.transfer_threads * 2
        assert chunks * SLOW_GET / threads > 3 * BUDGET, (chunks, threads)
        stores["local"].slow_gets = SLOW_GET

        started = time.monotonic()
        assert h.a.post(f"/backups/{backup['id']}/drill").status_code == 202
        wait_for(lambda: drill_status(h.a, backup["id"]) != "RUNNING", timeout=120)
        took = time.monotonic() - started
        view = h.a.get(f"/backups/{backup['id']}").json()["backup"]
        assert view["drill_status"] == "FAILED", view
        error = view["drill_error"]
        assert f"did not finish within {BUDGET:g} s" in error, error
        assert "ran out of time while reading the backup" in error, error
        assert took < 2 * BUDGET + 2 * SLOW_GET, took
        drills = h.settings.data_dir / "instances"
        assert not [p.name for p in drills.glob("drill-*")]
    finally:
        h.container.close()
