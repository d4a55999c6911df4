"""What happens to a job whose worker stopped while running it: the one rule for a
restarted service and for the reaper of a dead worker's jobs."""

from __future__ import annotations

from enum import StrEnum

from strongroom.domain.model import JobKind


class AfterInterruption(StrEnum):
    RUN_AGAIN = "run_again"
    FAIL = "fail"


def after_interruption(kind: JobKind) -> AfterInterruption:
    """Deleting is idempotent (a missing object or row is success), and a verification or
    a drill only reads and starts over: run it again. A backup's stream cannot be resumed
    and a half-built instance cannot be trusted: the job fails, its backup or instance
    with it."""
    if kind in (
        JobKind.DELETE_BACKUP,
        JobKind.DELETE_INSTANCE,
        JobKind.VERIFY_BACKUP,
        JobKind.DRILL_BACKUP,
        JobKind.COPY_BACKUP,  # puts are idempotent: a copy starts over
        JobKind.DELETE_COPY,
    ):
        return AfterInterruption.RUN_AGAIN
    return AfterInterruption.FAIL
