from __future__ import annotations

from datetime import datetime, timedelta, timezone

from strongroom.engines.postgresql.recovery_target import (
    recovery_settings,
    render,
    target_time_literal,
)


def test_naive_and_offset_times_become_the_same_utc_literal() -> None:
    naive = datetime(2026, 12, 6, 10, 15, 30, 250000)
    offset = datetime(2026, 12, 6, 11, 15, 30, 250000, tzinfo=timezone(timedelta(hours=1)))
    assert target_time_literal(naive) == "2026-12-06 10:15:30.250000+00"
    assert target_time_literal(offset) == target_time_literal(naive)


def test_a_target_time_stops_inclusively_and_promotes() -> None:
    settings = recovery_settings(datetime(2026, 12, 6, 10, 15, 30))
    assert settings["recovery_target_time"] == "2026-12-06 10:15:30.000000+00"
    assert settings["recovery_target_inclusive"] == "on"
    assert settings["recovery_target_action"] == "promote"


def test_recovery_never_runs_a_command_to_fetch_wal() -> None:
    for when in (None, datetime(2026, 12, 6, 10, 15, 30)):
        assert recovery_settings(when)["restore_command"] == "false"
    assert "recovery_target_time" not in recovery_settings(None)


def test_rendered_settings_are_quoted_one_per_line() -> None:
    text = render(datetime(2026, 12, 6, 10, 15, 30))
    assert "recovery_target_time = '2026-12-06 10:15:30.000000+00'\n" in text
    assert "restore_command = 'false'\n" in text
