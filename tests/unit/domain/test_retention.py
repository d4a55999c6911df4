"""GFS selection against tables computed by hand (restic's forget rules), and the chain."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from strongroom.domain.errors import BadRequestError
from strongroom.domain.model import Backup, BackupId, BackupState, ProjectId
from strongroom.domain.retention import plan_retention, subtract
from strongroom.domain.schedules import Duration, RetentionPolicy

UTC = ZoneInfo("UTC")
NOW = datetime(2026, 6, 1)


def backup(
    bid: str, at: datetime, parent: str | None = None, state: BackupState = BackupState.COMPLETED
) -> Backup:
    return Backup(
        id=BackupId(bid),
        project_id=ProjectId("p"),
        name=bid,
        description=None,
        instance_id=None,
        parent_id=BackupId(parent) if parent else None,
        state=state,
        created=at,
        updated=at,
    )


def decisions(plan):
    return (
        {d.backup_id: list(d.reasons) for d in plan.keep},
        [d.backup_id for d in plan.delete],
    )


def test_daily_weekly_monthly_table_computed_by_hand():
    # ISO weeks of 2026: W02 = Jan 5-11, W05 = Jan 26 - Feb 1, W06 = Feb 2-8.
    backups = [
        backup("b1", datetime(2026, 1, 10, 3)),  # Sat, W02, January
        backup("b2", datetime(2026, 1, 31, 3)),  # Sat, W05, January
        backup("b3", datetime(2026, 2, 1, 3)),  # Sun, W05, February
        backup("b4", datetime(2026, 2, 2, 3)),  # Mon, W06
        backup("b5", datetime(2026, 2, 2, 15)),  # Mon, W06 (newer the same day)
        backup("b6", datetime(2026, 2, 3, 3)),  # Tue, W06
    ]
    policy = RetentionPolicy(keep_daily=3, keep_weekly=2, keep_monthly=2)
    keep, delete = decisions(plan_retention(backups, policy, zone=UTC, now=NOW))
    assert keep == {
        "b6": ["daily snapshot", "weekly snapshot", "monthly snapshot"],
        "b5": ["daily snapshot"],
        "b3": ["daily snapshot", "weekly snapshot"],
        "b2": ["monthly snapshot"],
    }
    assert delete == ["b4", "b1"]  # newest first


def test_a_count_left_over_keeps_the_oldest_backup_too():
    backups = [
        backup("d1", datetime(2026, 1, 1, 10)),
        backup("d1b", datetime(2026, 1, 1, 12)),
        backup("d2", datetime(2026, 1, 2, 10)),
    ]
    keep, delete = decisions(
        plan_retention(backups, RetentionPolicy(keep_daily=5), zone=UTC, now=NOW)
    )
    assert keep == {
        "d2": ["daily snapshot"],
        "d1b": ["daily snapshot"],
        "d1": ["oldest daily snapshot"],
    }
    assert delete == []


def test_keep_last_and_keep_within_count_from_the_newest_backup_not_from_now():
    t = datetime(2026, 3, 10, 12)
    backups = [
        backup("t", t),
        backup("t-12h", t - timedelta(hours=12)),
        backup("t-23h", t - timedelta(hours=23)),
        backup("t-25h", t - timedelta(hours=25)),
        backup("t-3d", t - timedelta(days=3)),
    ]
    policy = RetentionPolicy(keep_last=2, keep_within=Duration.parse("1d"))
    keep, delete = decisions(plan_retention(backups, policy, zone=UTC, now=t + timedelta(days=10)))
    assert keep == {
        "t": ["within 1d", "last snapshot"],
        "t-12h": ["within 1d", "last snapshot"],
        "t-23h": ["within 1d"],
    }
    assert delete == ["t-25h", "t-3d"]


def test_days_are_the_schedules_days_in_its_time_zone():
    backups = [
        backup("late", datetime(2026, 1, 1, 23, 30)),  # Jan 2, 00:30 in Paris
        backup("evening", datetime(2026, 1, 1, 22, 30)),  # Jan 1, 23:30 in Paris
        backup("morning", datetime(2026, 1, 1, 10)),
    ]
    policy = RetentionPolicy(keep_daily=2)
    in_utc, _ = decisions(plan_retention(backups, policy, zone=UTC, now=NOW))
    in_paris, _ = decisions(plan_retention(backups, policy, zone=ZoneInfo("Europe/Paris"), now=NOW))
    assert set(in_utc) == {"late", "morning"}  # one UTC day: the newest, then the oldest
    assert set(in_paris) == {"late", "evening"}


def test_a_kept_incremental_keeps_its_chain_and_deletion_goes_children_first():
    day = timedelta(days=1)
    t = datetime(2026, 4, 1)
    backups = [
        backup("F", t),
        backup("I1", t + day, parent="F"),
        backup("I2", t + 2 * day, parent="I1"),
        backup("F2", t + 3 * day),
        backup("I3", t + 4 * day, parent="F2"),
    ]
    keep, delete = decisions(
        plan_retention(backups, RetentionPolicy(keep_last=1), zone=UTC, now=NOW)
    )
    assert keep == {"I3": ["last snapshot"], "F2": ["parent of I3"]}
    assert delete == ["I2", "I1", "F"]
    keep, delete = decisions(
        plan_retention(backups, RetentionPolicy(keep_last=3), zone=UTC, now=NOW)
    )
    # I2 is kept by count: I1 and F stay because I2 is built on them.
    assert keep["I1"] == ["parent of I2"] and keep["F"] == ["parent of I1"]
    assert delete == []


def test_a_backup_built_on_by_something_else_or_running_is_never_deleted():
    day = timedelta(days=1)
    t = datetime(2026, 4, 1)
    backups = [
        backup("F", t),
        backup("I1", t + day, parent="F"),
        backup("F2", t + 2 * day),
        backup("R", t + 3 * day, parent="F2", state=BackupState.BUILDING),
        backup("F3", t + 4 * day),
    ]
    plan = plan_retention(
        backups,
        RetentionPolicy(keep_last=1),
        zone=UTC,
        now=NOW,
        dependents={"I1": "manual-child"},
    )
    keep, delete = decisions(plan)
    assert keep == {
        "F3": ["last snapshot"],
        "R": ["running"],
        "F2": ["parent of R"],
        "I1": ["parent of manual-child"],
        "F": ["parent of I1"],
    }
    assert delete == []


def test_failed_backups_go_once_a_later_backup_completed():
    t = datetime(2026, 4, 1)
    backups = [
        backup("old-fail", t, state=BackupState.FAILED),
        backup("ok", t + timedelta(hours=1)),
        backup("new-fail", t + timedelta(hours=2), state=BackupState.FAILED),
    ]
    keep, delete = decisions(
        plan_retention(backups, RetentionPolicy(keep_last=5), zone=UTC, now=NOW)
    )
    assert keep == {"ok": ["last snapshot"]}
    assert delete == ["old-fail"]  # the newest failure stays visible


def test_no_policy_keeps_everything():
    backups = [backup(f"b{i}", datetime(2026, 1, 1 + i)) for i in range(3)]
    keep, delete = decisions(plan_retention(backups, RetentionPolicy(), zone=UTC, now=NOW))
    assert set(keep) == {"b0", "b1", "b2"} and delete == []


def test_durations_and_calendar_subtraction():
    assert Duration.parse("1y6m2d3h") == Duration(1, 6, 2, 3)
    assert str(Duration.parse("36h")) == "36h"
    # As Go's AddDate: March 31 minus a month is "February 31", i.e. March 3 (2026).
    assert subtract(datetime(2026, 3, 31, 5), Duration(months=1)) == datetime(2026, 3, 3, 5)
    assert subtract(datetime(2026, 3, 1), Duration(days=1, hours=2)) == datetime(2026, 2, 27, 22)
    for bad in ("7", "d7", "7w", "-1d", "", "1d ", 7):
        with pytest.raises(BadRequestError):
            Duration.parse(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "spec",
    [
        {"keep_daily": -1},
        {"keep_forever": 1},
        {"keep_last": "3"},
        {"keep_last": True},
        {"keep_last": 1.5},
        {"keep_within": "soon"},
        {"keep_weekly": 10**9},
        [],
    ],
)
def test_bad_retention_is_refused(spec):
    with pytest.raises(BadRequestError):
        RetentionPolicy.parse(spec)
