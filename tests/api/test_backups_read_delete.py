"""Trove compatibility: restore_from, show, list, pagination, delete."""

import pytest


def msg(r):
    (body,) = r.json().values()
    return body["message"]


@pytest.fixture
def instance(harness):
    inst = harness.a.create_instance("src")
    harness.a.wait_instance(inst["id"])
    return inst


def sqlite_version_id(caller):
    return caller.get("/datastores/sqlite").json()["datastore"]["default_version"]


def test_restore_from_registers_a_restored_backup(harness, instance):
    done = harness.a.wait_backup(harness.a.create_backup(instance["id"])["id"])
    vid = sqlite_version_id(harness.a)
    r = harness.a.post(
        "/backups",
        {
            "backup": {
                "name": "imported",
                "instance": instance["id"],
                "restore_from": {
                    "remote_location": done["locationRef"],
                    "local_datastore_version_id": vid,
                    "size": 0.5,
                },
            }
        },
    )
    assert r.status_code == 202, r.text
    b = r.json()["backup"]
    assert b["status"] == "RESTORED"
    assert b["instance_id"] is None and b["parent_id"] is None
    assert b["locationRef"] == done["locationRef"]
    assert b["size"] == 0.5
    assert b["datastore"]["version_id"] == vid


def test_restore_from_validation(harness):
    r = harness.a.post("/backups", {"backup": {"name": "x", "restore_from": {}}})
    assert r.status_code == 400
    for field in ("remote_location", "local_datastore_version_id", "size"):
        assert f"'{field}' is a required property" in msg(r)
    vid = sqlite_version_id(harness.a)
    r = harness.a.post(
        "/backups",
        {
            "backup": {
                "name": "x",
                "restore_from": {
                    "remote_location": "file:///x",
                    "local_datastore_version_id": vid,
                    "size": "1",
                },
            }
        },
    )
    assert r.status_code == 400
    assert msg(r) == "Validation error: backup['restore_from']['size'] '1' is not of type 'number'"
    unknown = "22222222-2222-2222-2222-222222222222"
    r = harness.a.post(
        "/backups",
        {
            "backup": {
                "name": "x",
                "restore_from": {
                    "remote_location": "file:///x",
                    "local_datastore_version_id": unknown,
                    "size": 1,
                },
            }
        },
    )
    assert r.status_code == 400
    assert msg(r) == f"Datastore version '{unknown}' cannot be found."
    location = "file:///nonexistent/database-backups/abc/manifest.json"
    r = harness.a.post(
        "/backups",
        {
            "backup": {
                "name": "x",
                "restore_from": {
                    "remote_location": location,
                    "local_datastore_version_id": vid,
                    "size": 1,
                },
            }
        },
    )
    assert r.status_code == 400
    assert msg(r) == f"Failed to restore backup from {location}"


def test_show_is_scoped_to_the_project(harness, instance):
    b = harness.a.wait_backup(harness.a.create_backup(instance["id"])["id"])
    keys = {
        "id",
        "name",
        "description",
        "locationRef",
        "instance_id",
        "created",
        "updated",
        "size",
        "status",
        "parent_id",
        "project_id",
        "datastore",
    }
    assert keys <= set(b)
    assert harness.b.get(f"/backups/{b['id']}").status_code == 404
    assert harness.admin.get(f"/backups/{b['id']}").status_code == 200
    r = harness.a.get("/backups/not-a-uuid")
    assert r.status_code == 404 and msg(r) == "Resource not-a-uuid cannot be found."


def make_backups(harness, instance, n):
    ids = []
    for i in range(n):
        ids.append(
            harness.a.wait_backup(harness.a.create_backup(instance["id"], f"b{i}")["id"])["id"]
        )
    return ids


def test_order_and_pagination_links(harness, instance):
    ids = make_backups(harness, instance, 5)
    listed = [b["id"] for b in harness.a.get("/backups").json()["backups"]]
    assert listed == list(reversed(ids))
    body = harness.a.get("/backups?limit=2").json()
    assert len(body["backups"]) == 2
    assert body["links"] == [
        {
            "rel": "next",
            "href": f"http://127.0.0.1:8779/v1.0/{harness.a.project}/backups?limit=2&marker=2",
        }
    ]
    body = harness.a.get("/backups?limit=2&marker=2&foo=bar").json()
    assert body["links"][0]["href"].endswith("/backups?limit=2&marker=4&foo=bar")
    body = harness.a.get("/backups?limit=2&marker=4").json()
    assert len(body["backups"]) == 1 and "links" not in body
    body = harness.a.get("/backups?limit=5").json()
    assert body["links"][0]["href"].endswith("marker=5")
    assert harness.a.get("/backups?limit=5&marker=5").json() == {"backups": []}
    body = harness.a.get("/backups?marker=3").json()
    assert len(body["backups"]) == 2 and "links" not in body
    for bad in ("marker=abc", "limit=abc", "limit=0", "limit=-1"):
        assert harness.a.get(f"/backups?{bad}").status_code == 400


def test_state_change_moves_backup_to_front(harness, instance):
    ids = make_backups(harness, instance, 2)
    assert harness.a.get("/backups").json()["backups"][0]["id"] == ids[1]


def test_filters(harness, instance):
    ids = make_backups(harness, instance, 2)
    other = harness.a.create_instance("other")
    harness.a.wait_instance(other["id"])
    listed = harness.a.get(f"/backups?instance_id={instance['id']}").json()["backups"]
    assert {b["id"] for b in listed} == set(ids)
    assert harness.a.get("/backups?instance_id=unknown").json() == {"backups": []}
    by_name = harness.a.get("/backups?datastore=sqlite").json()["backups"]
    ds_id = harness.a.get("/datastores/sqlite").json()["datastore"]["id"]
    by_id = harness.a.get(f"/backups?datastore={ds_id}").json()["backups"]
    assert [b["id"] for b in by_name] == [b["id"] for b in by_id] and len(by_name) == 2
    r = harness.a.get("/backups?datastore=nope")
    assert r.status_code == 404 and msg(r) == "Datastore 'nope' cannot be found."


def test_all_projects_and_project_filter_are_admin_only(harness, instance):
    make_backups(harness, instance, 1)
    for query in ("all_projects=true", f"project_id={harness.a.project}"):
        r = harness.a.get(f"/backups?{query}")
        assert r.status_code == 403
        assert msg(r) == "Policy doesn't allow backup:index:all_projects to be performed."
    assert harness.a.get("/backups?all_projects=false").status_code == 200
    everyone = harness.admin.get("/backups?all_projects=1").json()["backups"]
    assert any(b["project_id"] == harness.a.project for b in everyone)
    only_a = harness.admin.get(f"/backups?project_id={harness.a.project}").json()["backups"]
    assert only_a and all(b["project_id"] == harness.a.project for b in only_a)
    assert harness.admin.get("/backups").json() == {"backups": []}


def test_instance_backups_listing(harness, instance):
    ids = make_backups(harness, instance, 3)
    body = harness.a.get(f"/instances/{instance['id']}/backups?limit=2").json()
    assert [b["id"] for b in body["backups"]] == list(reversed(ids))[:2]
    assert body["links"][0]["href"].endswith(
        f"/instances/{instance['id']}/backups?limit=2&marker=2"
    )
    assert harness.b.get(f"/instances/{instance['id']}/backups").status_code == 404
    assert (
        harness.a.get("/instances/00000000-0000-0000-0000-000000000000/backups").status_code == 404
    )
    admin_view = harness.admin.get(f"/instances/{instance['id']}/backups").json()["backups"]
    assert len(admin_view) == 3


def test_delete_cascades_and_releases_quota(harness, instance):
    full = harness.a.wait_backup(harness.a.create_backup(instance["id"], "A")["id"])
    b = harness.a.wait_backup(harness.a.create_backup(instance["id"], "B", incremental=1)["id"])
    c = harness.a.wait_backup(harness.a.create_backup(instance["id"], "C", incremental=1)["id"])
    assert c["parent_id"] == b["id"] and b["parent_id"] == full["id"]
    r = harness.a.delete(f"/backups/{full['id']}")
    assert r.status_code == 202 and r.content == b""
    harness.wait_idle()
    for backup in (full, b, c):
        assert harness.a.get(f"/backups/{backup['id']}").status_code == 404
    assert harness.a.get("/backups").json() == {"backups": []}
    store_root = harness.settings.data_dir / "objects" / "database-backups"
    assert not any(store_root.glob("*/manifest.json"))


def test_cascade_delete_releases_quota_for_every_backup(tmp_path):
    from fixtures.service import make_harness

    h = make_harness(tmp_path, backup_quota=3)
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        chain = []
        for i in range(3):
            extra = {"incremental": 1} if chain else {}
            chain.append(h.a.wait_backup(h.a.create_backup(inst["id"], f"c{i}", **extra)["id"]))
        assert (
            h.a.post("/backups", {"backup": {"name": "x", "instance": inst["id"]}}).status_code
            == 413
        )
        assert h.a.delete(f"/backups/{chain[0]['id']}").status_code == 202
        h.wait_idle()
        for i in range(3):
            h.a.wait_backup(h.a.create_backup(inst["id"], f"again{i}")["id"])
    finally:
        h.container.close()


def test_delete_running_backup_is_422(harness, instance):
    harness.container.queue.hold()
    b = harness.a.create_backup(instance["id"])
    r = harness.a.delete(f"/backups/{b['id']}")
    assert r.status_code == 422
    assert msg(r) == f"Backup {b['id']} cannot be deleted because it is running."
    harness.container.queue.release()


def test_delete_parent_with_running_child_names_the_child(harness, instance):
    full = harness.a.wait_backup(harness.a.create_backup(instance["id"], "A")["id"])
    harness.container.queue.hold()
    child = harness.a.create_backup(instance["id"], "B", incremental=1)
    r = harness.a.delete(f"/backups/{full['id']}")
    assert r.status_code == 422
    assert child["id"] in msg(r)
    harness.container.queue.release()


def test_delete_unknown_or_foreign_is_404(harness, instance):
    b = harness.a.wait_backup(harness.a.create_backup(instance["id"])["id"])
    assert harness.b.delete(f"/backups/{b['id']}").status_code == 404
    assert harness.a.delete("/backups/00000000-0000-0000-0000-000000000000").status_code == 404
    assert harness.a.get(f"/backups/{b['id']}").status_code == 200


def test_delete_restored_backup_keeps_the_stored_object(harness, instance):
    done = harness.a.wait_backup(harness.a.create_backup(instance["id"])["id"])
    vid = sqlite_version_id(harness.a)
    imported = harness.a.post(
        "/backups",
        {
            "backup": {
                "name": "imp",
                "restore_from": {
                    "remote_location": done["locationRef"],
                    "local_datastore_version_id": vid,
                    "size": 0.1,
                },
            }
        },
    ).json()["backup"]
    assert harness.a.delete(f"/backups/{imported['id']}").status_code == 202
    harness.wait_idle()
    assert harness.a.get(f"/backups/{imported['id']}").status_code == 404
    assert harness.a.get(f"/backups/{done['id']}").status_code == 200
    path = done["locationRef"].removeprefix("file://")
    import os

    assert os.path.exists(path)
