"""Finished jobs are deleted once they are older than ``job_history_hours``: a project
asking for verification after verification (each takes milliseconds) does not grow the
metadata without end. Unfinished jobs stay. In-process, real SQLite instances and a local
store, on a clock the test holds (the scheduler's pass is run by the test); the purge's
statement on each metadata database (SQLite, real PostgreSQL and MariaDB)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from fixtures.clocked import ManualClock, make_clocked_harness, scheduler_of
from fixtures.metadata import mariadb_database, postgresql_database
from fixtures.service import Caller, Harness, wait_for
from strongroom.domain.model import Job, JobId, JobKind, JobState
from strongroom.persistence import migrate
from strongroom.persistence.unit_of_work import SqlUnitOfWork, make_engine, unit_of_work_factory

START = datetime(2031, 3, 2, 12)
ASKED = 30


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def h(tmp_path: Path, clock: ManualClock) -> Iterator[Harness]:
    harness = make_clocked_harness(tmp_path, clock, job_history_hours=24)
    try:
        yield harness
    finally:
        harness.container.queue.release()
        harness.container.close()


def jobs(h: Harness) -> dict[str, int]:
    engine = h.container.metadata_engine
    with engine.connect() as conn:
        rows = conn.execute(text("select state, count(*) from jobs group by state"))
        return {state: int(n) for state, n in rows}


def verified(caller: Caller, backup_id: str) -> dict[str, Any]:
    assert caller.post(f"/backups/{backup_id}/verify").status_code == 202

    def done() -> dict[str, Any] | None:
        b: dict[str, Any] = caller.get(f"/backups/{backup_id}").json()["backup"]
        return b if b["verify_status"] != "RUNNING" else None

    result: dict[str, Any] = wait_for(done)
    return result


def test_finished_jobs_go_after_their_time_and_unfinished_ones_stay(
    h: Harness, clock: ManualClock
) -> None:
    inst = h.a.wait_instance(h.a.create_instance("db")["id"])
    backup = h.a.wait_backup(h.a.create_backup(inst["id"], "b")["id"])
    for _ in range(ASKED):
        assert verified(h.a, backup["id"])["verify_status"] == "OK"
    h.wait_idle()
    finished = jobs(h).get("done", 0)
    assert finished >= ASKED + 2  # the instance's, the backup's and every verification
    h.container.queue.hold()  # one more, left queued
    assert h.a.post(f"/backups/{backup['id']}/verify").status_code == 202

    clock.set(START + timedelta(hours=23))  # within their time: all kept
    scheduler_of(h).tick()
    assert jobs(h) == {"done": finished, "queued": 1}
    clock.set(START + timedelta(hours=25))
    scheduler_of(h).tick()
    assert jobs(h) == {"queued": 1}
    # The job left waiting still runs and finishes.
    h.container.queue.release()
    wait_for(lambda: jobs(h) == {"done": 1})


@pytest.mark.parametrize("database", ["sqlite", "postgresql", "mariadb"])
def test_the_purge_takes_finished_jobs_only_in_batches_on_every_metadata_database(
    tmp_path: Path, database: str
) -> None:
    with contextlib.ExitStack() as stack:
        url = {
            "sqlite": lambda: f"sqlite:///{tmp_path / 'meta.db'}",
            "postgresql": lambda: stack.enter_context(postgresql_database("strongroom_jobs_")),
            "mariadb": lambda: stack.enter_context(mariadb_database("strongroom_jobs_")),
        }[database]()
        engine = make_engine(url)
        stack.callback(engine.dispose)
        migrate.upgrade(engine)
        sessions = unit_of_work_factory(engine)

        def uow(**kw: Any) -> SqlUnitOfWork:
            return SqlUnitOfWork(sessions, **kw)

        states = [JobState.DONE, JobState.FAILED, JobState.QUEUED, JobState.RUNNING]
        with uow(write=True) as u:
            for i in range(40):
                at = START - timedelta(hours=48 if i % 2 else 1)
                state = states[i % 4]
                u.jobs.add(Job(JobId(f"j{i:02d}"), JobKind.VERIFY_BACKUP, "b", state, at, at))
            u.commit()
        with uow(write=True) as u:
            # Old and finished: j01, j05, … (DONE never old here: even i are recent).
            assert u.jobs.purge_finished(START - timedelta(hours=24), 3) == 3
            u.commit()
        with uow(write=True) as u:
            assert u.jobs.purge_finished(START - timedelta(hours=24), 100) == 7
            u.commit()
        with uow() as u:
            left = {j.id for j in u.jobs.unfinished()}
            assert u.jobs.find("j00") is not None  # DONE, recent
            assert u.jobs.find("j01") is None and u.jobs.find("j05") is None  # FAILED, old
        assert left == {f"j{i:02d}" for i in range(40) if states[i % 4] not in states[:2]}
