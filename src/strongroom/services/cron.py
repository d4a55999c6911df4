"""Cron expressions (croniter) evaluated in a schedule's time zone; times are naive UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from strongroom.domain.errors import BadRequestError

MAX_CRON = 255
SECONDS = re.compile(r"[0-5]?[0-9]")  # one second of the minute, never a list or a step
# Seconds between a schedule's runs by default (setting schedule_min_interval).
MIN_INTERVAL = 60


def check_cron(expression: object, field: str = "cron", *, min_interval: int = MIN_INTERVAL) -> str:
    """Five standard fields, or six with seconds last (``0 3 * * * 30``: 03:00:30). With
    ``min_interval`` 60 or more, a schedule fires at most once a minute: the seconds field
    must be one number, as each run is a backup (and a drill a restore). Below 60 the
    seconds field is free (``* * * * * */2``); the gap a cron leaves between runs also
    depends on its other fields and the zone's clock changes, so it is not measured."""
    if not isinstance(expression, str) or len(expression) > MAX_CRON:
        raise BadRequestError(f"{field} must be a cron expression of 5 or 6 fields.")
    fields = expression.split()
    if len(fields) not in (5, 6) or not croniter.is_valid(expression):
        raise BadRequestError(
            f"{field} {expression!r} is not a cron expression of 5 fields "
            "(or 6, with seconds last)."
        )
    if len(fields) == 6 and min_interval >= 60 and not SECONDS.fullmatch(fields[5]):
        raise BadRequestError(
            f"{field} {expression!r} fires more often than once a minute: its seconds "
            "field (the sixth) must be one number from 0 to 59."
        )
    try:  # valid fields can still name no date at all (0 0 31 2 *)
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except (CroniterError, ValueError, OverflowError) as exc:
        raise BadRequestError(f"{field} {expression!r} never fires.") from exc
    return " ".join(fields)


def zone(name: object) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 64:
        raise BadRequestError("timezone must be an IANA time zone name such as UTC.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise BadRequestError(f"Unknown timezone {name!r}.") from exc


def next_after(expression: str, zone_name: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` (naive UTC) that ``expression`` names in the
    zone, as naive UTC. Read from ``now``, a schedule that missed ticks fires once."""
    local = after.replace(tzinfo=UTC).astimezone(zone(zone_name))
    following: datetime = croniter(expression, local).get_next(datetime)
    return following.astimezone(UTC).replace(tzinfo=None)
