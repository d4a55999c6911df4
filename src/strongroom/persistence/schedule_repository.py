"""Backup schedules: rows ↔ domain objects, and the claim of a due run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from strongroom.domain.model import Backup, BackupId, InstanceId, ProjectId
from strongroom.domain.schedules import RetentionPolicy, RunStatus, Schedule, ScheduleId
from strongroom.persistence.backup_repository import BACKUPS, _backup, _select_backups
from strongroom.persistence.tables import BackupScheduleRow as Row


def _schedule(row: Row) -> Schedule:
    return Schedule(
        id=ScheduleId(row.id),
        project_id=ProjectId(row.project_id),
        instance_id=InstanceId(row.instance_id),
        name=row.name,
        cron=row.cron,
        timezone=row.timezone,
        created=row.created,
        updated=row.updated,
        next_run_at=row.next_run_at,
        incremental=row.incremental,
        full_every=row.full_every,
        storage_driver=row.storage_driver,
        swift_container=row.swift_container,
        retention=RetentionPolicy.parse(row.retention or {}),
        verify=row.verify,
        drill_cron=row.drill_cron,
        user_id=row.user_id,
        roles=tuple(r for r in row.roles.split(",") if r),
        last_run_at=row.last_run_at,
        last_backup_id=BackupId(row.last_backup_id) if row.last_backup_id else None,
        last_status=RunStatus(row.last_status) if row.last_status else None,
        last_error=row.last_error,
        pending_backup_id=BackupId(row.pending_backup_id) if row.pending_backup_id else None,
        next_drill_at=row.next_drill_at,
        last_drill_at=row.last_drill_at,
        last_drill_backup_id=(
            BackupId(row.last_drill_backup_id) if row.last_drill_backup_id else None
        ),
        last_drill_error=row.last_drill_error,
        copy_to=dict(row.copy_to) if row.copy_to else None,
        copy_retention=RetentionPolicy.parse(row.copy_retention or {}),
    )


def _definition(s: Schedule) -> dict[str, Any]:
    """What a PUT replaces, whom its runs act as included (the run history is kept)."""
    return {
        **s.definition(),
        "user_id": s.user_id,
        "roles": ",".join(s.roles),
        "updated": s.updated,
        "next_run_at": s.next_run_at,
        "next_drill_at": s.next_drill_at,
    }


class SqlScheduleRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, s: Schedule) -> None:
        self._s.add(
            Row(
                id=s.id,
                project_id=s.project_id,
                created=s.created,
                **_definition(s),
            )
        )

    def replace(self, s: Schedule) -> None:
        self._s.execute(update(Row).where(Row.id == s.id).values(**_definition(s)))

    def find(self, schedule_id: str) -> Schedule | None:
        row = self._s.get(Row, schedule_id)
        return _schedule(row) if row is not None else None

    def remove(self, schedule_id: str) -> None:
        self._s.execute(delete(Row).where(Row.id == schedule_id))

    def due(self, now: datetime) -> list[Schedule]:
        stmt = select(Row).where(Row.next_run_at <= now).order_by(Row.next_run_at)
        return [_schedule(r) for r in self._s.execute(stmt).scalars()]

    def claim(self, schedule_id: str, expected: datetime, following: datetime) -> bool:
        """Move a due run on to ``following`` if nobody did since it was read as
        ``expected``: of several processes only the one whose UPDATE matches runs it."""
        result = self._s.execute(
            update(Row)
            .where(Row.id == schedule_id, Row.next_run_at == expected)
            .values(next_run_at=following)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def due_drills(self, now: datetime) -> list[Schedule]:
        stmt = select(Row).where(Row.next_drill_at <= now).order_by(Row.next_drill_at)
        return [_schedule(r) for r in self._s.execute(stmt).scalars()]

    def claim_drill(self, schedule_id: str, expected: datetime, following: datetime) -> bool:
        """As ``claim``, for the schedule's restore drills."""
        result = self._s.execute(
            update(Row)
            .where(Row.id == schedule_id, Row.next_drill_at == expected)
            .values(next_drill_at=following)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def record_run(
        self,
        schedule_id: str,
        *,
        at: datetime,
        backup_id: str | None,
        status: RunStatus,
        error: str | None,
    ) -> None:
        values: dict[str, Any] = {
            "last_run_at": at,
            "last_status": status.value,
            "last_error": error,
        }
        if backup_id is not None:
            values["last_backup_id"] = backup_id
            values["pending_backup_id"] = backup_id
        self._s.execute(update(Row).where(Row.id == schedule_id).values(**values))

    def record_drill(
        self, schedule_id: str, *, at: datetime, backup_id: str, error: str | None
    ) -> None:
        """The drill the schedule asked for at ``at``: started, or skipped for ``error``."""
        values = {"last_drill_at": at, "last_drill_backup_id": backup_id, "last_drill_error": error}
        self._s.execute(update(Row).where(Row.id == schedule_id).values(**values))

    def with_pending(self) -> list[Schedule]:
        stmt = select(Row).where(Row.pending_backup_id.is_not(None))
        return [_schedule(r) for r in self._s.execute(stmt).scalars()]

    def take_pending(
        self, schedule_id: str, backup_id: str, status: RunStatus, error: str | None
    ) -> bool:
        """Mark a finished run handled, once: the winner applies retention and verify."""
        values: dict[str, Any] = {"pending_backup_id": None}
        result = self._s.execute(
            update(Row)
            .where(Row.id == schedule_id, Row.pending_backup_id == backup_id)
            .values(**values)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return False
        self._s.execute(
            update(Row)
            .where(Row.id == schedule_id, Row.last_backup_id == backup_id)
            .values(last_status=status.value, last_error=error)
        )
        return True

    def backups_of(self, schedule_id: str) -> list[Backup]:
        stmt = _select_backups().where(BACKUPS.c.schedule_id == schedule_id)
        return [_backup(r) for r in self._s.execute(stmt)]

    # Last: below it, ``list`` in annotations would name this method.
    def list(self, project_id: str | None, instance_id: str | None) -> list[Schedule]:
        stmt = select(Row)
        if project_id is not None:
            stmt = stmt.where(Row.project_id == project_id)
        if instance_id is not None:
            stmt = stmt.where(Row.instance_id == instance_id)
        stmt = stmt.order_by(Row.created, Row.id)
        return [_schedule(r) for r in self._s.execute(stmt).scalars()]
