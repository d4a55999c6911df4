"""POST /backups/{id}/verify reads a backup back: OK for a good one (which also restores row
for row), CORRUPT for changed bytes, MISSING for a removed object, through the chain."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fixtures.clocked import ManualClock, make_clocked_harness, scheduler_of
from fixtures.service import Caller, Harness, make_harness, wait_for


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = make_harness(tmp_path, chunk_size=64 * 1024)
    try:
        yield harness
    finally:
        harness.container.close()


def source_with_rows(caller: Caller, rows: int = 5000) -> dict[str, Any]:
    inst = caller.wait_instance(caller.create_instance("src")["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, body text)")
        db.executemany("insert into t values (?, ?)", [(i, f"row {i} " * 30) for i in range(rows)])
    return inst


def objects_of(backup: dict[str, Any]) -> tuple[Path, list[Path]]:
    manifest = Path(backup["locationRef"].removeprefix("file://"))
    return manifest, sorted(manifest.parent.glob("chunk-*"))


def verify(caller: Caller, backup_id: str) -> dict[str, Any]:
    r = caller.post(f"/backups/{backup_id}/verify")
    assert r.status_code == 202, r.text
    assert r.json()["backup"]["verify_status"] == "RUNNING"

    def finished() -> dict[str, Any] | None:
        b: dict[str, Any] = caller.get(f"/backups/{backup_id}").json()["backup"]
        return b if b["verify_status"] != "RUNNING" else None

    result: dict[str, Any] = wait_for(finished)
    return result


def test_a_good_backup_verifies_ok_and_restores_row_for_row(h: Harness) -> None:
    inst = source_with_rows(h.a)
    backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    assert "verify_status" not in backup  # never verified
    assert len(objects_of(backup)[1]) > 2
    done = verify(h.a, backup["id"])
    assert done["verify_status"] == "OK" and done["verify_error"] is None
    assert done["verified_at"]
    r = h.a.post(
        "/instances", {"instance": {"name": "r", "restorePoint": {"backupRef": backup["id"]}}}
    )
    restored = h.a.wait_instance(r.json()["instance"]["id"])
    query = "select id, body from t order by id"
    with (
        sqlite3.connect(inst["connection"]["path"]) as src,
        sqlite3.connect(restored["connection"]["path"]) as dst,
    ):
        assert src.execute(query).fetchall() == dst.execute(query).fetchall()


@pytest.mark.parametrize(
    ("tamper", "status"),
    [
        ("flip", "CORRUPT"),
        ("truncate", "CORRUPT"),
        ("swap", "CORRUPT"),
        ("remove", "MISSING"),
        ("remove-last", "MISSING"),
        ("remove-manifest", "MISSING"),
        ("flip-manifest", "CORRUPT"),
    ],
)
def test_tampered_objects_are_found(h: Harness, tamper: str, status: str) -> None:
    inst = source_with_rows(h.a)
    backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    manifest, chunks = objects_of(backup)
    if tamper == "flip":
        data = bytearray(chunks[1].read_bytes())
        data[len(data) // 2] ^= 0x01
        chunks[1].write_bytes(bytes(data))
    elif tamper == "truncate":
        chunks[1].write_bytes(chunks[1].read_bytes()[:-1])
    elif tamper == "swap":
        a, b = chunks[0].read_bytes(), chunks[1].read_bytes()
        chunks[0].write_bytes(b)
        chunks[1].write_bytes(a)
    elif tamper == "remove":
        chunks[1].unlink()
    elif tamper == "remove-last":
        chunks[-1].unlink()
    elif tamper == "remove-manifest":
        manifest.unlink()
    else:
        manifest.write_bytes(manifest.read_bytes().replace(b'"plain_bytes": ', b'"plain_bytes": 1'))
    done = verify(h.a, backup["id"])
    assert done["verify_status"] == status, done
    assert done["verify_error"] and "Traceback" not in done["verify_error"]


def test_a_changed_full_backup_makes_its_incremental_corrupt(h: Harness) -> None:
    inst = source_with_rows(h.a)
    full = h.a.wait_backup(h.a.create_backup(inst["id"], "full")["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("update t set body = 'changed' where id < 10")
    incr = h.a.wait_backup(h.a.create_backup(inst["id"], "incr", incremental=1)["id"])
    assert incr["parent_id"] == full["id"]
    assert verify(h.a, incr["id"])["verify_status"] == "OK"
    _, chunks = objects_of(full)
    data = bytearray(chunks[-1].read_bytes())
    data[-5] ^= 0x80
    chunks[-1].write_bytes(bytes(data))
    done = verify(h.a, incr["id"])
    assert done["verify_status"] == "CORRUPT"
    assert full["id"] in done["verify_error"]


def test_a_chunk_swapped_for_a_link_to_a_secret_is_not_read_out(h: Harness, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-VALUE " * 100)
    inst = source_with_rows(h.a)
    backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    _, chunks = objects_of(backup)
    chunks[0].unlink()
    chunks[0].symlink_to(secret)
    done = verify(h.a, backup["id"])
    assert done["verify_status"] in ("CORRUPT", "MISSING"), done
    assert "TOP-SECRET" not in done["verify_error"]
    assert "TOP-SECRET" not in h.a.get(f"/backups/{backup['id']}").text


def test_verify_is_scoped_and_refuses_what_cannot_be_read(h: Harness) -> None:
    inst = source_with_rows(h.a, rows=10)
    backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
    r = h.b.post(f"/backups/{backup['id']}/verify")
    assert r.status_code == 404 and r.json()["itemNotFound"]["code"] == 404
    assert "verify_status" not in h.a.get(f"/backups/{backup['id']}").json()["backup"]
    assert h.a.post("/backups/00000000-0000-0000-0000-000000000000/verify").status_code == 404
    h.container.queue.hold()
    try:
        running = h.a.create_backup(inst["id"], "running")
        r = h.a.post(f"/backups/{running['id']}/verify")
        assert r.status_code == 409, r.text
        assert h.a.post(f"/backups/{backup['id']}/verify").status_code == 202
        again = h.a.post(f"/backups/{backup['id']}/verify")  # one at a time
        assert again.status_code == 422, again.text
    finally:
        h.container.queue.release()
    h.a.wait_backup(running["id"])
    wait_for(lambda: h.a.get(f"/backups/{backup['id']}").json()["backup"]["verify_status"] == "OK")


def test_a_schedule_with_verify_verifies_each_backup(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2031, 3, 2))
    h = make_clocked_harness(tmp_path, clock)
    try:
        inst = source_with_rows(h.a, rows=100)
        r = h.a.post(
            "/backup_schedules",
            {
                "backup_schedule": {
                    "instance_id": inst["id"],
                    "name": "checked",
                    "cron": "0 3 * * *",
                    "verify": True,
                }
            },
        )
        schedule = r.json()["backup_schedule"]
        clock.advance(timedelta(hours=3))
        assert scheduler_of(h).tick() == 1
        backup_id = h.a.get(f"/backup_schedules/{schedule['id']}").json()["backup_schedule"][
            "last_backup_id"
        ]
        h.a.wait_backup(backup_id)
        scheduler_of(h).follow_up()
        done = wait_for(
            lambda: (
                b
                if (b := h.a.get(f"/backups/{backup_id}").json()["backup"]).get("verify_status")
                not in (None, "RUNNING")
                else None
            )
        )
        assert done["verify_status"] == "OK"
    finally:
        h.container.close()
