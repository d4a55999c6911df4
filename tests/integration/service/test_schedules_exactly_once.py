"""Two schedulers racing on one metadata database (one SQLite file, or the machine's
PostgreSQL or MariaDB): every due tick yields exactly one backup, and every finished backup is
followed up (verified, pruned) exactly once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures.clocked import ManualClock, make_clocked_harness, scheduler_of
from fixtures.metadata import mariadb_database, postgresql_database
from fixtures.service import Harness, wait_for

ROUNDS = 5


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def metadata(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    if request.param == "sqlite":
        yield {}
    else:
        database = postgresql_database if request.param == "postgresql" else mariadb_database
        with database("strongroom_sched_") as url:
            yield {"database_url": url}


def race(calls: list[Callable[[], int]]) -> list[int]:
    """Run the calls at the same moment on their own threads; their results in order."""
    barrier = threading.Barrier(len(calls))
    results: list[int] = [0] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[i] = calls[i]()
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return results


def test_each_due_tick_yields_exactly_one_backup(tmp_path: Path, metadata: dict[str, Any]) -> None:
    clock = ManualClock(datetime(2031, 5, 1))
    data_dir = tmp_path / "data"
    one = make_clocked_harness(tmp_path, clock, data_dir=data_dir, **metadata)
    two: Harness | None = None
    try:
        # The second process: same metadata database, same stores and instances directory.
        two = make_clocked_harness(tmp_path, clock, data_dir=data_dir, **metadata)
        inst = one.a.wait_instance(one.a.create_instance("db")["id"])
        r = one.a.post(
            "/backup_schedules",
            {
                "backup_schedule": {
                    "instance_id": inst["id"],
                    "name": "raced",
                    "cron": "*/5 * * * *",
                    "incremental": True,
                    "full_every": 3,
                    "verify": True,
                    "retention": {"keep_last": 4},
                }
            },
        )
        assert r.status_code == 200, r.text
        schedule_id = r.json()["backup_schedule"]["id"]
        schedulers = [scheduler_of(one), scheduler_of(two)]
        made = []
        for _ in range(ROUNDS):
            due = one.a.get(f"/backup_schedules/{schedule_id}").json()["backup_schedule"]
            clock.set(datetime.fromisoformat(due["next_run_at"]))
            # Jobs wait while the schedulers race: a tick also follows up finished runs, and
            # a backup done before the second race would leave the follow-up race nothing.
            for h in (one, two):
                h.container.queue.hold()
            started = race([s.tick for s in schedulers])
            assert sorted(started) == [0, 1], started
            assert race([s.tick for s in schedulers]) == [0, 0]  # the tick is spent
            for h in (one, two):
                h.container.queue.release()
            now = one.a.get(f"/backup_schedules/{schedule_id}").json()["backup_schedule"]
            backup = one.a.wait_backup(now["last_backup_id"])
            made.append(backup)
            assert sorted(race([s.follow_up for s in schedulers])) == [0, 1]
            wait_for(
                lambda bid=backup["id"]: (
                    one.a.get(f"/backups/{bid}").json()["backup"].get("verify_status") == "OK"
                )
            )
        assert len({b["id"] for b in made}) == ROUNDS
        ids = [b["id"] for b in made]
        assert [b["parent_id"] for b in made] == [None, ids[0], ids[1], None, ids[3]]
        one.wait_idle()
        two.wait_idle()
        listed = one.a.get("/backups?limit=1000").json()["backups"]
        mine = {b["id"] for b in listed if b.get("schedule_id") == schedule_id}
        # keep_last 4 keeps the last four and the full the oldest of them is built on.
        assert mine == set(ids)
    finally:
        if two is not None:
            two.container.close()
        one.container.close()


def test_two_claims_of_one_due_run_have_one_winner(
    tmp_path: Path, metadata: dict[str, Any]
) -> None:
    """Both processes read the run as due before either claims it: the conditional UPDATE
    lets exactly one through, round after round."""
    clock = ManualClock(datetime(2031, 5, 1))
    data_dir = tmp_path / "data"
    one = make_clocked_harness(tmp_path, clock, data_dir=data_dir, **metadata)
    two: Harness | None = None
    try:
        two = make_clocked_harness(tmp_path, clock, data_dir=data_dir, **metadata)
        inst = one.a.wait_instance(one.a.create_instance("db")["id"])
        body = {"backup_schedule": {"instance_id": inst["id"], "name": "n", "cron": "0 * * * *"}}
        schedule_id = one.a.post("/backup_schedules", body).json()["backup_schedule"]["id"]
        factories = [one.container.uow, two.container.uow]
        for round_ in range(20):
            with factories[0]() as uow:
                seen = uow.schedules.find(schedule_id)
            assert seen is not None
            following = seen.next_run_at.replace(year=2032 + round_)

            def claim(
                uow_factory: Any, expected: datetime = seen.next_run_at, to: datetime = following
            ) -> int:
                with uow_factory(write=True) as uow:
                    won = uow.schedules.claim(schedule_id, expected, to)
                    uow.commit()
                return int(won)

            results = race([lambda f=f: claim(f) for f in factories])
            assert sorted(results) == [0, 1], (round_, results)
    finally:
        if two is not None:
            two.container.close()
        one.container.close()
