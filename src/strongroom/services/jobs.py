"""Jobs are rows first, queue messages second: a job survives a lost message or a crash."""

from __future__ import annotations

import uuid
from typing import Any

from strongroom.domain.model import Job, JobId, JobKind, JobState
from strongroom.domain.ports import Clock, JobQueue, UnitOfWork


class JobDispatcher:
    def __init__(self, clock: Clock) -> None:
        self._clock = clock
        self._queue: JobQueue | None = None

    def attach(self, queue: JobQueue) -> None:
        self._queue = queue

    def record(
        self, uow: UnitOfWork, kind: JobKind, target_id: str, payload: dict[str, Any] | None = None
    ) -> JobId:
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
        )
        uow.jobs.add(job)
        return job.id

    def submit(self, job_id: JobId) -> None:
        """Hand a committed job to the queue."""
        if self._queue is None:
            raise RuntimeError("no job queue attached")
        self._queue.submit(job_id)
