"""The scheduler loop on the real clock: a 6-field cron every 2 seconds makes backups by
itself, follows them up (retention), and the newest one restores row for row."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from fixtures.service import make_harness, wait_for


def test_every_two_seconds_on_the_real_clock(tmp_path: Path) -> None:
    h = make_harness(tmp_path, schedule_min_interval=1)  # runs closer than a minute apart
    try:
        inst = h.a.wait_instance(h.a.create_instance("live")["id"])
        with sqlite3.connect(inst["connection"]["path"]) as db:
            db.execute("create table t(id integer primary key, v text)")
            db.executemany("insert into t values (?, ?)", [(i, f"v{i}") for i in range(500)])
        r = h.a.post(
            "/backup_schedules",
            {
                "backup_schedule": {
                    "instance_id": inst["id"],
                    "name": "often",
                    "cron": "* * * * * */2",
                    "retention": {"keep_last": 1},
                }
            },
        )
        assert r.status_code == 200, r.text
        schedule_id = r.json()["backup_schedule"]["id"]
        started = time.monotonic()
        seen: set[str] = set()

        def three_runs() -> bool:
            s = h.a.get(f"/backup_schedules/{schedule_id}").json()["backup_schedule"]
            if s["last_backup_id"]:
                seen.add(s["last_backup_id"])
            return len(seen) >= 3

        wait_for(three_runs, timeout=60, interval=0.2)
        # Three runs two seconds apart: at least four seconds, and not one per poll.
        assert time.monotonic() - started >= 3.5
        scheduler = h.container.scheduler
        assert scheduler is not None
        scheduler.stop()
        h.wait_idle()
        scheduler.follow_up()
        h.wait_idle()
        listed = h.a.get("/backups?limit=1000").json()["backups"]
        mine: list[dict[str, Any]] = [b for b in listed if b.get("schedule_id") == schedule_id]
        completed = [b for b in mine if b["status"] == "COMPLETED"]
        assert len(completed) == 1, mine  # keep_last 1: the older ones were pruned
        newest = completed[0]
        r = h.a.post(
            "/instances",
            {"instance": {"name": "back", "restorePoint": {"backupRef": newest["id"]}}},
        )
        restored = h.a.wait_instance(r.json()["instance"]["id"])
        query = "select id, v from t order by id"
        with (
            sqlite3.connect(inst["connection"]["path"]) as src,
            sqlite3.connect(restored["connection"]["path"]) as dst,
        ):
            assert src.execute(query).fetchall() == dst.execute(query).fetchall()
    finally:
        h.container.close()
