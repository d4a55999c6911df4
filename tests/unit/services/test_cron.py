"""Cron expressions in a schedule's zone, answered in naive UTC."""

from datetime import datetime

import pytest

from strongroom.domain.errors import BadRequestError
from strongroom.services.cron import check_cron, next_after, zone


def test_five_fields_in_the_schedules_zone_across_daylight_saving():
    # Paris moves to summer time on 2031-03-30: 03:00 local is 02:00 UTC before, 01:00 after.
    assert next_after("0 3 * * *", "Europe/Paris", datetime(2031, 3, 29, 0)) == datetime(
        2031, 3, 29, 2
    )
    assert next_after("0 3 * * *", "Europe/Paris", datetime(2031, 3, 30, 0)) == datetime(
        2031, 3, 30, 1
    )


def test_six_fields_take_seconds_last_and_the_next_time_is_strictly_later():
    start = datetime(2031, 1, 1, 0, 0, 10)
    assert next_after("* * * * * */10", "UTC", start) == datetime(2031, 1, 1, 0, 0, 20)
    assert next_after("*/5 * * * *", "UTC", datetime(2031, 1, 1, 0, 5)) == datetime(
        2031, 1, 1, 0, 10
    )


@pytest.mark.parametrize(
    "bad",
    ["", "* * * *", "* * * * * * *", "@hourly", "61 * * * *", "0 0 30 2 *", "x" * 300, 5, None],
)
def test_bad_expressions_are_refused(bad):
    with pytest.raises(BadRequestError):
        check_cron(bad)


@pytest.mark.parametrize("seconds", ["*", "*/2", "0,30", "0-59"])
def test_seconds_naming_more_than_one_second_need_a_shorter_minimum_interval(seconds):
    expression = f"* * * * * {seconds}"
    with pytest.raises(BadRequestError, match="once a minute"):
        check_cron(expression)
    with pytest.raises(BadRequestError, match="once a minute"):
        check_cron(expression, min_interval=3600)
    assert check_cron(expression, min_interval=59) == expression
    assert check_cron("0 3 * * * 30") == "0 3 * * * 30"


def test_expressions_are_normalised():
    assert check_cron("  0   3 * *  * ") == "0 3 * * *"


@pytest.mark.parametrize(
    "name", ["", "Nowhere/City", "../../etc/passwd", "/etc/localtime", "a\x00", 3]
)
def test_unknown_zones_are_refused(name):
    with pytest.raises(BadRequestError):
        zone(name)
