"""A verification whose worker died is run again (it only reads), not left RUNNING."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from fixtures.clocked import ManualClock, make_clocked_harness
from fixtures.service import wait_for
from strongroom.domain.model import JobKind, JobState


def test_a_dead_workers_verification_is_requeued_and_finishes(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2031, 6, 1))
    h = make_clocked_harness(tmp_path, clock)
    try:
        inst = h.a.wait_instance(h.a.create_instance()["id"])
        backup = h.a.wait_backup(h.a.create_backup(inst["id"])["id"])
        h.container.queue.hold()
        assert h.a.post(f"/backups/{backup['id']}/verify").status_code == 202
        with h.container.uow(write=True) as uow:
            (job,) = [
                j
                for j in uow.jobs.unfinished()
                if j.kind is JobKind.VERIFY_BACKUP and j.target_id == backup["id"]
            ]
            # Another host took it, then stopped beating.
            assert uow.jobs.claim(job.id, "host-that-died", clock.now()) is not None
            uow.commit()
        clock.advance(timedelta(minutes=10))
        h.container.reaper.reap()
        with h.container.uow() as uow:
            requeued = uow.jobs.find(job.id)
        assert requeued is not None and requeued.state is JobState.QUEUED
        h.container.queue.release()
        done = wait_for(
            lambda: (
                b
                if (b := h.a.get(f"/backups/{backup['id']}").json()["backup"])["verify_status"]
                != "RUNNING"
                else None
            )
        )
        assert done["verify_status"] == "OK"
    finally:
        h.container.close()
