"""Jobs are rows first, queue messages second: a job survives a lost message or a crash."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from strongroom.domain.errors import OverLimitError
from strongroom.domain.model import Job, JobId, JobKind, JobState
from strongroom.domain.ports import Clock, JobQueue, UnitOfWork

log = logging.getLogger(__name__)


def check_room(
    uow: UnitOfWork,
    kind: JobKind,
    project_id: str,
    most: int,
    *,
    project_of: Callable[[str], str | None],
    doing: str,
) -> None:
    """Refuse (413) a project's job of ``kind`` when it has ``most`` of them queued or
    running (``project_of``: the project of a job's target): they run on workers every
    project shares. The project's row of this kind is locked until commit, so two
    requests cannot both take the last place (as the backup quota's row does)."""
    uow.quotas.lock_in_use(project_id, kind.value)
    targets = {j.target_id for j in uow.jobs.unfinished() if j.kind is kind}
    busy = sum(1 for target in targets if project_of(target) == project_id)
    if busy >= most:
        raise OverLimitError(
            f"Project {project_id} has {busy} backup(s) being {doing} (queued or running); "
            f"at most {most} at a time: try again when it has finished."
        )


class JobDispatcher:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._queue: JobQueue | None = None

    def attach(self, queue: JobQueue) -> None:
        self._queue = queue

    def record(
        self,
        uow: UnitOfWork,
        kind: JobKind,
        target_id: str,
        payload: dict[str, Any] | None = None,
        *,
        route: str,
    ) -> Job:
        """Add the job row inside the caller's transaction."""
        now = self._clock.now()
        job = Job(
            id=JobId(str(uuid.uuid4())),
            kind=kind,
            target_id=target_id,
            state=JobState.QUEUED,
            created=now,
            updated=now,
            payload=payload or {},
            route=route,
        )
        uow.jobs.add(job)
        return job

    def submit(self, job: Job) -> None:
        """Hand a committed job to the queue. A queue that cannot take it now (broker down)
        is not the caller's failure: the row stays QUEUED and the reaper dispatches it
        again."""
        if self._queue is None:
            raise RuntimeError("no job queue attached")
        try:
            self._queue.submit(job.id, job.route)
        except Exception as exc:
            log.warning("job %s not dispatched yet (%s); it will be retried", job.id, exc)
