"""Schedule runs and verification results are counted as they happen (real SQLite backups,
the scheduler ticked by hand with a manual clock)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from fixtures.clocked import ManualClock, make_clocked_harness, scheduler_of
from fixtures.service import Harness, wait_for
from strongroom.observability.telemetry import PrometheusTelemetry

START = datetime(2031, 3, 1, 12, 0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def h(tmp_path: Path, clock: ManualClock) -> Iterator[Harness]:
    harness = make_clocked_harness(tmp_path, clock, metrics_port=9779, chunk_size=64 * 1024)
    try:
        yield harness
    finally:
        harness.container.close()


def counted(h: Harness, name: str, **labels: str) -> float:
    telemetry = h.container.telemetry
    assert isinstance(telemetry, PrometheusTelemetry) and telemetry.registry is not None
    return telemetry.registry.get_sample_value(name, labels) or 0.0


def test_schedule_runs_are_counted_started_or_failed(h: Harness, clock: ManualClock) -> None:
    inst = h.a.wait_instance(h.a.create_instance("db")["id"])
    r = h.a.post(
        "/backup_schedules",
        {"backup_schedule": {"instance_id": inst["id"], "name": "hourly", "cron": "0 * * * *"}},
    )
    assert r.status_code == 200, r.text
    h.container.queue.hold()  # type: ignore[attr-defined]
    try:
        clock.set(START + timedelta(hours=1))
        assert scheduler_of(h).tick() == 1
        # The next hour's run finds the first backup still running: it cannot start.
        clock.set(START + timedelta(hours=2))
        assert scheduler_of(h).tick() == 0
    finally:
        h.container.queue.release()  # type: ignore[attr-defined]
    h.wait_idle()
    assert counted(h, "strongroom_schedule_runs_total", outcome="started") == 1
    assert counted(h, "strongroom_schedule_runs_total", outcome="failed") == 1


def test_verification_results_are_counted(h: Harness) -> None:
    inst = h.a.wait_instance(h.a.create_instance("db")["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, body text)")
        db.executemany("insert into t values (?, ?)", [(i, f"row {i} " * 30) for i in range(3000)])
    good = h.a.wait_backup(h.a.create_backup(inst["id"], name="good")["id"])
    bad = h.a.wait_backup(h.a.create_backup(inst["id"], name="bad")["id"])
    manifest = Path(bad["locationRef"].removeprefix("file://"))
    chunk = sorted(manifest.parent.glob("chunk-*"))[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))

    def status(backup_id: str) -> str:
        return str(h.a.get(f"/backups/{backup_id}").json()["backup"]["verify_status"])

    for backup in (good, bad):  # one verification a project at a time
        assert h.a.post(f"/backups/{backup['id']}/verify").status_code == 202
        wait_for(lambda backup=backup: status(backup["id"]) != "RUNNING")
    assert (status(good["id"]), status(bad["id"])) == ("OK", "CORRUPT")
    assert counted(h, "strongroom_verifications_total", result="OK") == 1
    assert counted(h, "strongroom_verifications_total", result="CORRUPT") == 1
