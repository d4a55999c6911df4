from datetime import datetime, timedelta

import pytest

from strongroom.domain.chains import choose_parent, plan_delete
from strongroom.domain.errors import BackupRunningError
from strongroom.domain.model import Backup, BackupId, BackupState, ProjectId

T0 = datetime(2026, 1, 1, 12, 0, 0)


def backup(bid: str, parent: str | None = None, state=BackupState.COMPLETED, minutes=0) -> Backup:
    t = T0 + timedelta(minutes=minutes)
    return Backup(
        id=BackupId(bid),
        project_id=ProjectId("p"),
        name=bid,
        description=None,
        instance_id=None,
        parent_id=BackupId(parent) if parent else None,
        state=state,
        created=t,
        updated=t,
    )


def test_choose_parent_takes_newest_completed_including_incrementals():
    full = backup("F", minutes=0)
    inc = backup("I1", parent="F", minutes=5)
    failed = backup("X", state=BackupState.FAILED, minutes=10)
    assert choose_parent([failed, inc, full]).id == "I1"


def test_choose_parent_none_without_completed():
    assert (
        choose_parent(
            [backup("X", state=BackupState.FAILED), backup("R", state=BackupState.RESTORED)]
        )
        is None
    )


def test_plan_delete_orders_descendants_first():
    a, b, c = backup("A"), backup("B", "A", minutes=1), backup("C", "B", minutes=2)
    d = backup("D", "A", minutes=3)
    plan = plan_delete(a, [b, c, d], now=T0 + timedelta(hours=1), running_expires=timedelta(days=3))
    ids = [x.id for x in plan]
    assert ids[-1] == "A"
    assert ids.index("C") < ids.index("B")
    assert set(ids) == {"A", "B", "C", "D"}


def test_plan_delete_refuses_running_child_and_names_it():
    a = backup("A")
    b = backup("B", "A", state=BackupState.BUILDING, minutes=1)
    with pytest.raises(
        BackupRunningError, match=r"Backup B cannot be deleted because it is running\."
    ):
        plan_delete(a, [b], now=T0 + timedelta(hours=1), running_expires=timedelta(days=3))


def test_plan_delete_allows_stale_running_backup():
    a = backup("A", state=BackupState.NEW)
    plan = plan_delete(a, [], now=T0 + timedelta(days=3), running_expires=timedelta(days=3))
    assert [x.id for x in plan] == ["A"]
