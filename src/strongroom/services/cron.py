"""Cron expressions (croniter) evaluated in a schedule's time zone; times are naive UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from strongroom.domain.errors import BadRequestError

MAX_CRON = 255


def check_cron(expression: object, field: str = "cron") -> str:
    """Five standard fields, or six with seconds last (``* * * * * */10``: every 10 s)."""
    if not isinstance(expression, str) or len(expression) > MAX_CRON:
        raise BadRequestError(f"{field} must be a cron expression of 5 or 6 fields.")
    fields = expression.split()
    if len(fields) not in (5, 6) or not croniter.is_valid(expression):
        raise BadRequestError(
            f"{field} {expression!r} is not a cron expression of 5 fields "
            "(or 6, with seconds last)."
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
