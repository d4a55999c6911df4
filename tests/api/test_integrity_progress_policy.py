"""Restore refuses tampered backups; progress and failure reasons; operator policy files."""

import sqlite3
from pathlib import Path

import pytest

from fixtures.service import make_harness, wait_for


def msg(r):
    (body,) = r.json().values()
    return body["message"]


def source_with_rows(harness, rows=2000):
    inst = harness.a.create_instance("src")
    inst = harness.a.wait_instance(inst["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, body text)")
        db.executemany("insert into t values (?, ?)", [(i, f"row {i} " * 30) for i in range(rows)])
    return inst


def chunk_files(backup):
    manifest = Path(backup["locationRef"].removeprefix("file://"))
    return sorted(manifest.parent.glob("chunk-*"))


def restore(harness, backup_id):
    r = harness.a.post(
        "/instances",
        {
            "instance": {
                "name": "restored",
                "flavorRef": "1",
                "restorePoint": {"backupRef": backup_id},
            }
        },
    )
    assert r.status_code == 200, r.text
    return r.json()["instance"]["id"]


@pytest.fixture
def small_chunks(tmp_path):
    h = make_harness(tmp_path, chunk_size=64 * 1024)
    try:
        yield h
    finally:
        h.container.close()


@pytest.mark.parametrize("tamper", ["flip", "truncate", "remove", "swap"])
def test_tampered_backup_is_refused_and_nothing_is_left(small_chunks, tamper):
    harness = small_chunks
    inst = source_with_rows(harness, rows=5000)
    backup = harness.a.wait_backup(harness.a.create_backup(inst["id"])["id"])
    chunks = chunk_files(backup)
    assert len(chunks) > 2
    target = chunks[0]
    if tamper == "flip":
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0xFF
        target.write_bytes(bytes(data))
    elif tamper == "truncate":
        target.write_bytes(target.read_bytes()[:-100])
    elif tamper == "remove":
        target.unlink()
    else:
        a, b = chunks[0].read_bytes(), chunks[1].read_bytes()
        chunks[0].write_bytes(b)
        chunks[1].write_bytes(a)
    instance_id = restore(harness, backup["id"])
    failed = harness.a.wait_instance(instance_id, "ERROR")
    assert failed["fault"]["message"]
    assert "Traceback" not in failed["fault"]["message"]
    home = harness.settings.data_dir / "instances" / instance_id
    assert not home.exists()


def test_untouched_backup_restores_row_for_row(harness):
    inst = source_with_rows(harness, rows=20000)
    backup = harness.a.wait_backup(harness.a.create_backup(inst["id"])["id"])
    instance_id = restore(harness, backup["id"])
    restored = harness.a.wait_instance(instance_id)
    query = "select id, body from t order by id"
    with (
        sqlite3.connect(inst["connection"]["path"]) as src,
        sqlite3.connect(restored["connection"]["path"]) as dst,
    ):
        assert src.execute(query).fetchall() == dst.execute(query).fetchall()


def test_progress_while_running(tmp_path):
    h = make_harness(tmp_path)
    try:
        path = tmp_path / "external" / "locked.db"
        with sqlite3.connect(path) as db:
            db.execute("pragma journal_mode=delete")
            db.execute("create table t(x)")
            db.executemany("insert into t values (?)", [(i,) for i in range(100)])
        r = h.a.post(
            "/instances",
            {
                "instance": {
                    "name": "ext",
                    "datastore": {"type": "sqlite"},
                    "external": {"path": str(path)},
                }
            },
        )
        inst = r.json()["instance"]
        locker = sqlite3.connect(path, isolation_level=None)
        locker.execute("begin exclusive")
        backup = h.a.create_backup(inst["id"])
        running = wait_for(
            lambda: (
                (b := h.a.get(f"/backups/{backup['id']}").json()["backup"])["status"] == "BUILDING"
                and "progress" in b
                and b
            )
        )
        assert running["progress"]["bytes_expected"] > 0
        assert running["progress"]["bytes_done"] == 0
        locker.execute("rollback")
        locker.close()
        done = h.a.wait_backup(backup["id"])
        assert "progress" not in done
        assert done["size"] > 0
    finally:
        h.container.close()


def test_operator_policy_file_overrides_defaults(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text('"backup:delete": "role:admin"\n"backup:index:all_projects": "role:member"\n')
    h = make_harness(tmp_path, policy_file=policy)
    try:
        inst = h.a.create_instance()
        h.a.wait_instance(inst["id"])
        backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
        r = h.a.delete(f"/backups/{backup['id']}")
        assert r.status_code == 403
        assert msg(r) == "Policy doesn't allow backup:delete to be performed."
        assert h.a.get("/backups?all_projects=1").status_code == 200
        assert h.a.get(f"/backups/{backup['id']}").status_code == 200
    finally:
        h.container.close()
