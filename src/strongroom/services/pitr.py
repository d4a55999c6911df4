"""Point-in-time restore: the restorable window and the checks on a requested restore time.

Pure functions over what the catalog knows (completed backups and archived WAL spans), so the
API can refuse a restore time outside the window with a 400 before anything is queued.
Times are naive UTC, like the rest of the catalog.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from strongroom.domain.errors import BadRequestError


class InvalidRestoreTimeError(BadRequestError):
    """A restoreTime that is not an ISO 8601 date and time."""

    def __init__(self, text: str) -> None:
        super().__init__(
            f"restoreTime '{text[:64]}' is not an ISO 8601 date and time "
            "(for example 2026-12-06T10:15:30Z)."
        )


class OutsideWindowError(BadRequestError):
    """A restoreTime that no backup plus archived WAL can reach; the message lists the window."""

    def __init__(self, when: datetime, window: Sequence[Span]) -> None:
        self.window = tuple(window)
        ranges = ", ".join(f"{format_time(s.start)} to {format_time(s.end)}" for s in window)
        super().__init__(
            f"restoreTime {format_time(when)} is outside the restorable window"
            + (f" ({ranges})." if ranges else " (nothing is restorable yet).")
        )


@dataclass(frozen=True, slots=True)
class Span:
    """A closed interval of naive UTC times."""

    start: datetime
    end: datetime


@dataclass(frozen=True, slots=True)
class BackupPoint:
    """A completed backup: its id and the time its consistent state corresponds to."""

    backup_id: str
    consistent_at: datetime


def parse_restore_time(text: str) -> datetime:
    """ISO 8601 with optional fractions and offset; no offset or Z means UTC."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidRestoreTimeError(str(text))
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise InvalidRestoreTimeError(text) from None
    if "T" not in candidate.upper() and " " not in candidate:
        # A bare date is a day, not a second: refuse rather than guess midnight.
        raise InvalidRestoreTimeError(text)
    if parsed.tzinfo is not None:
        try:
            parsed = parsed.astimezone(UTC).replace(tzinfo=None)
        except (OverflowError, ValueError):  # 0001-01-01T00:00:00+01:00 is before year 1 in UTC
            raise BadRequestError(f"restoreTime '{text[:64]}' is out of range.") from None
    return parsed


def format_time(when: datetime) -> str:
    """UTC with ``Z``; fractions of a second only when there are some (a window's ends
    are shown exactly, so a time copied from them is inside)."""
    return when.isoformat() + "Z"


def merge_archived(spans: Iterable[Span]) -> list[Span]:
    """Archived WAL spans joined where they touch or overlap; a hole stays a gap."""
    merged: list[Span] = []
    for span in sorted(spans, key=lambda s: s.start):
        if merged and span.start <= merged[-1].end:
            last = merged[-1]
            merged[-1] = Span(last.start, max(last.end, span.end))
        else:
            merged.append(span)
    return merged


def restorable_window(backups: Iterable[BackupPoint], archived: Iterable[Span]) -> list[Span]:
    """Oldest first: each archived run starts at the oldest backup inside it and ends at its
    newest archived commit. A run with no backup in it restores nothing."""
    points = sorted(b.consistent_at for b in backups)
    window: list[Span] = []
    for run in merge_archived(archived):
        inside = [p for p in points if run.start <= p <= run.end]
        if inside:
            window.append(Span(inside[0], run.end))
    return window


def check_restore_time(when: datetime, window: Sequence[Span]) -> None:
    if not any(span.start <= when <= span.end for span in window):
        raise OutsideWindowError(when, window)


def base_backup_for(
    when: datetime, backups: Iterable[BackupPoint], window: Sequence[Span]
) -> BackupPoint:
    """The newest backup at or before `when` in the same unbroken run as `when`."""
    check_restore_time(when, window)
    span = next(s for s in window if s.start <= when <= s.end)
    candidates = [b for b in backups if span.start <= b.consistent_at <= when]
    return max(candidates, key=lambda b: b.consistent_at)


def check_backup_reaches(backup: BackupPoint, when: datetime, window: Sequence[Span]) -> None:
    """A named backup must be at or before `when`, with archived WAL unbroken between them."""
    check_restore_time(when, window)
    if not any(s.start <= backup.consistent_at <= when <= s.end for s in window):
        raise OutsideWindowError(when, window)
