"""Which of a schedule's backups to keep: restic's ``forget`` policy, made chain-aware.

The selection is restic's (``ApplyPolicy``): backups newest first; ``keep_last`` keeps the
newest n; ``keep_hourly``/``daily``/``weekly``/``monthly``/``yearly`` keep the newest backup
of each of the last n hours/days/ISO weeks/months/years that have one (and, while a count
is left over, the oldest backup as well, so the history reaches as far back as the counts
allow); ``keep_within`` keeps everything made within that duration of the newest backup.
Buckets are read in the schedule's time zone.

Then the chain: a kept backup keeps every backup it is built on, and a backup that another
kept or running backup (of this schedule or not) is built on is kept, so a deletion never
cascades into something kept."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from strongroom.domain.model import RUNNING_STATES, Backup, BackupState
from strongroom.domain.schedules import Duration, RetentionPolicy


@dataclass(frozen=True)
class Decision:
    backup_id: str
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class RetentionPlan:
    keep: list[Decision]  # newest first
    delete: list[Decision]  # newest first: children before their parents


Bucketer = Callable[[datetime, int], object]

BUCKETS: tuple[tuple[str, Bucketer, str], ...] = (
    ("keep_last", lambda t, nr: nr, "last snapshot"),
    ("keep_hourly", lambda t, nr: (t.year, t.month, t.day, t.hour), "hourly snapshot"),
    ("keep_daily", lambda t, nr: (t.year, t.month, t.day), "daily snapshot"),
    ("keep_weekly", lambda t, nr: t.isocalendar()[:2], "weekly snapshot"),
    ("keep_monthly", lambda t, nr: (t.year, t.month), "monthly snapshot"),
    ("keep_yearly", lambda t, nr: t.year, "yearly snapshot"),
)


def subtract(moment: datetime, d: Duration) -> datetime:
    """``moment`` minus ``d`` as Go's ``AddDate(-y, -m, -d).Add(-h)``: an overflowing
    day of month rolls into the next month (March 31 minus a month is March 3). A duration
    reaching before year 1 (one stored before such were refused) gives the earliest time."""
    months = moment.year * 12 + (moment.month - 1) - d.years * 12 - d.months
    year, month = divmod(months, 12)
    try:
        first = moment.replace(year=year, month=month + 1, day=1)
        return first + timedelta(days=moment.day - 1 - d.days, hours=-d.hours)
    except (OverflowError, ValueError):
        return datetime.min.replace(tzinfo=moment.tzinfo)


def select_gfs(times: list[datetime], policy: RetentionPolicy, *, now: datetime) -> list[list[str]]:
    """For times sorted newest first (aware, in the schedule's zone), the reasons to keep
    each one (an empty list: not kept by the policy)."""
    reasons: list[list[str]] = [[] for _ in times]
    if not times:
        return reasons
    past = [t for t in times if t <= now]
    latest = max(past) if past else times[-1]
    cutoff = subtract(latest, policy.keep_within) if policy.keep_within else None
    counts = {name: getattr(policy, name) for name, _, _ in BUCKETS}
    last_seen: dict[str, object] = {}
    oldest = len(times) - 1
    for nr, moment in enumerate(times):
        if cutoff is not None and moment > cutoff:
            reasons[nr].append(f"within {policy.keep_within}")
        for name, bucket_of, reason in BUCKETS:
            if counts[name] <= 0:
                continue
            value = bucket_of(moment, nr)
            if value != last_seen.get(name) or nr == oldest:
                label = f"oldest {reason}" if value == last_seen.get(name) else reason
                last_seen[name] = value
                counts[name] -= 1
                reasons[nr].append(label)
    return reasons


def plan_retention(
    backups: Iterable[Backup],
    policy: RetentionPolicy,
    *,
    zone: tzinfo,
    now: datetime,
    dependents: Mapping[str, str] | None = None,
) -> RetentionPlan:
    """Keep and delete decisions for one schedule's ``backups`` (naive UTC times).

    ``dependents`` maps a backup of this schedule to a live backup outside the list that
    is built on it (e.g. an incremental made by hand): such a backup is kept.
    Only COMPLETED backups are selected by the policy; running ones are kept; FAILED ones
    older than the newest completed backup are deleted; others are left alone."""
    members = [b for b in backups if b.state is not BackupState.DELETING]
    by_id: dict[str, Backup] = {b.id: b for b in members}
    newest_first = sorted(members, key=lambda b: b.created, reverse=True)
    completed = [b for b in newest_first if b.state is BackupState.COMPLETED]
    keep: dict[str, list[str]] = {}
    if policy.empty:
        for b in completed:
            keep[b.id] = ["no retention policy"]
    else:
        local = [b.created.replace(tzinfo=UTC).astimezone(zone) for b in completed]
        chosen = select_gfs(local, policy, now=now.replace(tzinfo=UTC).astimezone(zone))
        for b, why in zip(completed, chosen, strict=True):
            if why:
                keep[b.id] = why
    for b in newest_first:
        if b.state in RUNNING_STATES:
            keep.setdefault(b.id, []).append("running")
    for parent_id, child_id in (dependents or {}).items():
        if parent_id in by_id:
            keep.setdefault(parent_id, []).append(f"parent of {child_id}")
    # A kept backup keeps its chain: follow parents until the full backup.
    for kept_id in list(keep):
        child = by_id[kept_id]
        while child.parent_id is not None and child.parent_id in by_id:
            parent = by_id[child.parent_id]
            reason = f"parent of {child.id}"
            if reason not in keep.setdefault(parent.id, []):
                keep[parent.id].append(reason)
            child = parent
    newest_completed = completed[0].created if completed else None
    delete: list[Decision] = []
    for b in newest_first:
        if b.id in keep:
            continue
        if b.state is BackupState.COMPLETED:
            delete.append(Decision(b.id, ("not selected by the retention policy",)))
        elif (
            b.state is BackupState.FAILED
            and newest_completed is not None
            and b.created < newest_completed
        ):
            delete.append(Decision(b.id, ("failed, and a later backup completed",)))
    kept = [Decision(b.id, tuple(keep[b.id])) for b in newest_first if b.id in keep]
    return RetentionPlan(keep=kept, delete=delete)
