"""The repository's answer to "which backup of this instance was last proven restorable":
the newest completed backup whose restore drill passed, on a real SQLite metadata
database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from strongroom.domain.model import (
    Backup,
    BackupId,
    BackupState,
    Drill,
    DrillStatus,
    InstanceId,
    ProjectId,
)
from strongroom.domain.ports import UnitOfWork
from strongroom.persistence import migrate
from strongroom.persistence.unit_of_work import SqlUnitOfWork, make_engine, unit_of_work_factory

T0 = datetime(2026, 1, 1, 12, 0, 0)


def uow_factory(tmp_path: Path) -> Callable[..., UnitOfWork]:
    engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    migrate.upgrade(engine)
    sessions = unit_of_work_factory(engine)
    return lambda **kw: SqlUnitOfWork(sessions, **kw)


def backup(
    bid: str, minutes: int, instance: str = "i", state: BackupState = BackupState.COMPLETED
) -> Backup:
    t = T0 + timedelta(minutes=minutes)
    return Backup(BackupId(bid), ProjectId("p"), bid, None, InstanceId(instance), None, state, t, t)


def test_the_newest_backup_whose_drill_passed_is_the_last_restorable(tmp_path: Path) -> None:
    uow = uow_factory(tmp_path)
    drills = {
        "old-ok": DrillStatus.OK,
        "ok": DrillStatus.OK,
        "newer-failed": DrillStatus.FAILED,
        "newest-running": DrillStatus.RUNNING,
        "other-instance-ok": DrillStatus.OK,
        "deleting-ok": DrillStatus.OK,
    }
    with uow(write=True) as u:
        assert u.backups.last_restorable("i") is None
        u.backups.add(backup("old-ok", 0))
        u.backups.add(backup("ok", 1))
        u.backups.add(backup("never-drilled", 2))
        u.backups.add(backup("newer-failed", 3))
        u.backups.add(backup("newest-running", 4))
        u.backups.add(backup("other-instance-ok", 5, instance="j"))
        u.backups.add(backup("deleting-ok", 6, state=BackupState.DELETING))
        for n, (bid, status) in enumerate(drills.items()):
            u.backups.record_drill(bid, Drill(status, T0 + timedelta(hours=1, minutes=n)))
        u.commit()
    with uow() as u:
        found = u.backups.last_restorable("i")
        assert found is not None and found.id == "ok"
        assert found.drill == Drill(DrillStatus.OK, T0 + timedelta(hours=1, minutes=1))
        other = u.backups.last_restorable("j")
        assert other is not None and other.id == "other-instance-ok"
        assert u.backups.last_restorable("nobody") is None
