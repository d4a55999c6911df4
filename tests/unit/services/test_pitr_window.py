from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from strongroom.domain.errors import BadRequestError
from strongroom.services.pitr import (
    BackupPoint,
    InvalidRestoreTimeError,
    OutsideWindowError,
    Span,
    base_backup_for,
    check_backup_reaches,
    check_restore_time,
    parse_restore_time,
    restorable_window,
)

T0 = datetime(2026, 12, 6, 10, 0, 0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-06T10:15:30Z", datetime(2026, 12, 6, 10, 15, 30)),
        ("2026-12-06T10:15:30.250Z", datetime(2026, 12, 6, 10, 15, 30, 250000)),
        ("2026-12-06T11:15:30+01:00", datetime(2026, 12, 6, 10, 15, 30)),
        ("2026-12-06T05:45:30.5-04:30", datetime(2026, 12, 6, 10, 15, 30, 500000)),
        ("2026-12-06T10:15:30", datetime(2026, 12, 6, 10, 15, 30)),
    ],
)
def test_restore_time_accepts_fractions_offsets_and_z(text: str, expected: datetime) -> None:
    assert parse_restore_time(text) == expected


@pytest.mark.parametrize(
    "text", ["", "yesterday", "2026-12-06", "2026-13-06T10:00:00Z", "10:15:30", "x" * 500]
)
def test_restore_time_refuses_anything_else_as_a_bad_request(text: str) -> None:
    with pytest.raises(InvalidRestoreTimeError) as caught:
        parse_restore_time(text)
    assert isinstance(caught.value, BadRequestError)
    assert len(str(caught.value)) < 200


def test_window_runs_from_the_oldest_covered_backup_to_the_newest_archived_commit() -> None:
    backups = [BackupPoint("b2", at(100)), BackupPoint("b1", at(10)), BackupPoint("old", at(-50))]
    window = restorable_window(backups, [Span(at(0), at(60)), Span(at(60), at(300))])
    assert window == [Span(at(10), at(300))]


def test_a_gap_splits_the_window_and_a_run_without_a_backup_restores_nothing() -> None:
    backups = [BackupPoint("a", at(10)), BackupPoint("b", at(500))]
    archived = [Span(at(0), at(100)), Span(at(200), at(300)), Span(at(450), at(600))]
    window = restorable_window(backups, archived)
    assert window == [Span(at(10), at(100)), Span(at(500), at(600))]
    check_restore_time(at(50), window)
    for outside in (at(5), at(150), at(250), at(499), at(601)):
        with pytest.raises(OutsideWindowError) as caught:
            check_restore_time(outside, window)
        assert "2026-12-06T10:00:10Z to 2026-12-06T10:01:40Z" in str(caught.value)
        assert caught.value.window == tuple(window)


def test_nothing_archived_means_nothing_restorable() -> None:
    window = restorable_window([BackupPoint("a", at(0))], [])
    assert window == []
    with pytest.raises(OutsideWindowError, match="nothing is restorable"):
        check_restore_time(at(0), window)


def test_instance_ref_picks_the_newest_backup_at_or_before_the_time_in_the_same_run() -> None:
    backups = [BackupPoint("a", at(10)), BackupPoint("b", at(80)), BackupPoint("c", at(500))]
    archived = [Span(at(0), at(100)), Span(at(450), at(600))]
    window = restorable_window(backups, archived)
    assert base_backup_for(at(79), backups, window).backup_id == "a"
    assert base_backup_for(at(80), backups, window).backup_id == "b"
    assert base_backup_for(at(599), backups, window).backup_id == "c"


def test_a_named_backup_must_precede_the_time_without_a_gap_between() -> None:
    backups = [BackupPoint("a", at(10)), BackupPoint("c", at(500))]
    window = restorable_window(backups, [Span(at(0), at(100)), Span(at(450), at(600))])
    check_backup_reaches(backups[0], at(90), window)
    with pytest.raises(OutsideWindowError):
        check_backup_reaches(backups[0], at(550), window)  # a gap lies between
    with pytest.raises(OutsideWindowError):
        check_backup_reaches(backups[1], at(90), window)  # the backup is after the time
