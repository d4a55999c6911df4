"""SQL repositories of instances and their backup strategies.

They never commit; the unit of work does."""

from __future__ import annotations

import builtins

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from strongroom.domain.model import (
    BackupId,
    BackupStrategy,
    Instance,
    InstanceId,
    InstanceKind,
    InstanceStatus,
    ProjectId,
)
from strongroom.persistence.tables import BackupStrategyRow, InstanceRow


def _instance(row: InstanceRow) -> Instance:
    return Instance(
        id=InstanceId(row.id),
        project_id=ProjectId(row.project_id),
        name=row.name,
        kind=InstanceKind(row.kind),
        datastore_version_id=row.datastore_version_id,
        status=InstanceStatus(row.status),
        created=row.created,
        updated=row.updated,
        flavor_id=row.flavor_id,
        volume_size=row.volume_size,
        task=row.task,
        restore_backup_id=BackupId(row.restore_backup_id) if row.restore_backup_id else None,
        fault=row.fault,
        host=row.host,
        public_connection=row.public_connection,
        external_identity=row.external_identity,
    )


class SqlInstanceRepository:
    """Instances. The engine connection is stored sealed; sealing happens in services."""

    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, instance: Instance, sealed_connection: str | None) -> None:
        self._s.add(
            InstanceRow(
                id=instance.id,
                project_id=instance.project_id,
                name=instance.name,
                kind=instance.kind.value,
                datastore_version_id=instance.datastore_version_id,
                status=instance.status.value,
                task=instance.task,
                flavor_id=instance.flavor_id,
                volume_size=instance.volume_size,
                restore_backup_id=instance.restore_backup_id,
                fault=instance.fault,
                host=instance.host,
                connection_sealed=sealed_connection,
                public_connection=instance.public_connection,
                external_identity=instance.external_identity,
                created=instance.created,
                updated=instance.updated,
                deleted=False,
            )
        )

    def save(self, instance: Instance, sealed_connection: str | None = None) -> None:
        row = self._s.get(InstanceRow, instance.id)
        if row is None:
            raise KeyError(instance.id)
        row.name = instance.name
        row.status = instance.status.value
        row.task = instance.task
        row.fault = instance.fault
        row.updated = instance.updated
        row.public_connection = instance.public_connection
        if sealed_connection is not None:
            row.connection_sealed = sealed_connection

    def find(self, instance_id: str) -> Instance | None:
        row = self._s.get(InstanceRow, instance_id)
        if row is None or row.deleted:
            return None
        return _instance(row)

    def find_for_update(self, instance_id: str) -> Instance | None:
        """The instance, its row locked until commit: serialises backups of one instance
        across API processes (SQLite's write lock does the same in embedded mode)."""
        row = self._s.execute(
            select(InstanceRow).where(InstanceRow.id == instance_id).with_for_update()
        ).scalar_one_or_none()
        if row is None or row.deleted:
            return None
        return _instance(row)

    def count_by_host(self) -> dict[str, int]:
        stmt = (
            select(InstanceRow.host, func.count())
            .where(InstanceRow.deleted.is_(False))
            .group_by(InstanceRow.host)
        )
        return {host: int(n) for host, n in self._s.execute(stmt).all()}

    def sealed_connection(self, instance_id: str) -> str | None:
        row = self._s.get(InstanceRow, instance_id)
        return row.connection_sealed if row is not None else None

    def mark_deleted(self, instance_id: str) -> None:
        self._s.execute(
            update(InstanceRow)
            .where(InstanceRow.id == instance_id)
            .values(deleted=True, connection_sealed=None)
        )

    def list(self, project_id: str | None, offset: int, limit: int) -> list[Instance]:
        stmt = select(InstanceRow).where(InstanceRow.deleted.is_(False))
        if project_id is not None:
            stmt = stmt.where(InstanceRow.project_id == project_id)
        stmt = stmt.order_by(InstanceRow.created.desc(), InstanceRow.id).offset(offset).limit(limit)
        return [_instance(r) for r in self._s.execute(stmt).scalars()]

    def holding_external(self, identity: str) -> builtins.list[Instance]:
        """Live instances registered for the external database ``identity``."""
        stmt = select(InstanceRow).where(
            InstanceRow.external_identity == identity, InstanceRow.deleted.is_(False)
        )
        return [_instance(r) for r in self._s.execute(stmt).scalars()]

    def all_live(self) -> builtins.list[Instance]:
        stmt = select(InstanceRow).where(InstanceRow.deleted.is_(False))
        return [_instance(r) for r in self._s.execute(stmt).scalars()]

    def count(self, project_id: str) -> int:
        stmt = (
            select(func.count())
            .select_from(InstanceRow)
            .where(InstanceRow.project_id == project_id, InstanceRow.deleted.is_(False))
        )
        return int(self._s.execute(stmt).scalar_one())


class SqlStrategyRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def upsert(self, strategy: BackupStrategy) -> None:
        row = self._s.get(BackupStrategyRow, (strategy.project_id, strategy.instance_id))
        if row is None:
            self._s.add(
                BackupStrategyRow(
                    project_id=strategy.project_id,
                    instance_id=strategy.instance_id,
                    swift_container=strategy.swift_container,
                )
            )
        else:
            row.swift_container = strategy.swift_container

    def find(self, project_id: str, instance_id: str) -> BackupStrategy | None:
        row = self._s.get(BackupStrategyRow, (project_id, instance_id))
        if row is None:
            return None
        return BackupStrategy(ProjectId(row.project_id), row.instance_id, row.swift_container)

    def list(self, project_id: str, instance_id: str | None) -> list[BackupStrategy]:
        stmt = select(BackupStrategyRow).where(BackupStrategyRow.project_id == project_id)
        if instance_id is not None:
            stmt = stmt.where(BackupStrategyRow.instance_id == instance_id)
        stmt = stmt.order_by(BackupStrategyRow.instance_id)
        return [
            BackupStrategy(ProjectId(r.project_id), r.instance_id, r.swift_container)
            for r in self._s.execute(stmt).scalars()
        ]

    def remove(self, project_id: str, instance_id: str) -> None:
        self._s.execute(
            delete(BackupStrategyRow).where(
                BackupStrategyRow.project_id == project_id,
                BackupStrategyRow.instance_id == instance_id,
            )
        )
