"""Archive retention decides on the service host's clock alone: an external server whose
clock is an hour behind stamps its batches an hour early, and retention still keeps every
batch stored after the oldest backup began (the old rule, by the server's commit times,
removed the batch that held that backup's start). Real metadata database and store; the
batch rows are written as the archiver writes them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from fixtures.service import Harness, make_harness, wait_for
from strongroom.domain.pitr import WalBatch


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = make_harness(tmp_path)
    assert harness.container.archiver is not None
    harness.container.archiver.stop()  # the test runs retention itself
    try:
        yield harness
    finally:
        harness.container.close()


def test_retention_keeps_what_the_oldest_backup_needs_whatever_the_servers_clock(
    h: Harness,
) -> None:
    inst = h.a.wait_instance(h.a.create_instance("src")["id"])
    backup = h.a.wait_backup(h.a.create_backup(inst["id"], "base")["id"])
    with h.container.uow() as uow:
        stored = uow.backups.find(backup["id"])
    assert stored is not None and stored.progress.started_at is not None
    began = stored.progress.started_at
    behind = timedelta(hours=1)  # the server's clock

    def batch(stored_at: timedelta, start: int) -> WalBatch:
        return WalBatch(
            str(uuid.uuid4()),
            h.a.project,
            inst["id"],
            "local",
            h.settings.default_container,
            start,
            start + 100,
            began + stored_at - behind - timedelta(seconds=10),
            began + stored_at - behind,
            began + stored_at,
        )

    before = batch(timedelta(seconds=-20), 0)  # wholly before the backup began
    spanning = batch(timedelta(seconds=5), 100)  # holds the backup's start
    newest = batch(timedelta(seconds=15), 200)
    with h.container.uow(write=True) as uow:
        for b in (before, spanning, newest):
            uow.pitr.add_batch(b)
        uow.commit()

    assert h.container.archiver.prune(inst["id"]) == 1
    with h.container.uow() as uow:
        kept = {b.id for b in uow.pitr.batches(inst["id"])}
    assert kept == {spanning.id, newest.id}

    # With no backup left, everything but the newest goes (archiving is still on).
    assert h.a.delete(f"/backups/{backup['id']}").status_code == 202
    wait_for(lambda: h.a.get(f"/backups/{backup['id']}").status_code == 404)
    assert h.container.archiver.prune(inst["id"]) == 1
    with h.container.uow() as uow:
        assert [b.id for b in uow.pitr.batches(inst["id"])] == [newest.id]
