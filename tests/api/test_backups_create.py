"""Trove compatibility: creating backups."""

import re

import pytest

TS = r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$"


@pytest.fixture
def instance(harness):
    inst = harness.a.create_instance("src")
    harness.a.wait_instance(inst["id"])
    return inst


def msg(r):
    (body,) = r.json().values()
    return body["message"]


def test_full_create_view(harness, instance):
    harness.container.queue.hold()
    r = harness.a.post("/backups", {"backup": {"name": "b1", "instance": instance["id"]}})
    assert r.status_code == 202
    b = r.json()["backup"]
    assert b["status"] == "NEW"
    assert b["locationRef"] is None and b["size"] is None and b["parent_id"] is None
    assert b["description"] is None
    assert b["project_id"] == harness.a.project
    assert b["datastore"]["type"] == "sqlite" and b["datastore"]["version"] == "3"
    assert re.match(TS, b["created"]) and re.match(TS, b["updated"])
    harness.container.queue.release()
    done = harness.a.wait_backup(b["id"])
    assert done["locationRef"].endswith(f"/{b['id']}/manifest.json")
    assert done["size"] is not None


@pytest.mark.parametrize(
    ("backup", "expected"),
    [
        ({}, "Validation error: backup 'name' is a required property"),
        ({"name": " "}, "does not match '^.*[0-9a-zA-Z]+.*$'"),
        ({"name": "b", "instance": "not-a-uuid"}, "backup['instance'] 'not-a-uuid' does not match"),
        ({"name": "b", "incremental": True}, "backup['incremental'] True is not of type 'integer'"),
        ({"name": "b", "incremental": "1"}, "is not of type 'integer'"),
        ({"name": "b", "incremental": 2}, "2 is greater than the maximum of 1"),
        ({"name": "b", "description": ""}, "backup['description'] '' should be non-empty"),
        ({"name": "b", "description": None}, "None is not of type 'string'"),
        ({"name": "b"}, "instance is missing."),
    ],
)
def test_schema_and_required_fields(harness, backup, expected):
    r = harness.a.post("/backups", {"backup": backup})
    assert r.status_code == 400
    assert expected in msg(r)


def test_root_level_body_errors_are_400(harness):
    r = harness.a.post("/backups", {})
    assert r.status_code == 400
    assert msg(r) == "Validation error: 'backup' is a required property"


def test_bad_container_characters(harness, instance):
    r = harness.a.post(
        "/backups",
        {"backup": {"name": "b", "instance": instance["id"], "swift_container": "bad name"}},
    )
    assert r.status_code == 400
    assert msg(r) == "The value is not allowed: bad name."


def test_unknown_or_foreign_instance_is_404(harness, instance):
    missing = "00000000-0000-0000-0000-000000000000"
    r = harness.a.post("/backups", {"backup": {"name": "b", "instance": missing}})
    assert r.status_code == 404 and msg(r) == f"Resource {missing} cannot be found."
    r = harness.b.post("/backups", {"backup": {"name": "b", "instance": instance["id"]}})
    assert r.status_code == 404 and msg(r) == f"Resource {instance['id']} cannot be found."


def test_second_create_while_running_is_422(harness, instance):
    harness.container.queue.hold()
    harness.a.create_backup(instance["id"])
    r = harness.a.post("/backups", {"backup": {"name": "b2", "instance": instance["id"]}})
    assert r.status_code == 422
    assert msg(r).endswith("(instance status was BACKUP).")
    assert harness.a.get(f"/instances/{instance['id']}").json()["instance"]["status"] == "BACKUP"
    harness.container.queue.release()


def test_instance_still_building_is_422_task(harness):
    harness.container.queue.hold()
    inst = harness.a.create_instance("slow")
    r = harness.a.post("/backups", {"backup": {"name": "b", "instance": inst["id"]}})
    assert r.status_code == 422
    assert msg(r).endswith("(task status was BUILDING).")
    harness.container.queue.release()


def test_quota_and_release_after_delete(tmp_path):
    from fixtures.service import make_harness

    h = make_harness(tmp_path, backup_quota=2)
    try:
        inst = h.a.create_instance()
        h.a.wait_instance(inst["id"])
        first = h.a.create_backup(inst["id"], "one")
        h.a.wait_backup(first["id"])
        second = h.a.create_backup(inst["id"], "two")
        h.a.wait_backup(second["id"])
        r = h.a.post("/backups", {"backup": {"name": "three", "instance": inst["id"]}})
        assert r.status_code == 413
        assert r.json() == {
            "overLimit": {"code": 413, "message": "Quota exceeded for resources: ['backups']."}
        }
        assert h.a.delete(f"/backups/{second['id']}").status_code == 202
        h.wait_idle()
        h.a.wait_backup(h.a.create_backup(inst["id"], "three")["id"])
    finally:
        h.container.close()


def test_incremental_parent_selection(harness, instance):
    iid = instance["id"]
    first = harness.a.create_backup(iid, "first", incremental=1)
    assert first["parent_id"] is None
    harness.a.wait_backup(first["id"])
    inc1 = harness.a.create_backup(iid, "inc1", incremental=1)
    assert inc1["parent_id"] == first["id"]
    harness.a.wait_backup(inc1["id"])
    inc2 = harness.a.create_backup(iid, "inc2", incremental=1)
    assert inc2["parent_id"] == inc1["id"]
    harness.a.wait_backup(inc2["id"])
    explicit = harness.a.create_backup(iid, "explicit", incremental=0, parent_id=first["id"])
    assert explicit["parent_id"] == first["id"]
    harness.a.wait_backup(explicit["id"])


def test_failed_backup_is_never_a_parent(harness, instance):
    iid = instance["id"]
    full = harness.a.create_backup(iid, "full")
    harness.a.wait_backup(full["id"])
    # Make the next backup fail for real: the source database file disappears.
    path = harness.a.get(f"/instances/{iid}").json()["instance"]["connection"]["path"]
    import os

    os.rename(path, path + ".moved")
    broken = harness.a.create_backup(iid, "broken")
    failed = harness.a.wait_backup(broken["id"], ("FAILED",))
    assert failed["fail_reason"]
    os.rename(path + ".moved", path)
    inc = harness.a.create_backup(iid, "inc", incremental=1)
    assert inc["parent_id"] == full["id"]


def test_unknown_or_foreign_parent_is_404(harness, instance):
    missing = "11111111-1111-1111-1111-111111111111"
    r = harness.a.post(
        "/backups", {"backup": {"name": "b", "instance": instance["id"], "parent_id": missing}}
    )
    assert r.status_code == 404 and msg(r) == f"Resource {missing} cannot be found."
    other = harness.b.create_instance("other")
    harness.b.wait_instance(other["id"])
    theirs = harness.b.create_backup(other["id"])
    harness.b.wait_backup(theirs["id"])
    r = harness.a.post(
        "/backups", {"backup": {"name": "b", "instance": instance["id"], "parent_id": theirs["id"]}}
    )
    assert r.status_code == 404


def test_extra_keys_are_accepted(harness, instance):
    r = harness.a.post(
        "/backups",
        {"backup": {"name": "b", "instance": instance["id"], "whatever": 1}, "extra": True},
    )
    assert r.status_code == 202


def test_strategy_resolution_picks_the_container(harness, instance):
    iid = instance["id"]
    assert (
        harness.a.post(
            "/backup_strategies", {"backup_strategy": {"instance_id": iid, "swift_container": "c1"}}
        ).status_code
        == 202
    )
    assert (
        harness.a.post(
            "/backup_strategies", {"backup_strategy": {"swift_container": "c2"}}
        ).status_code
        == 202
    )
    b1 = harness.a.wait_backup(harness.a.create_backup(iid, "s1")["id"])
    assert f"/c1/{b1['id']}/manifest.json" in b1["locationRef"]
    assert harness.a.delete(f"/backup_strategies?instance_id={iid}").status_code == 202
    b2 = harness.a.wait_backup(harness.a.create_backup(iid, "s2")["id"])
    assert f"/c2/{b2['id']}/manifest.json" in b2["locationRef"]
    b3 = harness.a.wait_backup(harness.a.create_backup(iid, "s3", swift_container="explicit")["id"])
    assert f"/explicit/{b3['id']}/manifest.json" in b3["locationRef"]


def test_unknown_storage_driver_is_400(harness, instance):
    r = harness.a.post(
        "/backups", {"backup": {"name": "b", "instance": instance["id"], "storage_driver": "nope"}}
    )
    assert r.status_code == 400
    assert "storage_driver" in msg(r)


def test_progress_and_fail_reason_extensions(harness, instance):
    b = harness.a.wait_backup(harness.a.create_backup(instance["id"])["id"])
    assert "fail_reason" not in b
    assert b["storage_driver"] == "local"
