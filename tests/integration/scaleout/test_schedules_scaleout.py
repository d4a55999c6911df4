"""Schedules in the scaled-out layout: two `strongroom api` processes run a scheduler each
over one PostgreSQL metadata database, and two workers run the backups. Each due tick
makes exactly one backup."""

from __future__ import annotations

import itertools
import sqlite3
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from fixtures.cluster import Cluster, running_cluster
from fixtures.service import wait_for
from integration.scaleout.test_scaleout import Api

PERIOD = 3  # seconds between ticks
TICKS = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    # Ticks PERIOD seconds apart: closer than the default minimum between a schedule's runs.
    env = {"STRONGROOM_SCHEDULE_MIN_INTERVAL": "1"}
    with running_cluster(Path(tmp_path_factory.mktemp("scaleout")), extra_env=env) as c:
        yield c


def test_each_tick_makes_one_backup_with_two_api_processes(cluster) -> None:
    name = "p" + uuid.uuid4().hex[:10]
    token = cluster.token(name, "admin")  # admin: places the instance on a chosen host
    first, second = (Api(url, name, token) for url in cluster.api_urls)
    inst = first.instance("scheduled", "h1")
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(x)")
        db.executemany("insert into t values (?)", [(i,) for i in range(200)])
    r = first.post(
        "/backup_schedules",
        {
            "backup_schedule": {
                "instance_id": inst["id"],
                "name": "often",
                "cron": f"* * * * * */{PERIOD}",
            }
        },
    )
    assert r.status_code == 200, r.text
    schedule_id = r.json()["backup_schedule"]["id"]
    statuses: set[str] = set()

    def mine() -> list[dict]:
        listed = second.get("/backups?limit=1000").json()["backups"]
        return [b for b in listed if b.get("schedule_id") == schedule_id]

    def enough() -> bool:
        s = second.get(f"/backup_schedules/{schedule_id}").json()["backup_schedule"]
        if s["last_status"]:
            statuses.add(s["last_status"])
        done = [b for b in mine() if b["status"] in ("COMPLETED", "FAILED")]
        return len(done) >= TICKS

    wait_for(enough, timeout=90, interval=0.2)
    assert first.get(f"/backup_schedules/{schedule_id}").status_code == 200
    deleted = httpx_delete(first, f"/backup_schedules/{schedule_id}")
    assert deleted in (200, 202, 204)
    # Runs that had already started when the schedule went finish; none starts after.
    wait_for(lambda: all(b["status"] in ("COMPLETED", "FAILED") for b in mine()), timeout=60)
    backups = sorted(mine(), key=lambda b: b["created"])
    assert all(b["status"] == "COMPLETED" for b in backups), backups
    # One backup a tick: names carry the tick, and consecutive ticks are PERIOD apart.
    names = [b["name"] for b in backups]
    assert len(set(names)) == len(names), names
    created = [datetime.fromisoformat(b["created"]) for b in backups]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(created)]
    assert all(gap > PERIOD / 2 for gap in gaps), gaps  # never two for one tick
    assert "SKIPPED" not in statuses, statuses  # no second process found the instance busy


def httpx_delete(api: Api, path: str) -> int:
    return httpx.delete(api.base + path, headers=api.headers, timeout=30).status_code
