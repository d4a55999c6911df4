"""A restore reads exactly the backup it was asked for: a store's objects copied over
another backup's (another project's, or an older one of the same instance) still verify
under the master key, and must be refused against the metadata before any byte is
restored. Real service, real SQLite engine, real local store."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from fixtures.service import Caller, Harness

QUERY = "select id, body from t order by id"


def filled_instance(caller: Caller, name: str, rows: list[tuple[int, str]]) -> dict:
    inst = caller.wait_instance(caller.create_instance(name)["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, body text)")
        db.executemany("insert into t values (?, ?)", rows)
    return inst


def rewrite(inst: dict, rows: list[tuple[int, str]]) -> None:
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("delete from t")
        db.executemany("insert into t values (?, ?)", rows)


def backup_dir(h: Harness, backup_id: str) -> Path:
    return h.settings.data_dir / "objects" / "database-backups" / backup_id


def copy_objects_over(h: Harness, source_id: str, target_id: str) -> None:
    """What someone with write access to the bucket can do: replace every object."""
    target = backup_dir(h, target_id)
    shutil.rmtree(target)
    shutil.copytree(backup_dir(h, source_id), target)


def restore(caller: Caller, backup_id: str) -> str:
    r = caller.post(
        "/instances", {"instance": {"name": "r", "restorePoint": {"backupRef": backup_id}}}
    )
    assert r.status_code == 200, r.text
    iid: str = r.json()["instance"]["id"]
    return iid


def rows_of(inst: dict) -> list[tuple[int, str]]:
    with sqlite3.connect(inst["connection"]["path"]) as db:
        return db.execute(QUERY).fetchall()


ROWS_A = [(i, f"a-{i}") for i in range(200)]
ROWS_B = [(i, f"b-{i}") for i in range(300)]


def test_restore_refuses_another_projects_objects_copied_over_the_backup(harness):
    h = harness
    a = h.a.wait_backup(h.a.create_backup(filled_instance(h.a, "a", ROWS_A)["id"])["id"])
    b = h.b.wait_backup(h.b.create_backup(filled_instance(h.b, "b", ROWS_B)["id"])["id"])
    copy_objects_over(h, b["id"], a["id"])

    failed = h.a.wait_instance(restore(h.a, a["id"]), "ERROR")
    reason = failed["fault"]["message"]
    assert "belongs to another backup" in reason
    assert "backup_id" in reason and "project_id" in reason
    assert b["id"] not in reason and h.b.project not in reason
    # Nothing of B's was laid out for A.
    assert not (h.settings.data_dir / "instances" / failed["id"]).exists()


def test_restore_refuses_an_older_backup_copied_over_a_newer_one(harness):
    h = harness
    inst = filled_instance(h.a, "a", ROWS_A)
    old = h.a.wait_backup(h.a.create_backup(inst["id"], "old")["id"])
    rewrite(inst, ROWS_B)
    new = h.a.wait_backup(h.a.create_backup(inst["id"], "new")["id"])
    assert rows_of(h.a.wait_instance(restore(h.a, new["id"]))) == ROWS_B  # untouched: fine

    copy_objects_over(h, old["id"], new["id"])
    failed = h.a.wait_instance(restore(h.a, new["id"]), "ERROR")
    assert "belongs to another backup" in failed["fault"]["message"]
    assert "backup_id" in failed["fault"]["message"]
    assert rows_of(h.a.wait_instance(restore(h.a, old["id"]))) == ROWS_A


def test_restore_refuses_an_incremental_whose_parent_was_rolled_back(harness):
    h = harness
    inst = filled_instance(h.a, "a", ROWS_A)
    first = h.a.wait_backup(h.a.create_backup(inst["id"], "first")["id"])
    rewrite(inst, ROWS_B)
    base = h.a.wait_backup(h.a.create_backup(inst["id"], "base")["id"])
    rewrite(inst, ROWS_A[:50])
    incr = h.a.wait_backup(h.a.create_backup(inst["id"], "incr", incremental=1)["id"])
    assert incr["parent_id"] == base["id"]

    copy_objects_over(h, first["id"], base["id"])
    failed = h.a.wait_instance(restore(h.a, incr["id"]), "ERROR")
    assert (
        "belongs to another backup (not as the metadata records: backup_id)"
        in (failed["fault"]["message"])
    )


def register(caller: Caller, harness: Harness, location: str) -> dict:
    version = caller.get("/datastores/sqlite").json()["datastore"]["default_version"]
    r = caller.post(
        "/backups",
        {
            "backup": {
                "name": "imported",
                "restore_from": {
                    "remote_location": location,
                    "local_datastore_version_id": version,
                    "size": 0.1,
                },
            }
        },
    )
    assert r.status_code == 202, r.text
    registered: dict = r.json()["backup"]
    return registered


def test_restore_refuses_a_restore_from_manifest_replaced_after_registration(harness):
    h = harness
    inst = filled_instance(h.a, "a", ROWS_A)
    old = h.a.wait_backup(h.a.create_backup(inst["id"], "old")["id"])
    rewrite(inst, ROWS_B)
    new = h.a.wait_backup(h.a.create_backup(inst["id"], "new")["id"])

    kept = register(h.a, h, new["locationRef"])
    assert rows_of(h.a.wait_instance(restore(h.a, kept["id"]))) == ROWS_B

    replaced = register(h.a, h, new["locationRef"])
    copy_objects_over(h, old["id"], new["id"])
    failed = h.a.wait_instance(restore(h.a, replaced["id"]), "ERROR")
    assert "not the one registered" in failed["fault"]["message"]
