"""Backup schedules through the API, on a clock the test moves (the loop is off: each test
calls ``tick()``). Real SQLite instances, real backups in a local store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from fixtures.clocked import ManualClock, make_clocked_harness, scheduler_of
from fixtures.service import Caller, Harness

START = datetime(2031, 3, 2, 0, 0, 0)  # far from the real clock: nothing else fires


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def h(tmp_path: Path, clock: ManualClock) -> Iterator[Harness]:
    harness = make_clocked_harness(tmp_path, clock)
    try:
        yield harness
    finally:
        harness.container.close()


def put(caller: Caller, path: str, body: Any) -> Any:
    return caller.client.put(caller.url(path), json=body, headers=caller._headers(None))


def active_instance(caller: Caller, name: str = "db") -> str:
    inst = caller.create_instance(name)
    caller.wait_instance(inst["id"])
    return str(inst["id"])


def schedule_body(instance_id: str, **extra: Any) -> dict[str, Any]:
    return {
        "backup_schedule": {
            "instance_id": instance_id,
            "name": "nightly",
            "cron": "0 3 * * *",
            **extra,
        }
    }


def create_schedule(caller: Caller, instance_id: str, **extra: Any) -> dict[str, Any]:
    r = caller.post("/backup_schedules", schedule_body(instance_id, **extra))
    assert r.status_code == 200, r.text
    schedule: dict[str, Any] = r.json()["backup_schedule"]
    return schedule


def show(caller: Caller, schedule_id: str) -> dict[str, Any]:
    r = caller.get(f"/backup_schedules/{schedule_id}")
    assert r.status_code == 200, r.text
    schedule: dict[str, Any] = r.json()["backup_schedule"]
    return schedule


def scheduled_backups(caller: Caller, schedule_id: str) -> list[dict[str, Any]]:
    backups = caller.get("/backups?limit=1000").json()["backups"]
    return sorted(
        (b for b in backups if b.get("schedule_id") == schedule_id), key=lambda b: b["created"]
    )


def run_due(h: Harness, clock: ManualClock, schedule_id: str) -> dict[str, Any]:
    """Move the clock to the schedule's next run, tick, wait for the backup, follow up."""
    due = datetime.fromisoformat(show(h.a, schedule_id)["next_run_at"])
    clock.set(due)
    assert scheduler_of(h).tick() == 1
    schedule = show(h.a, schedule_id)
    assert schedule["last_status"] == "STARTED", schedule
    backup = h.a.wait_backup(schedule["last_backup_id"], ("COMPLETED", "FAILED"))
    scheduler_of(h).follow_up()
    h.wait_idle()
    return backup


# -- definitions -------------------------------------------------------------------------


def test_create_show_list_replace_delete(h: Harness, clock: ManualClock) -> None:
    inst = active_instance(h.a)
    created = create_schedule(
        h.a,
        inst,
        timezone="Europe/Paris",
        incremental=True,
        full_every=3,
        retention={"keep_last": 3, "keep_within": "36h"},
        verify=True,
        drill_cron="0 5 * * 0",
    )
    # 03:00 in Paris in March 2031 (CET, UTC+1) is 02:00 UTC.
    assert created["next_run_at"] == "2031-03-02T02:00:00"
    assert created["retention"] == {"keep_last": 3, "keep_within": "36h"}
    assert created["last_status"] is None and created["last_backup_id"] is None
    assert show(h.a, created["id"]) == created
    listed = h.a.get(f"/backup_schedules?instance_id={inst}").json()["backup_schedules"]
    assert [s["id"] for s in listed] == [created["id"]]
    assert h.a.get(f"/backup_schedules?instance_id={uuid.uuid4()}").json() == {
        "backup_schedules": []
    }

    r = put(h.a, f"/backup_schedules/{created['id']}", schedule_body(inst, cron="30 4 * * *"))
    assert r.status_code == 200, r.text
    replaced = r.json()["backup_schedule"]
    # PUT replaces the whole definition: what it leaves out goes back to the defaults.
    assert replaced["cron"] == "30 4 * * *" and replaced["timezone"] == "UTC"
    assert replaced["incremental"] is False and replaced["retention"] == {}
    assert replaced["verify"] is False and replaced["drill_cron"] is None
    assert replaced["next_run_at"] == "2031-03-02T04:30:00"

    assert h.a.delete(f"/backup_schedules/{created['id']}").status_code == 202
    assert h.a.get(f"/backup_schedules/{created['id']}").status_code == 404
    assert h.a.get("/backup_schedules").json() == {"backup_schedules": []}


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"cron": "not a cron"}, "cron"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * * * * *"}, "cron"),  # 7 fields
        ({"cron": "0 0 31 2 *"}, "never fires"),
        ({"cron": "@daily"}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"retention": {"keep_forever": 1}}, "keep_forever"),
        ({"retention": {"keep_daily": -1}}, "keep_daily"),
        ({"retention": {"keep_within": "a week"}}, "keep_within"),
        ({"full_every": 0}, "full_every"),
        ({"full_every": -3}, "full_every"),
        ({"drill_cron": "sometimes"}, "drill_cron"),
        ({"swift_container": "../up"}, "not allowed"),
        ({"storage_driver": "nowhere"}, "nowhere"),
        ({"unexpected": 1}, "unexpected"),
        ({"verify": "yes"}, "verify"),
    ],
)
def test_bad_definitions_are_400_faults(h: Harness, change: dict[str, Any], words: str) -> None:
    inst = active_instance(h.a)
    r = h.a.post("/backup_schedules", schedule_body(inst, **change))
    assert r.status_code == 400, r.text
    fault = r.json()["badRequest"]
    assert fault["code"] == 400 and words in fault["message"], fault
    assert h.a.get("/backup_schedules").json() == {"backup_schedules": []}


def test_unknown_or_foreign_instances_are_400(h: Harness) -> None:
    theirs = active_instance(h.b, "theirs")
    for instance_id in (str(uuid.uuid4()), theirs):
        r = h.a.post("/backup_schedules", schedule_body(instance_id))
        assert r.status_code == 400, r.text
        assert "cannot be found" in r.json()["badRequest"]["message"]


def test_another_projects_schedule_is_not_found(h: Harness, clock: ManualClock) -> None:
    inst = active_instance(h.a)
    mine = create_schedule(h.a, inst)
    path = f"/backup_schedules/{mine['id']}"
    assert h.b.get(path).status_code == 404
    assert put(h.b, path, schedule_body(inst)).status_code == 404
    assert h.b.post(f"{path}/run").status_code == 404
    assert h.b.post(f"{path}/prune?dry_run=true").status_code == 404
    assert h.b.delete(path).status_code == 404
    assert h.b.get("/backup_schedules").json() == {"backup_schedules": []}
    assert h.b.get(f"/backup_schedules?instance_id={inst}").json() == {"backup_schedules": []}
    # B's token on A's URL: refused before routing.
    b_on_a = Caller(h.b.client, h.a.project, h.b.token)
    assert b_on_a.get(path).status_code == 403
    assert show(h.a, mine["id"]) == mine  # untouched
    assert h.admin.get(f"/backup_schedules/{mine['id']}").status_code == 200


# -- runs ------------------------------------------------------------------------------------


def test_a_due_run_starts_one_ordinary_backup(h: Harness, clock: ManualClock) -> None:
    inst = active_instance(h.a)
    schedule = create_schedule(h.a, inst)
    assert scheduler_of(h).tick() == 0  # not due yet
    backup = run_due(h, clock, schedule["id"])
    assert backup["status"] == "COMPLETED" and backup["schedule_id"] == schedule["id"]
    assert backup["instance_id"] == inst and backup["parent_id"] is None
    after = show(h.a, schedule["id"])
    assert after["last_status"] == "COMPLETED" and after["last_error"] is None
    assert after["last_run_at"] == "2031-03-02T03:00:00"
    assert after["next_run_at"] == "2031-03-03T03:00:00"
    # The backup is an ordinary one: listed for the instance, restorable.
    listed = h.a.get(f"/instances/{inst}/backups").json()["backups"]
    assert [b["id"] for b in listed] == [backup["id"]]
    assert scheduler_of(h).tick() == 0  # the same tick never fires twice


def test_after_downtime_one_run_catches_up(h: Harness, clock: ManualClock) -> None:
    inst = active_instance(h.a)
    schedule = create_schedule(h.a, inst, cron="0 * * * *")  # hourly
    clock.set(START + timedelta(days=2, minutes=30))  # 48 ticks missed
    assert scheduler_of(h).tick() == 1
    assert scheduler_of(h).tick() == 0
    after = show(h.a, schedule["id"])
    assert after["next_run_at"] == "2031-03-04T01:00:00"
    h.a.wait_backup(after["last_backup_id"])
    assert len(scheduled_backups(h.a, schedule["id"])) == 1


def test_incremental_chains_with_a_full_every_n_runs(h: Harness, clock: ManualClock) -> None:
    inst = active_instance(h.a)
    schedule = create_schedule(h.a, inst, incremental=True, full_every=3)
    made = [run_due(h, clock, schedule["id"]) for _ in range(5)]
    parents = [b["parent_id"] for b in made]
    ids = [b["id"] for b in made]
    assert parents == [None, ids[0], ids[1], None, ids[3]]


def test_a_schedule_moved_to_another_instance_starts_its_chain_with_a_full(
    h: Harness, clock: ManualClock
) -> None:
    first, other = active_instance(h.a, "one"), active_instance(h.a, "two")
    schedule = create_schedule(h.a, first, incremental=True, full_every=10)
    before = run_due(h, clock, schedule["id"])
    body = schedule_body(other, incremental=True, full_every=10)
    assert put(h.a, f"/backup_schedules/{schedule['id']}", body).status_code == 200
    moved = run_due(h, clock, schedule["id"])
    assert (moved["instance_id"], moved["parent_id"]) == (other, None), moved
    again = run_due(h, clock, schedule["id"])
    assert (again["instance_id"], again["parent_id"]) == (other, moved["id"])
    assert before["instance_id"] == first


def test_a_broken_chain_starts_a_new_full(h: Harness, clock: ManualClock) -> None:
    inst = active_instance(h.a)
    schedule = create_schedule(h.a, inst, incremental=True, full_every=10)
    first = run_due(h, clock, schedule["id"])
    second = run_due(h, clock, schedule["id"])
    assert second["parent_id"] == first["id"]
    assert h.a.delete(f"/backups/{second['id']}").status_code == 202
    h.wait_idle()
    third = run_due(h, clock, schedule["id"])
    assert third["parent_id"] == first["id"]  # the previous live backup completed
    # A run that fails breaks the chain: the next run is a full.
    h.container.queue.hold()
    clock.set(datetime.fromisoformat(show(h.a, schedule["id"])["next_run_at"]))
    assert scheduler_of(h).tick() == 1
    failing = show(h.a, schedule["id"])["last_backup_id"]
    h.container.handlers.fail_backup(failing, "made to fail by the test")
    h.container.queue.release()
    h.wait_idle()
    scheduler_of(h).follow_up()
    failed = show(h.a, schedule["id"])
    assert failed["last_status"] == "FAILED" and failed["last_error"] == "made to fail by the test"
    fourth = run_due(h, clock, schedule["id"])
    assert fourth["parent_id"] is None


def test_a_run_that_cannot_start_records_why_and_moves_on(h: Harness, clock: ManualClock) -> None:
    inst = active_instance(h.a)
    schedule = create_schedule(h.a, inst)
    h.container.queue.hold()
    try:
        busy = h.a.create_backup(inst, "by hand")  # stays NEW while the queue is held
        clock.set(datetime(2031, 3, 2, 3, 0, 0))
        assert scheduler_of(h).tick() == 0
        after = show(h.a, schedule["id"])
        assert after["last_status"] == "SKIPPED"
        assert "not currently available" in after["last_error"]
        assert after["last_backup_id"] is None
        assert after["next_run_at"] == "2031-03-03T03:00:00"  # no retry loop
        assert scheduler_of(h).tick() == 0
        # Run now answers the same refusal, and records it.
        r = h.a.post(f"/backup_schedules/{schedule['id']}/run")
        assert r.status_code == 422, r.text
        assert "not currently available" in r.json()["unprocessableEntity"]["message"]
    finally:
        h.container.queue.release()
    h.a.wait_backup(busy["id"])
    assert scheduled_backups(h.a, schedule["id"]) == []


def test_quota_refusal_is_recorded(tmp_path: Path, clock: ManualClock) -> None:
    h = make_clocked_harness(tmp_path, clock, backup_quota=1)
    try:
        inst = active_instance(h.a)
        schedule = create_schedule(h.a, inst)
        run_due(h, clock, schedule["id"])
        clock.set(datetime.fromisoformat(show(h.a, schedule["id"])["next_run_at"]))
        assert scheduler_of(h).tick() == 0
        after = show(h.a, schedule["id"])
        assert after["last_status"] == "SKIPPED" and "Quota exceeded" in after["last_error"]
        r = h.a.post(f"/backup_schedules/{schedule['id']}/run")
        assert r.status_code == 413, r.text
    finally:
        h.container.close()


def test_run_now_makes_an_ordinary_scheduled_backup(h: Harness, clock: ManualClock) -> None:
    inst = active_instance(h.a)
    schedule = create_schedule(h.a, inst)
    r = h.a.post(f"/backup_schedules/{schedule['id']}/run")
    assert r.status_code == 202, r.text
    backup = r.json()["backup"]
    assert backup["schedule_id"] == schedule["id"] and backup["status"] == "NEW"
    h.a.wait_backup(backup["id"])
    after = show(h.a, schedule["id"])
    assert after["last_backup_id"] == backup["id"]
    assert after["next_run_at"] == schedule["next_run_at"]  # the timetable is unchanged


# -- retention ---------------------------------------------------------------------------------


def test_retention_runs_after_each_scheduled_backup_and_frees_quota(
    tmp_path: Path, clock: ManualClock
) -> None:
    h = make_clocked_harness(tmp_path, clock, backup_quota=3)
    try:
        inst = active_instance(h.a)
        schedule = create_schedule(h.a, inst, retention={"keep_last": 2})
        made = [run_due(h, clock, schedule["id"])["id"] for _ in range(5)]
        h.wait_idle()
        remaining = [b["id"] for b in scheduled_backups(h.a, schedule["id"])]
        assert remaining == made[-2:]
        # Five backups under a quota of three: each pruned backup gave its place back.
        assert show(h.a, schedule["id"])["last_status"] == "COMPLETED"
    finally:
        h.container.close()


def test_prune_dry_run_answers_without_deleting(h: Harness, clock: ManualClock) -> None:
    inst = active_instance(h.a)
    schedule = create_schedule(h.a, inst, incremental=True, full_every=2)
    made = [run_due(h, clock, schedule["id"])["id"] for _ in range(4)]  # F I F I
    body = schedule_body(inst, incremental=True, full_every=2, retention={"keep_last": 1})
    assert put(h.a, f"/backup_schedules/{schedule['id']}", body).status_code == 200
    r = h.a.post(f"/backup_schedules/{schedule['id']}/prune?dry_run=true")
    assert r.status_code == 200, r.text
    prune = r.json()["prune"]
    assert prune["dry_run"] is True
    assert prune["keep"] == [
        {"id": made[3], "reasons": ["last snapshot"]},
        {"id": made[2], "reasons": [f"parent of {made[3]}"]},
    ]
    assert [d["id"] for d in prune["delete"]] == [made[1], made[0]]
    assert all(d["reason"] for d in prune["delete"])
    assert len(scheduled_backups(h.a, schedule["id"])) == 4  # nothing deleted
    r = h.a.post(f"/backup_schedules/{schedule['id']}/prune")
    assert r.status_code == 200 and r.json()["prune"]["delete"] == prune["delete"]
    h.wait_idle()
    assert [b["id"] for b in scheduled_backups(h.a, schedule["id"])] == made[2:]
    # The kept incremental still restores: its chain is whole.
    r = h.a.post("/instances", {"instance": {"name": "r", "restorePoint": {"backupRef": made[3]}}})
    assert r.status_code == 200, r.text
    h.a.wait_instance(r.json()["instance"]["id"])


def test_retention_never_deletes_a_backup_another_backup_is_built_on(
    h: Harness, clock: ManualClock
) -> None:
    inst = active_instance(h.a)
    schedule = create_schedule(h.a, inst, retention={"keep_last": 1})
    first = run_due(h, clock, schedule["id"])
    # An incremental made by hand picks the newest completed backup: the scheduled one.
    manual = h.a.wait_backup(h.a.create_backup(inst, "by hand", incremental=1)["id"])
    assert manual["parent_id"] == first["id"]
    run_due(h, clock, schedule["id"])
    prune = h.a.post(f"/backup_schedules/{schedule['id']}/prune").json()["prune"]
    assert {"id": first["id"], "reasons": [f"parent of {manual['id']}"]} in prune["keep"]
    h.wait_idle()
    assert h.a.get(f"/backups/{manual['id']}").json()["backup"]["status"] == "COMPLETED"
    assert h.a.get(f"/backups/{first['id']}").status_code == 200


def test_operator_policy_governs_schedules_and_their_runs(
    tmp_path: Path, clock: ManualClock
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text('"backup_schedule:prune": "role:admin"\n"backup:create": "role:admin"\n')
    h = make_clocked_harness(tmp_path, clock, policy_file=policy)
    try:
        inst = active_instance(h.a)
        schedule = create_schedule(h.a, inst)
        r = h.a.post(f"/backup_schedules/{schedule['id']}/prune?dry_run=1")
        assert r.status_code == 403 and "backup_schedule:prune" in r.json()["forbidden"]["message"]
        # A scheduled run is an ordinary backup: the creator may not create backups.
        clock.set(datetime.fromisoformat(schedule["next_run_at"]))
        assert scheduler_of(h).tick() == 0
        after = show(h.a, schedule["id"])
        assert after["last_status"] == "SKIPPED" and "backup:create" in after["last_error"]
        assert h.a.post(f"/backup_schedules/{schedule['id']}/run").status_code == 403
    finally:
        h.container.close()


def test_a_member_who_edits_a_schedule_runs_it_with_its_own_roles(
    tmp_path: Path, clock: ManualClock
) -> None:
    """Whoever last set what a schedule does is whom its runs act as: a member without
    ``backup:create`` cannot edit a creator's schedule to run backups as the creator."""
    policy = tmp_path / "policy.yaml"
    policy.write_text('"backup:create": "role:creator"\n')
    h = make_clocked_harness(tmp_path, clock, policy_file=policy)
    try:

        def member(user: str, *roles: str) -> Caller:
            issued = h.container.services.tokens.create(
                project_id=h.a.project, user_id=user, roles=roles
            )
            return Caller(h.client, h.a.project, issued.token)

        creator, editor = member("alice", "member", "creator"), member("bob", "member")
        inst = active_instance(creator)
        schedule = create_schedule(creator, inst)
        r = put(editor, f"/backup_schedules/{schedule['id']}", schedule_body(inst, name="moved"))
        assert r.status_code == 200, r.text
        clock.set(datetime.fromisoformat(show(creator, schedule["id"])["next_run_at"]))
        assert scheduler_of(h).tick() == 0
        after = show(creator, schedule["id"])
        assert after["last_status"] == "SKIPPED" and "backup:create" in after["last_error"]
        assert scheduled_backups(creator, schedule["id"]) == []
        # The creator sets it again: its runs are the creator's once more.
        r = put(creator, f"/backup_schedules/{schedule['id']}", schedule_body(inst))
        assert r.status_code == 200, r.text
        clock.set(datetime.fromisoformat(show(creator, schedule["id"])["next_run_at"]))
        assert scheduler_of(h).tick() == 1
    finally:
        h.container.close()


def test_a_schedules_container_and_store_are_its_backups(h: Harness, clock: ManualClock) -> None:
    inst = active_instance(h.a)
    schedule = create_schedule(h.a, inst, swift_container="nightly-c", storage_driver="local")
    assert schedule["swift_container"] == "nightly-c" and schedule["storage_driver"] == "local"
    backup = run_due(h, clock, schedule["id"])
    assert backup["storage_driver"] == "local"
    assert "/nightly-c/" in backup["locationRef"]


def test_the_operator_sets_the_shortest_interval_and_the_schedules_a_project_has(
    tmp_path: Path, clock: ManualClock
) -> None:
    h = make_clocked_harness(tmp_path, clock, schedule_min_interval=1, max_schedules=2)
    try:
        inst = active_instance(h.a)
        often = create_schedule(h.a, inst, cron="* * * * * */2", drill_cron="0 5 * * 0 */5")
        assert often["next_run_at"] == "2031-03-02T00:00:02"
        create_schedule(h.a, inst, name="second")
        r = h.a.post("/backup_schedules", schedule_body(inst, name="third"))
        assert r.status_code == 413 and "at most 2" in r.text, r.text
    finally:
        h.container.close()


def test_a_cron_stored_before_the_once_a_minute_rule_fires_at_most_once_a_minute(
    h: Harness, clock: ManualClock
) -> None:
    inst = active_instance(h.a)
    schedule = create_schedule(h.a, inst)
    engine = h.container.metadata_engine
    assert engine is not None
    with engine.begin() as conn:  # as an older release stored it
        conn.execute(
            sqlalchemy.text("UPDATE backup_schedules SET cron = :cron WHERE id = :id"),
            {"cron": "* * * * * */2", "id": schedule["id"]},
        )
    backup = run_due(h, clock, schedule["id"])
    assert backup["status"] == "COMPLETED"
    due = datetime.fromisoformat(show(h.a, schedule["id"])["last_run_at"])
    following = datetime.fromisoformat(show(h.a, schedule["id"])["next_run_at"])
    assert following - due == timedelta(seconds=60)
    clock.set(due + timedelta(seconds=2))  # when the cron alone would fire again
    assert scheduler_of(h).tick() == 0
