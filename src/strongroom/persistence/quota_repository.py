"""SQL repository of quota usage and limits. It never commits; the unit of work does."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from strongroom.persistence.tables import ProjectQuotaRow, QuotaUsageRow


class SqlQuotaRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def in_use(self, project_id: str, resource: str) -> int:
        row = self._s.get(QuotaUsageRow, (project_id, resource))
        return row.in_use if row is not None else 0

    def lock_in_use(self, project_id: str, resource: str) -> int:
        """Usage with its row locked until commit, so concurrent creates cannot both pass
        the quota check. The row is created first if missing."""
        stmt = (
            select(QuotaUsageRow)
            .where(QuotaUsageRow.project_id == project_id, QuotaUsageRow.resource == resource)
            .with_for_update()
        )
        row = self._s.execute(stmt).scalar_one_or_none()
        if row is None:
            try:
                with self._s.begin_nested():
                    self._s.add(QuotaUsageRow(project_id=project_id, resource=resource, in_use=0))
            except IntegrityError:
                pass  # another transaction created it: lock theirs
            row = self._s.execute(stmt).scalar_one()
        return row.in_use

    def set_in_use(self, project_id: str, resource: str, value: int) -> None:
        row = self._s.get(QuotaUsageRow, (project_id, resource))
        if row is None:
            self._s.add(QuotaUsageRow(project_id=project_id, resource=resource, in_use=value))
        else:
            row.in_use = value

    def limits(self, project_id: str) -> dict[str, int]:
        """The project's own limits (resources without one use the configured default)."""
        rows = self._s.scalars(
            select(ProjectQuotaRow).where(ProjectQuotaRow.project_id == project_id)
        )
        return {row.resource: row.hard_limit for row in rows}

    def set_limit(self, project_id: str, resource: str, limit: int) -> None:
        row = self._s.get(ProjectQuotaRow, (project_id, resource))
        if row is None:
            self._s.add(ProjectQuotaRow(project_id=project_id, resource=resource, hard_limit=limit))
        else:
            row.hard_limit = limit
