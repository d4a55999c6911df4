"""SqlStatistics: the aggregate reads behind the service's metrics and readiness."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session, sessionmaker

from strongroom.domain.model import BackupState, JobState
from strongroom.domain.statistics import LastSuccess, ServiceStatistics
from strongroom.persistence.tables import (
    BackupRow,
    DatastoreRow,
    DatastoreVersionRow,
    InstanceRow,
    JobRow,
    WorkerRow,
)


class SqlStatistics:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def ping(self) -> None:
        with self._sessions() as session:
            session.execute(text("SELECT 1"))

    def read(self, *, live_since: datetime) -> ServiceStatistics:
        with self._sessions() as session:
            seen = {
                h: at for h, at in session.execute(select(WorkerRow.host_id, WorkerRow.last_seen))
            }
            return ServiceStatistics(
                backups=self._backups(session),
                last_success=self._last_success(session),
                jobs_running=self._jobs(session, JobState.RUNNING),
                jobs_queued=self._jobs(session, JobState.QUEUED),
                live_workers=sorted(h for h, at in seen.items() if at >= live_since),
                workers_seen=seen,
            )

    @staticmethod
    def _backups(session: Session) -> dict[tuple[str, str], int]:
        version = DatastoreVersionRow
        stmt = (
            select(BackupRow.state, DatastoreRow.name, func.count())
            .select_from(BackupRow)
            .outerjoin(version, version.id == BackupRow.datastore_version_id)
            .outerjoin(DatastoreRow, DatastoreRow.id == version.datastore_id)
            .where(BackupRow.state != BackupState.DELETING.value)
            .group_by(BackupRow.state, DatastoreRow.name)
        )
        return {(state, name or "unknown"): int(n) for state, name, n in session.execute(stmt)}

    @staticmethod
    def _last_success(session: Session) -> list[LastSuccess]:
        """Per live instance: its newest COMPLETED backup (a deleted instance has none)."""
        stmt = (
            select(InstanceRow.id, InstanceRow.project_id, func.max(BackupRow.updated))
            .join(BackupRow, BackupRow.instance_id == InstanceRow.id)
            .where(
                InstanceRow.deleted.is_(False),
                BackupRow.state == BackupState.COMPLETED.value,
            )
            .group_by(InstanceRow.id, InstanceRow.project_id)
        )
        return [LastSuccess(i, p, at) for i, p, at in session.execute(stmt)]

    @staticmethod
    def _jobs(session: Session, state: JobState) -> int:
        stmt = select(func.count()).select_from(JobRow).where(JobRow.state == state.value)
        return int(session.execute(stmt).scalar_one())
