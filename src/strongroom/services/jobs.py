"""Jobs are rows first, queue messages second: a job survives a lost message or a crash."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from strongroom.domain.model import Job, JobId, JobKind, JobState
from strongroom.domain.ports import Clock, JobQueue, UnitOfWork

log = logging.getLogger(__name__)


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
