"""python-troveclient (v1 Client over a keystoneauth1 session) against a live server."""

import sqlite3
import uuid

import pytest
from keystoneauth1 import loading, session
from keystoneauth1.token_endpoint import Token
from troveclient import exceptions
from troveclient.v1 import client

from fixtures.service import wait_for


@pytest.fixture(scope="module")
def project():
    return "p" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def trove(live_server, project):
    token = live_server.token(project)
    sess = session.Session(auth=Token(live_server.endpoint(project), token))
    return client.Client(session=sess)


def wait_status(get, wanted, failed=("ERROR", "FAILED")):
    def check():
        obj = get()
        assert obj.status not in failed, getattr(obj, "fault", None) or getattr(
            obj, "fail_reason", None
        )
        return obj if obj.status == wanted else None

    return wait_for(check, timeout=60)


def rows(path):
    with sqlite3.connect(path) as db:
        return db.execute("select id, body from notes order by id").fetchall()


def write(path, start, count):
    with sqlite3.connect(path) as db:
        db.execute("create table if not exists notes(id integer primary key, body text)")
        db.executemany(
            "insert into notes values (?, ?)",
            [(i, f"note {i} " * 20) for i in range(start, start + count)],
        )


def test_end_to_end_full_incremental_restore_and_cascade(trove):
    inst = trove.instances.create(
        "source", "1", volume={"size": 1}, datastore="sqlite", datastore_version="3"
    )
    inst = wait_status(lambda: trove.instances.get(inst.id), "ACTIVE")
    path = inst.connection["path"]
    write(path, 0, 500)
    at_full = rows(path)
    full = trove.backups.create("full", inst.id, description="first")
    full = wait_status(lambda: trove.backups.get(full.id), "COMPLETED")
    write(path, 500, 50)
    at_incr = rows(path)
    incr = trove.backups.create("incr", inst.id, incremental=True)
    assert incr.parent_id == full.id
    incr = wait_status(lambda: trove.backups.get(incr.id), "COMPLETED")

    for backup, expected in ((full, at_full), (incr, at_incr)):
        restored = trove.instances.create(
            f"from-{backup.name}",
            "1",
            volume={"size": 1},
            restorePoint={"backupRef": backup.id},
            datastore="sqlite",
            datastore_version="3",
        )
        restored = wait_status(lambda r=restored: trove.instances.get(r.id), "ACTIVE")
        assert restored.connection["path"] != path
        assert rows(restored.connection["path"]) == expected

    names = {b.name for b in trove.instances.backups(inst.id)}
    assert {"full", "incr"} <= names
    trove.backups.delete(full.id)

    def gone(backup_id):
        try:
            trove.backups.get(backup_id)
        except exceptions.NotFound:
            return True
        return False

    wait_for(lambda: gone(full.id) and gone(incr.id))


def test_errors_map_to_client_exceptions(trove):
    with pytest.raises(exceptions.NotFound, match=r"Resource .* cannot be found. \(HTTP 404\)"):
        trove.backups.get("00000000-0000-0000-0000-000000000000")
    inst = trove.instances.create("busy", "1", datastore="sqlite")
    wait_status(lambda: trove.instances.get(inst.id), "ACTIVE")
    with pytest.raises(exceptions.BadRequest):
        trove.backups.create("x", "not-a-uuid")


def test_list_filters_pagination_and_strategies(trove, live_server, project):
    inst = trove.instances.create("paged", "1", datastore="sqlite")
    wait_status(lambda: trove.instances.get(inst.id), "ACTIVE")
    created = []
    for i in range(3):
        b = trove.backups.create(f"page{i}", inst.id)
        created.append(wait_status(lambda b=b: trove.backups.get(b.id), "COMPLETED").id)
    page = trove.backups.list(limit=2)
    assert len(page) == 2 and page.next == "2"
    rest = trove.backups.list(marker=page.next)
    assert len(rest) >= 1
    by_instance = trove.backups.list(instance_id=inst.id, datastore="sqlite")
    assert {b.id for b in by_instance} == set(created)
    with pytest.raises(exceptions.Forbidden):
        trove.backups.list(all_projects=True)
    strategy = trove.backup_strategies.create(instance_id=inst.id, swift_container="mycont")
    assert strategy.swift_container == "mycont"
    assert [s.instance_id for s in trove.backup_strategies.list(instance_id=inst.id)] == [inst.id]
    trove.backup_strategies.delete(instance_id=inst.id)
    assert trove.backup_strategies.list(instance_id=inst.id) == []
    ds = trove.datastores.list()
    assert "sqlite" in [d.name for d in ds]
    version = trove.datastore_versions.get("sqlite", "3")
    assert trove.datastore_versions.get_by_uuid(version.id).name == "3"


def test_running_backup_delete_is_unprocessable(trove):
    # The backup waits for the write lock another connection holds: it is running.
    inst = trove.instances.create("held", "1", datastore="sqlite")
    inst = wait_status(lambda: trove.instances.get(inst.id), "ACTIVE")
    path = inst.connection["path"]
    write(path, 0, 10)
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("begin exclusive")
    try:
        backup = trove.backups.create("held", inst.id)
        with pytest.raises(exceptions.UnprocessableEntity, match=r"is running. \(HTTP 422\)"):
            trove.backups.delete(backup.id)
    finally:
        locker.execute("rollback")
        locker.close()
    wait_status(lambda: trove.backups.get(backup.id), "COMPLETED")


def test_admin_token_plugin_and_running_delete(live_server, project):
    token = live_server.token(project)
    auth = loading.get_plugin_loader("admin_token").load_from_options(
        endpoint=live_server.endpoint(project), token=token
    )
    trove = client.Client(session=session.Session(auth=auth))
    assert isinstance(trove.backups.list(), list)
