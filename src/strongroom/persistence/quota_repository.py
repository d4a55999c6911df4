"""SQL repository of quota usage and limits. It never commits; the unit of work does."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.dialects import mysql, postgresql, sqlite
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
        the quota check. The row is created first if missing, by an insert that lets a
        concurrent one win: locking a missing row first locks the gap where it goes on
        MariaDB, and two transactions that both hold that gap deadlock when both insert."""
        self._insert_if_missing(project_id, resource)
        stmt = (
            select(QuotaUsageRow)
            .where(QuotaUsageRow.project_id == project_id, QuotaUsageRow.resource == resource)
            .with_for_update()
        )
        return self._s.execute(stmt).scalar_one().in_use

    def _insert_if_missing(self, project_id: str, resource: str) -> None:
        values = {"project_id": project_id, "resource": resource, "in_use": 0}
        dialect = self._s.get_bind().dialect.name
        if dialect in ("mysql", "mariadb"):
            # Not INSERT IGNORE: on a duplicate it takes a shared lock, and two waiting
            # inserts that both get it deadlock when both then lock the row for update;
            # ON DUPLICATE KEY UPDATE (a no-op here) takes the exclusive lock at once.
            upsert = mysql.insert(QuotaUsageRow).values(values)
            self._s.execute(upsert.on_duplicate_key_update(in_use=QuotaUsageRow.in_use))
        elif dialect == "postgresql":
            self._s.execute(
                postgresql.insert(QuotaUsageRow).values(values).on_conflict_do_nothing()
            )
        else:
            self._s.execute(sqlite.insert(QuotaUsageRow).values(values).on_conflict_do_nothing())

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
