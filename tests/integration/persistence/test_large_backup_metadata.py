"""A real backup of a database over 2 GiB, recorded in PostgreSQL metadata: its expected
and done bytes no longer fit a 32-bit column. ~2.2 GB of zero pages compress to almost
nothing, so the cost is reading and hashing them (measured: see the report of the run)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator

import pytest

from fixtures.metadata import postgresql_database
from fixtures.service import make_harness, wait_for

MIB = 1024 * 1024
BLOBS = 22  # x 100 MiB: 2.2 GiB + a little, over 2**31 bytes


@pytest.fixture
def postgresql_metadata() -> Iterator[str]:
    with postgresql_database("strongroom_big_") as url:
        yield url


def test_a_backup_over_2_gib_completes_and_restores_on_postgresql_metadata(
    tmp_path, postgresql_metadata
):
    started = time.monotonic()
    h = make_harness(tmp_path, database_url=postgresql_metadata, chunk_size=16 * MIB)
    try:
        inst = h.a.wait_instance(h.a.create_instance("big")["id"])
        with sqlite3.connect(inst["connection"]["path"]) as db:
            db.execute("create table marker(id integer primary key, body text)")
            db.executemany(
                "insert into marker values (?, ?)", [(i, f"row {i}") for i in range(1000)]
            )
            db.execute("create table big(id integer primary key, b blob)")
            for i in range(BLOBS):
                db.execute("insert into big values (?, zeroblob(?))", (i, 100 * MIB))
            expected = db.execute("select id, body from marker order by id").fetchall()
        backup = h.a.create_backup(inst["id"], "big")
        done = wait_for(
            lambda: (
                (b := h.a.get(f"/backups/{backup['id']}").json()["backup"])["status"]
                in ("COMPLETED", "FAILED")
                and b
            ),
            timeout=240,
        )
        assert done["status"] == "COMPLETED", done.get("fail_reason")
        assert done["size"] > 2.0
        with h.container.uow() as uow:  # progress is shown only while a backup runs
            recorded = uow.backups.find(done["id"])
        assert recorded is not None
        assert recorded.progress.bytes_done > 2**31
        assert recorded.progress.bytes_expected is not None
        assert recorded.progress.bytes_expected > 2**31
        assert 0 < done["stored_bytes"] < 64 * MIB  # zero pages compress to almost nothing

        r = h.a.post(
            "/instances", {"instance": {"name": "r", "restorePoint": {"backupRef": done["id"]}}}
        )
        restored = wait_for(
            lambda: (
                (i := h.a.get(f"/instances/{r.json()['instance']['id']}").json()["instance"])[
                    "status"
                ]
                in ("ACTIVE", "ERROR")
                and i
            ),
            timeout=240,
        )
        assert restored["status"] == "ACTIVE", restored.get("fault")
        with sqlite3.connect(restored["connection"]["path"]) as db:
            assert db.execute("select id, body from marker order by id").fetchall() == expected
            assert db.execute("select id, length(b) from big order by id").fetchall() == [
                (i, 100 * MIB) for i in range(BLOBS)
            ]
            assert db.execute(
                "select count(*) from big where b != zeroblob(length(b))"
            ).fetchone() == (0,)
    finally:
        h.container.close()
    print(f"2.2 GiB backup and restore on PostgreSQL metadata: {time.monotonic() - started:.1f} s")
