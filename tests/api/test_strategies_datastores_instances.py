"""Trove compatibility: strategies, datastores, instances."""

import pytest


def msg(r):
    (body,) = r.json().values()
    return body["message"]


IID = "44b277eb-39be-4921-be31-3d61b43651d7"


def test_strategy_create_list_upsert_delete(harness):
    r = harness.a.post("/backup_strategies", {"backup_strategy": {"swift_container": "proj_cont"}})
    assert r.status_code == 202
    assert r.json() == {
        "backup_strategy": {
            "project_id": harness.a.project,
            "instance_id": "",
            "backend": "swift",
            "swift_container": "proj_cont",
        }
    }
    harness.a.post(
        "/backup_strategies", {"backup_strategy": {"instance_id": IID, "swift_container": "c1"}}
    )
    harness.a.post(
        "/backup_strategies", {"backup_strategy": {"instance_id": IID, "swift_container": "c2"}}
    )
    listed = harness.a.get("/backup_strategies").json()["backup_strategies"]
    assert len(listed) == 2
    assert [s["swift_container"] for s in listed if s["instance_id"] == IID] == ["c2"]
    only = harness.a.get(f"/backup_strategies?instance_id={IID}").json()["backup_strategies"]
    assert len(only) == 1
    assert harness.a.delete("/backup_strategies").status_code == 202
    remaining = harness.a.get("/backup_strategies").json()["backup_strategies"]
    assert [s["instance_id"] for s in remaining] == [IID]
    assert harness.a.delete("/backup_strategies").status_code == 202


def test_strategy_validation(harness):
    r = harness.a.post("/backup_strategies", {"backup_strategy": {}})
    assert r.status_code == 400 and "'swift_container' is a required property" in msg(r)
    r = harness.a.post(
        "/backup_strategies", {"backup_strategy": {"swift_container": "c", "extra": 1}}
    )
    assert (
        r.status_code == 400
        and "Additional properties are not allowed ('extra' was unexpected)" in msg(r)
    )
    r = harness.a.post(
        "/backup_strategies", {"backup_strategy": {"swift_container": "c", "instance_id": "bad"}}
    )
    assert r.status_code == 400


def test_strategy_other_project_is_admin_only(harness):
    harness.b.post("/backup_strategies", {"backup_strategy": {"swift_container": "theirs"}})
    r = harness.a.get(f"/backup_strategies?project_id={harness.b.project}")
    assert (
        r.status_code == 403 and msg(r) == f"Operation not allowed for tenant {harness.a.project}."
    )
    assert harness.a.delete(f"/backup_strategies?project_id={harness.b.project}").status_code == 403
    assert (
        harness.b.get("/backup_strategies").json()["backup_strategies"][0]["swift_container"]
        == "theirs"
    )
    r = harness.admin.get(f"/backup_strategies?project_id={harness.b.project}")
    assert r.status_code == 200 and len(r.json()["backup_strategies"]) == 1
    assert (
        harness.admin.delete(f"/backup_strategies?project_id={harness.b.project}").status_code
        == 202
    )
    assert harness.b.get("/backup_strategies").json() == {"backup_strategies": []}


def test_datastores(harness):
    body = harness.a.get("/datastores").json()
    (ds,) = [d for d in body["datastores"] if d["name"] == "sqlite"]
    assert {"id", "name", "links", "versions", "default_version"} <= set(ds)
    assert "datastore" not in ds["versions"][0]
    assert (
        harness.a.get(f"/datastores/{ds['id']}").json()
        == harness.a.get("/datastores/sqlite").json()
    )
    r = harness.a.get("/datastores/x")
    assert r.status_code == 404 and msg(r) == "Datastore 'x' cannot be found."
    versions = harness.a.get("/datastores/sqlite/versions").json()["versions"]
    assert versions[0]["datastore"] == ds["id"]
    vid = versions[0]["id"]
    assert harness.a.get("/datastores/sqlite/versions/3").status_code == 200
    assert harness.a.get(f"/datastores/sqlite/versions/{vid}").status_code == 200
    r = harness.a.get("/datastores/sqlite/versions/99")
    assert r.status_code == 400 and msg(r) == "Datastore version '99' cannot be found."
    assert harness.a.get(f"/datastores/versions/{vid}").status_code == 200
    unknown = "33333333-3333-3333-3333-333333333333"
    assert harness.a.get(f"/datastores/versions/{unknown}").status_code == 400
    admin_version = harness.admin.get(f"/datastores/versions/{vid}").json()["version"]
    assert admin_version["active"] is True


def test_flavors(harness):
    flavors = harness.a.get("/flavors").json()["flavors"]
    assert {"id", "name", "ram", "links"} <= set(flavors[0])
    assert harness.a.get("/flavors/6").json()["flavor"]["id"] == "6"
    assert harness.a.get("/flavors/999").status_code == 404


@pytest.fixture
def completed(harness):
    inst = harness.a.create_instance("src")
    harness.a.wait_instance(inst["id"])
    backup = harness.a.wait_backup(harness.a.create_backup(inst["id"])["id"])
    return inst, backup


def test_restore_point_rules(harness, completed):
    inst, backup = completed
    r = harness.a.post(
        "/instances",
        {
            "instance": {
                "name": "r",
                "flavorRef": "1",
                "volume": {"size": 1},
                "restorePoint": {"backupRef": backup["id"]},
                "datastore": {"type": "sqlite", "version": "3"},
            }
        },
    )
    assert r.status_code == 200 and r.json()["instance"]["status"] == "BUILD"
    harness.a.wait_instance(r.json()["instance"]["id"])
    # not completed
    harness.container.queue.hold()
    running = harness.a.create_backup(inst["id"], "running")
    r = harness.a.post(
        "/instances",
        {"instance": {"name": "r", "flavorRef": "1", "restorePoint": {"backupRef": running["id"]}}},
    )
    assert r.status_code == 409
    assert (
        msg(r) == f"Unable to create instance because backup {running['id']} is not completed. "
        "Actual state: NEW."
    )
    harness.container.queue.release()
    # unknown / other project / malformed
    missing = "00000000-0000-0000-0000-000000000001"
    r = harness.a.post(
        "/instances",
        {"instance": {"name": "r", "flavorRef": "1", "restorePoint": {"backupRef": missing}}},
    )
    assert r.status_code == 404
    r = harness.b.post(
        "/instances",
        {"instance": {"name": "r", "flavorRef": "1", "restorePoint": {"backupRef": backup["id"]}}},
    )
    assert r.status_code == 404
    r = harness.a.post(
        "/instances",
        {
            "instance": {
                "name": "r",
                "flavorRef": "1",
                "restorePoint": {"backupRef": "http://x/backups/1"},
            }
        },
    )
    assert r.status_code == 400
    # volume over the maximum
    r = harness.a.post(
        "/instances", {"instance": {"name": "r", "flavorRef": "1", "volume": {"size": 11}}}
    )
    assert r.status_code == 413


def test_restore_refuses_too_large_backup(harness, completed):
    _, backup = completed
    vid = harness.a.get("/datastores/sqlite").json()["datastore"]["default_version"]
    big = harness.a.post(
        "/backups",
        {
            "backup": {
                "name": "big",
                "restore_from": {
                    "remote_location": backup["locationRef"],
                    "local_datastore_version_id": vid,
                    "size": 5.5,
                },
            }
        },
    ).json()["backup"]
    r = harness.a.post(
        "/instances",
        {
            "instance": {
                "name": "r",
                "flavorRef": "1",
                "volume": {"size": 2},
                "restorePoint": {"backupRef": big["id"]},
            }
        },
    )
    assert r.status_code == 403
    assert msg(r).startswith(
        "Backup is too large for given flavor or volume. Backup size: 5.5 GBs."
    )


def test_delete_instance_keeps_its_backups(harness, completed):
    inst, backup = completed
    assert harness.a.delete(f"/instances/{inst['id']}").status_code == 202
    harness.wait_idle()
    assert harness.a.get(f"/instances/{inst['id']}").status_code == 404
    assert harness.a.get(f"/instances/{inst['id']}/backups").status_code == 404
    listed = harness.a.get(f"/backups?instance_id={inst['id']}").json()["backups"]
    assert [b["id"] for b in listed] == [backup["id"]]


def test_delete_building_instance_is_422(harness):
    harness.container.queue.hold()
    inst = harness.a.create_instance("slow")
    r = harness.a.delete(f"/instances/{inst['id']}")
    assert r.status_code == 422
    assert msg(r) == f"Instance {inst['id']} is not ready. (Status is BUILD)."
    harness.container.queue.release()


def test_instances_list_and_isolation(harness):
    inst = harness.a.create_instance("mine")
    harness.a.wait_instance(inst["id"])
    listed = harness.a.get("/instances").json()["instances"]
    assert [i["id"] for i in listed] == [inst["id"]]
    assert listed[0]["flavor"]["id"] == "1"
    assert harness.b.get("/instances").json() == {"instances": []}
    assert harness.b.get(f"/instances/{inst['id']}").status_code == 404
    assert harness.b.delete(f"/instances/{inst['id']}").status_code == 404


def test_external_sqlite_registration_is_restricted(harness, tmp_path):
    import sqlite3

    allowed = tmp_path / "external" / "app.db"
    sqlite3.connect(allowed).execute("create table t(x)").connection.commit()
    outside = tmp_path / "outside.db"
    sqlite3.connect(outside).execute("create table t(x)").connection.commit()
    r = harness.a.post(
        "/instances",
        {
            "instance": {
                "name": "ext",
                "datastore": {"type": "sqlite"},
                "external": {"path": str(allowed)},
            }
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["instance"]["status"] == "ACTIVE"
    assert r.json()["instance"]["connection"] == {"path": str(allowed.resolve())}
    for path in (str(outside), str(tmp_path / "external" / ".." / "outside.db")):
        r = harness.a.post(
            "/instances",
            {
                "instance": {
                    "name": "ext",
                    "datastore": {"type": "sqlite"},
                    "external": {"path": path},
                }
            },
        )
        assert r.status_code == 403, r.text
        assert "forbidden" in r.json()


def test_restore_into_another_server_version_is_refused(harness, completed):
    from strongroom.domain.model import Datastore, DatastoreVersion
    from strongroom.services.datastores import datastore_id, version_id

    _, backup = completed
    catalog = harness.container.services.datastores
    old = DatastoreVersion(version_id("sqlite", "2"), datastore_id("sqlite"), "sqlite", "2", False)
    current = catalog.get("sqlite")
    with harness.container.uow(write=True) as uow:
        uow.datastores.ensure(Datastore(current.id, "sqlite", current.default_version_id, (old,)))
        uow.commit()
    catalog.load()
    imported = harness.a.post(
        "/backups",
        {
            "backup": {
                "name": "old",
                "restore_from": {
                    "remote_location": backup["locationRef"],
                    "local_datastore_version_id": old.id,
                    "size": 0.01,
                },
            }
        },
    ).json()["backup"]
    assert imported["datastore"]["version"] == "2"
    r = harness.a.post(
        "/instances", {"instance": {"name": "r", "restorePoint": {"backupRef": imported["id"]}}}
    )
    assert r.status_code == 400
    assert msg(r) == (
        "The datastore version from which the backup was taken, 2, does not match the "
        "destination datastore version 3."
    )
