"""No project floods the shared workers: a schedule fires at most once a minute, a project
has at most MAX_SCHEDULES schedules, and at most one verification and one restore drill of
its asking are queued or running at a time. Through the API, in-process, on a clock the
test holds (the scheduler loop is off)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures.clocked import ManualClock, make_clocked_harness
from fixtures.service import Caller, Harness, wait_for
from security.wire import assert_fault

MAX_SCHEDULES = 100  # services.schedules.MAX_SCHEDULES, the default


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = make_clocked_harness(tmp_path, ManualClock(datetime(2031, 3, 2)))
    try:
        yield harness
    finally:
        harness.container.queue.release()
        harness.container.close()


def active_instance(caller: Caller) -> str:
    return str(caller.wait_instance(caller.create_instance("db")["id"])["id"])


def schedule_body(instance_id: str, **extra: Any) -> dict[str, Any]:
    spec = {"instance_id": instance_id, "name": "s", "cron": "0 3 * * *", **extra}
    return {"backup_schedule": spec}


def put(caller: Caller, path: str, body: Any) -> Any:
    return caller.client.put(caller.url(path), json=body, headers=caller._headers(None))


@pytest.mark.parametrize(
    ("field", "cron"),
    [
        ("cron", "* * * * * *"),  # every second
        ("cron", "* * * * * */10"),
        ("cron", "0 3 * * * 0,30"),
        ("cron", "0 3 * * * 0-59"),
        ("cron", "0 3 * * * */1"),
        ("drill_cron", "* * * * * *"),
        ("drill_cron", "0 5 * * 0 */5"),
    ],
)
def test_a_cron_firing_more_often_than_once_a_minute_is_refused(
    h: Harness, field: str, cron: str
) -> None:
    inst = active_instance(h.a)
    r = h.a.post("/backup_schedules", schedule_body(inst, **{field: cron}))
    body = assert_fault(r, 400)
    message = body["badRequest"]["message"]
    assert message.startswith(f"{field} ") and "once a minute" in message, message
    assert h.a.get("/backup_schedules").json() == {"backup_schedules": []}
    # A replace is refused the same way, and leaves the schedule as it was.
    made = h.a.post("/backup_schedules", schedule_body(inst, cron="0 3 * * * 30"))
    assert made.status_code == 200, made.text  # one fixed second a minute is fine
    schedule = made.json()["backup_schedule"]
    assert schedule["next_run_at"] == "2031-03-02T03:00:30"
    r = put(h.a, f"/backup_schedules/{schedule['id']}", schedule_body(inst, **{field: cron}))
    assert "once a minute" in assert_fault(r, 400)["badRequest"]["message"]
    shown = h.a.get(f"/backup_schedules/{schedule['id']}").json()["backup_schedule"]
    assert shown == schedule


def test_a_project_has_at_most_max_schedules(h: Harness) -> None:
    inst = active_instance(h.a)
    made = []
    for i in range(MAX_SCHEDULES):
        r = h.a.post("/backup_schedules", schedule_body(inst, name=f"s{i}"))
        assert r.status_code == 200, (i, r.text)
        made.append(r.json()["backup_schedule"]["id"])
    r = h.a.post("/backup_schedules", schedule_body(inst, name="one too many"))
    message = assert_fault(r, 413)["overLimit"]["message"]
    assert f"at most {MAX_SCHEDULES}" in message, message
    listed = h.a.get("/backup_schedules").json()["backup_schedules"]
    assert sorted(s["id"] for s in listed) == sorted(made)
    # Another project has its own room.
    other = h.b.post("/backup_schedules", schedule_body(active_instance(h.b)))
    assert other.status_code == 200, other.text
    # Deleting one makes room for one.
    assert h.a.delete(f"/backup_schedules/{made[0]}").status_code == 202
    again = h.a.post("/backup_schedules", schedule_body(inst, name="in its place"))
    assert again.status_code == 200, again.text
    assert_fault(h.a.post("/backup_schedules", schedule_body(inst, name="x")), 413)


def completed_backups(caller: Caller, count: int) -> list[str]:
    inst = active_instance(caller)
    return [
        caller.wait_backup(caller.create_backup(inst, f"b{i}")["id"])["id"] for i in range(count)
    ]


def check_status(caller: Caller, backup_id: str, kind: str) -> str | None:
    backup: dict[str, Any] = caller.get(f"/backups/{backup_id}").json()["backup"]
    status: str | None = backup.get(f"{kind}_status")
    return status


@pytest.mark.parametrize("kind", ["verify", "drill"])
def test_one_check_of_a_kind_at_a_time_per_project(h: Harness, kind: str) -> None:
    first, second = completed_backups(h.a, 2)
    (theirs,) = completed_backups(h.b, 1)
    other_kind = "drill" if kind == "verify" else "verify"
    h.container.queue.hold()  # the checks stay queued
    r = h.a.post(f"/backups/{first}/{kind}")
    assert r.status_code == 202, r.text  # the documented answer, unchanged
    assert r.json()["backup"][f"{kind}_status"] == "RUNNING"
    refused = h.a.post(f"/backups/{second}/{kind}")
    message = assert_fault(refused, 413)["overLimit"]["message"]
    assert "at most 1 at a time" in message, message
    assert check_status(h.a, second, kind) is None  # nothing was recorded
    # The same backup asked twice is still the per-backup answer.
    assert h.a.post(f"/backups/{first}/{kind}").status_code == 422
    # Another project, and the other kind, have their own room.
    assert h.b.post(f"/backups/{theirs}/{kind}").status_code == 202
    assert h.a.post(f"/backups/{second}/{other_kind}").status_code == 202
    h.container.queue.release()
    wait_for(lambda: check_status(h.a, first, kind) == "OK", timeout=60)
    h.wait_idle()
    assert h.a.post(f"/backups/{second}/{kind}").status_code == 202
    wait_for(lambda: check_status(h.a, second, kind) == "OK", timeout=60)
