"""Recovery settings for a restore to a point in time.

The archived segments are laid into ``pg_wal`` by the service before the server starts, so
``restore_command`` stays ``false``: recovery never runs a command that fetches files, and
nothing the restored server's OS user controls chooses what is replayed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from strongroom.engines.postgresql import cluster


def target_time_literal(when: datetime) -> str:
    """Naive times are UTC (the catalog's convention); PostgreSQL gets an explicit +00."""
    if when.tzinfo is not None:
        when = when.astimezone(UTC).replace(tzinfo=None)
    return when.isoformat(sep=" ", timespec="microseconds") + "+00"


def recovery_settings(when: datetime | None) -> dict[str, str]:
    """Replay to the end of the laid-out WAL, or stop after the last commit at or before
    `when` (inclusive), then promote onto a new timeline."""
    settings = {
        "restore_command": "false",
        "recovery_target_timeline": "current",
        "hot_standby": "off",
        "archive_mode": "off",
    }
    if when is not None:
        settings["recovery_target_time"] = target_time_literal(when)
        settings["recovery_target_inclusive"] = "on"
        settings["recovery_target_action"] = "promote"
    return settings


def render(when: datetime | None) -> str:
    return cluster.render_conf(recovery_settings(when))
