"""Copies of backups in other stores: rows ↔ domain objects."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from strongroom.domain.model import BackupCopy, BackupId, CopyState, ProjectId
from strongroom.persistence.tables import BackupCopyRow as Row


def _copy(row: Row) -> BackupCopy:
    return BackupCopy(
        id=row.id,
        backup_id=BackupId(row.backup_id),
        project_id=ProjectId(row.project_id),
        store_name=row.store_name,
        container=row.container,
        state=CopyState(row.state),
        created=row.created,
        updated=row.updated,
        location_ref=row.location_ref,
        verified_at=row.verified_at,
        error=row.error,
    )


def _values(c: BackupCopy) -> dict[str, object]:
    return {
        "backup_id": c.backup_id,
        "project_id": c.project_id,
        "store_name": c.store_name,
        "container": c.container,
        "state": c.state.value,
        "location_ref": c.location_ref,
        "verified_at": c.verified_at,
        "error": c.error,
        "created": c.created,
        "updated": c.updated,
    }


class SqlCopyRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, copy: BackupCopy) -> None:
        self._s.add(Row(id=copy.id, **_values(copy)))
        self._s.flush()

    def save(self, copy: BackupCopy) -> None:
        row = self._s.get(Row, copy.id)
        if row is None:
            return
        for name, value in _values(copy).items():
            setattr(row, name, value)
        self._s.flush()

    def find(self, copy_id: str) -> BackupCopy | None:
        row = self._s.get(Row, copy_id)
        return _copy(row) if row is not None else None

    def remove(self, copy_id: str) -> None:
        self._s.execute(delete(Row).where(Row.id == copy_id))

    def of_backups(self, backup_ids: Sequence[str]) -> list[BackupCopy]:
        if not backup_ids:
            return []
        stmt = (
            select(Row)
            .where(Row.backup_id.in_(list(backup_ids)))
            .order_by(Row.created, Row.store_name)
        )
        return [_copy(r) for r in self._s.execute(stmt).scalars()]

    def in_store(self, backup_id: str, store_name: str) -> BackupCopy | None:
        stmt = select(Row).where(Row.backup_id == backup_id, Row.store_name == store_name)
        row = self._s.execute(stmt).scalars().first()
        return _copy(row) if row is not None else None

    def every(self) -> list[BackupCopy]:
        return [_copy(r) for r in self._s.execute(select(Row).order_by(Row.created)).scalars()]
