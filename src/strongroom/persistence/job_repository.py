"""SQL repositories of jobs and worker heartbeats. They never commit; the unit of work does."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from strongroom.domain.model import Job, JobId, JobKind, JobState
from strongroom.persistence.tables import JobRow, WorkerRow


def _job(row: JobRow) -> Job:
    return Job(
        id=JobId(row.id),
        kind=JobKind(row.kind),
        target_id=row.target_id,
        state=JobState(row.state),
        created=row.created,
        updated=row.updated,
        attempts=row.attempts,
        payload=dict(row.payload or {}),
        error=row.error,
        route=row.route,
        worker=row.worker,
        heartbeat=row.heartbeat,
    )


class SqlJobRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, job: Job) -> None:
        self._s.add(
            JobRow(
                id=job.id,
                kind=job.kind.value,
                target_id=job.target_id,
                state=job.state.value,
                attempts=job.attempts,
                payload=job.payload,
                error=job.error,
                created=job.created,
                updated=job.updated,
                route=job.route,
            )
        )

    def find(self, job_id: str) -> Job | None:
        row = self._s.get(JobRow, job_id)
        return _job(row) if row is not None else None

    def set_state(
        self, job_id: str, state: JobState, at: datetime, error: str | None = None
    ) -> None:
        """Finish a job (DONE or FAILED); running is entered only through ``claim``."""
        self._s.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(state=state.value, updated=at, error=error)
        )

    def unfinished(self) -> list[Job]:
        stmt = (
            select(JobRow)
            .where(JobRow.state.in_([JobState.QUEUED.value, JobState.RUNNING.value]))
            .order_by(JobRow.created)
        )
        return [_job(r) for r in self._s.execute(stmt).scalars()]

    def claim(self, job_id: str, worker: str, at: datetime) -> Job | None:
        """QUEUED → RUNNING for ``worker``, under a row lock: a message delivered twice
        runs once."""
        row = self._s.execute(
            select(JobRow).where(JobRow.id == job_id).with_for_update()
        ).scalar_one_or_none()
        if row is None or row.state != JobState.QUEUED.value:
            return None
        row.state = JobState.RUNNING.value
        row.attempts = (row.attempts or 0) + 1
        row.heartbeat = at
        row.updated = at
        row.worker = worker
        return _job(row)

    def beat(self, job_id: str, at: datetime) -> None:
        self._s.execute(update(JobRow).where(JobRow.id == job_id).values(heartbeat=at))

    def requeue(self, job_id: str, at: datetime) -> None:
        self._s.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(state=JobState.QUEUED.value, worker=None, updated=at, heartbeat=None)
        )

    def touch(self, job_id: str, at: datetime) -> None:
        self._s.execute(update(JobRow).where(JobRow.id == job_id).values(updated=at))

    def purge_finished(self, before: datetime, limit: int) -> int:
        """Delete at most ``limit`` finished jobs last changed before ``before``; returns
        how many."""
        finished = [JobState.DONE.value, JobState.FAILED.value]
        ids = list(
            self._s.execute(
                select(JobRow.id)
                .where(JobRow.state.in_(finished), JobRow.updated < before)
                .limit(limit)
            ).scalars()
        )
        if ids:
            self._s.execute(delete(JobRow).where(JobRow.id.in_(ids), JobRow.state.in_(finished)))
        return len(ids)

    def stale(self, state: JobState, before: datetime) -> list[Job]:
        """Jobs in ``state`` whose last sign of life is older than ``before``, locked so
        that two reapers never handle the same job (rows another reaper holds are skipped)."""
        last_seen = JobRow.heartbeat if state is JobState.RUNNING else JobRow.updated
        stmt = (
            select(JobRow)
            .where(JobRow.state == state.value, last_seen < before)
            .order_by(JobRow.created)
            .with_for_update(skip_locked=True)
        )
        return [_job(r) for r in self._s.execute(stmt).scalars()]


class SqlWorkerRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def beat(self, host_id: str, at: datetime) -> None:
        row = self._s.get(WorkerRow, host_id)
        if row is None:
            self._s.add(WorkerRow(host_id=host_id, last_seen=at))
        else:
            row.last_seen = at

    def live(self, since: datetime) -> list[str]:
        stmt = (
            select(WorkerRow.host_id)
            .where(WorkerRow.last_seen >= since)
            .order_by(WorkerRow.host_id)
        )
        return list(self._s.execute(stmt).scalars())
