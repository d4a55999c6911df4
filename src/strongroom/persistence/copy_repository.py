"""Copies of backups in other stores: rows ↔ domain objects."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Select, bindparam, delete, select
from sqlalchemy.orm import Session

from strongroom.domain.model import BackupCopy, BackupId, CopyState, ProjectId
from strongroom.persistence import core_reads
from strongroom.persistence.tables import BackupCopyRow as Row

# The copies shown beside backups are read as plain rows of these columns, by a statement
# built once: as an ORM query built per call it cost twice the backup's own read.
COPIES = Row.__table__
COPY_COLUMNS = (
    COPIES.c.id,
    COPIES.c.backup_id,
    COPIES.c.project_id,
    COPIES.c.store_name,
    COPIES.c.container,
    COPIES.c.state,
    COPIES.c.created,
    COPIES.c.updated,
    COPIES.c.location_ref,
    COPIES.c.verified_at,
    COPIES.c.error,
)


@functools.cache
def _copies_of(*, one: bool) -> Select[Any]:
    c = COPIES.c
    where = (
        c.backup_id == bindparam("backup_id")
        if one
        else c.backup_id.in_(bindparam("backup_ids", expanding=True))
    )
    return select(*COPY_COLUMNS).where(where).order_by(c.created, c.store_name)


def copy_of_columns(row: Iterable[Any]) -> BackupCopy:
    (
        copy_id,
        backup_id,
        project_id,
        store_name,
        container,
        state,
        created,
        updated,
        location_ref,
        verified_at,
        error,
    ) = tuple(row)
    return BackupCopy(
        id=copy_id,
        backup_id=BackupId(backup_id),
        project_id=ProjectId(project_id),
        store_name=store_name,
        container=container,
        state=CopyState(state),
        created=created,
        updated=updated,
        location_ref=location_ref,
        verified_at=verified_at,
        error=error,
    )


def _copy(row: Row) -> BackupCopy:
    return copy_of_columns(getattr(row, column.key) for column in COPY_COLUMNS)


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
        params: dict[str, object]
        if len(backup_ids) == 1:  # a single backup's view: no list to expand
            stmt, params = _copies_of(one=True), {"backup_id": backup_ids[0]}
        else:
            stmt, params = _copies_of(one=False), {"backup_ids": list(backup_ids)}
        return [copy_of_columns(r) for r in core_reads.execute(self._s, stmt, params).all()]

    def in_store(self, backup_id: str, store_name: str) -> BackupCopy | None:
        stmt = select(Row).where(Row.backup_id == backup_id, Row.store_name == store_name)
        row = self._s.execute(stmt).scalars().first()
        return _copy(row) if row is not None else None

    def every(self) -> list[BackupCopy]:
        return [_copy(r) for r in self._s.execute(select(Row).order_by(Row.created)).scalars()]
