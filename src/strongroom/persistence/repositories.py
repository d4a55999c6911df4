"""SQL repositories: rows ↔ domain objects. They never commit; the unit of work does."""

from __future__ import annotations

import builtins
import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, Select, bindparam, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from strongroom.domain.model import (
    Backup,
    BackupId,
    BackupState,
    BackupStrategy,
    Datastore,
    DatastoreVersion,
    Drill,
    DrillStatus,
    Instance,
    InstanceId,
    InstanceKind,
    InstanceStatus,
    Job,
    JobId,
    JobKind,
    JobState,
    Progress,
    ProjectId,
    Verification,
    VerifyStatus,
)
from strongroom.domain.ports import BackupQuery, TokenRecord
from strongroom.persistence.tables import (
    BackupRow,
    BackupStrategyRow,
    DatastoreRow,
    DatastoreVersionRow,
    InstanceRow,
    JobRow,
    ProjectQuotaRow,
    QuotaUsageRow,
    TokenRow,
    WorkerRow,
)

RUNNING = [BackupState.NEW.value, BackupState.BUILDING.value, BackupState.SAVING.value]


# Backup reads select these columns, in this order, and unpack each row by position: a
# list page maps plain rows into domain objects, without building tracked ORM instances
# or looking each column up by name (together four times the cost). Table columns, not
# ORM attributes, so these statements skip the ORM's compile and loading steps.
BACKUPS = BackupRow.__table__
BACKUP_COLUMNS = (
    BACKUPS.c.id,
    BACKUPS.c.project_id,
    BACKUPS.c.name,
    BACKUPS.c.description,
    BACKUPS.c.instance_id,
    BACKUPS.c.parent_id,
    BACKUPS.c.state,
    BACKUPS.c.created,
    BACKUPS.c.updated,
    BACKUPS.c.datastore_version_id,
    BACKUPS.c.size_gb,
    BACKUPS.c.location_ref,
    BACKUPS.c.store_name,
    BACKUPS.c.container,
    BACKUPS.c.fail_reason,
    BACKUPS.c.progress_done,
    BACKUPS.c.progress_expected,
    BACKUPS.c.progress_started,
    BACKUPS.c.progress_updated,
    BACKUPS.c.stored_bytes,
    BACKUPS.c.schedule_id,
    BACKUPS.c.verify_status,
    BACKUPS.c.verified_at,
    BACKUPS.c.verify_error,
    BACKUPS.c.drill_status,
    BACKUPS.c.drilled_at,
    BACKUPS.c.drill_error,
    BACKUPS.c.drill_report,
    BACKUPS.c.manifest_sha256,
)


def _select_backups() -> Select[Any]:
    return select(*BACKUP_COLUMNS)


@functools.cache
def _backup_by_id() -> Select[Any]:
    return _select_backups().where(BACKUPS.c.id == bindparam("id"))


@functools.cache
def _backup_page(
    *, project: bool, instance: bool, versions: bool, states: bool, limited: bool
) -> Select[Any]:
    """The list query for one combination of filters, built once with its values bound at
    execution: building it and its cache key anew took half the time of a page."""
    c = BACKUPS.c
    stmt = _select_backups().where(c.state != BackupState.DELETING.value)
    if project:
        stmt = stmt.where(c.project_id == bindparam("project_id"))
    if instance:
        stmt = stmt.where(c.instance_id == bindparam("instance_id"))
    if versions:
        stmt = stmt.where(c.datastore_version_id.in_(bindparam("version_ids", expanding=True)))
    if states:
        stmt = stmt.where(c.state.in_(bindparam("states", expanding=True)))
    stmt = stmt.order_by(c.updated.desc(), c.created.desc(), c.id.desc())
    stmt = stmt.offset(bindparam("offset"))
    return stmt.limit(bindparam("limit")) if limited else stmt


def _backup(row: Row[Any]) -> Backup:
    (
        backup_id,
        project_id,
        name,
        description,
        instance_id,
        parent_id,
        state,
        created,
        updated,
        datastore_version_id,
        size_gb,
        location_ref,
        store_name,
        container,
        fail_reason,
        progress_done,
        progress_expected,
        progress_started,
        progress_updated,
        stored_bytes,
        schedule_id,
        verify_status,
        verified_at,
        verify_error,
        drill_status,
        drilled_at,
        drill_error,
        drill_report,
        manifest_sha256,
    ) = tuple(row)
    return Backup(
        id=BackupId(backup_id),
        project_id=ProjectId(project_id),
        name=name,
        description=description,
        instance_id=InstanceId(instance_id) if instance_id else None,
        parent_id=BackupId(parent_id) if parent_id else None,
        state=BackupState(state),
        created=created,
        updated=updated,
        datastore_version_id=datastore_version_id,
        size_gb=size_gb,
        location_ref=location_ref,
        store_name=store_name,
        container=container,
        fail_reason=fail_reason,
        progress=Progress(
            bytes_done=progress_done or 0,
            bytes_expected=progress_expected,
            started_at=progress_started,
            updated_at=progress_updated,
        ),
        stored_bytes=stored_bytes,
        schedule_id=schedule_id,
        verification=Verification(VerifyStatus(verify_status), verified_at, verify_error)
        if verify_status
        else None,
        drill=Drill(DrillStatus(drill_status), drilled_at, drill_error, drill_report)
        if drill_status
        else None,
        manifest_sha256=manifest_sha256,
    )


def _backup_values(b: Backup) -> dict[str, object]:
    return {
        "id": b.id,
        "project_id": b.project_id,
        "name": b.name,
        "description": b.description,
        "instance_id": b.instance_id,
        "parent_id": b.parent_id,
        "state": b.state.value,
        "created": b.created,
        "updated": b.updated,
        "datastore_version_id": b.datastore_version_id,
        "size_gb": b.size_gb,
        "location_ref": b.location_ref,
        "store_name": b.store_name,
        "container": b.container,
        "fail_reason": b.fail_reason,
        "progress_done": b.progress.bytes_done,
        "progress_expected": b.progress.bytes_expected,
        "progress_started": b.progress.started_at,
        "progress_updated": b.progress.updated_at,
        "stored_bytes": b.stored_bytes,
        # Verification columns are written only by ``record_verification``: a backup saved
        # from an older read must not undo a verification that finished meanwhile.
        "schedule_id": b.schedule_id,
        "manifest_sha256": b.manifest_sha256,
    }


class SqlBackupRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, backup: Backup) -> None:
        self._s.add(BackupRow(**_backup_values(backup)))

    def save(self, backup: Backup) -> None:
        row = self._s.get(BackupRow, backup.id)
        if row is None:
            self.add(backup)
            return
        for key, value in _backup_values(backup).items():
            setattr(row, key, value)

    def find(self, backup_id: str) -> Backup | None:
        row = self._s.execute(_backup_by_id(), {"id": backup_id}).first()
        return _backup(row) if row is not None else None

    def find_for_update(self, backup_id: str) -> Backup | None:
        row = self._s.execute(
            _select_backups().where(BACKUPS.c.id == backup_id).with_for_update()
        ).first()
        return _backup(row) if row is not None else None

    def remove(self, backup_id: str) -> None:
        self._s.execute(delete(BackupRow).where(BackupRow.id == backup_id))

    def query(self, q: BackupQuery) -> list[Backup]:
        stmt = _backup_page(
            project=q.project_id is not None,
            instance=q.instance_id is not None,
            versions=q.datastore_version_ids is not None,
            states=q.states is not None,
            limited=q.limit is not None,
        )
        params = {
            "project_id": q.project_id,
            "instance_id": q.instance_id,
            "version_ids": q.datastore_version_ids,
            "states": [s.value for s in q.states] if q.states is not None else None,
            "offset": q.offset,
            "limit": q.limit,
        }
        return [_backup(r) for r in self._s.execute(stmt, params)]

    def children(self, backup_id: str) -> list[Backup]:
        stmt = _select_backups().where(BACKUPS.c.parent_id == backup_id)
        return [_backup(r) for r in self._s.execute(stmt)]

    def running_for_instance(self, instance_id: str) -> list[Backup]:
        stmt = _select_backups().where(
            BACKUPS.c.instance_id == instance_id, BACKUPS.c.state.in_(RUNNING)
        )
        return [_backup(r) for r in self._s.execute(stmt)]

    def last_restorable(self, instance_id: str) -> Backup | None:
        """The newest completed backup of the instance whose restore drill passed."""
        stmt = (
            _select_backups()
            .where(
                BACKUPS.c.instance_id == instance_id,
                BACKUPS.c.state == BackupState.COMPLETED.value,
                BACKUPS.c.drill_status == DrillStatus.OK.value,
            )
            .order_by(BACKUPS.c.created.desc(), BACKUPS.c.id.desc())
            .limit(1)
        )
        row = self._s.execute(stmt).first()
        return _backup(row) if row is not None else None

    def in_states(self, states: Sequence[BackupState]) -> list[Backup]:
        stmt = _select_backups().where(BACKUPS.c.state.in_([s.value for s in states]))
        return [_backup(r) for r in self._s.execute(stmt)]

    def update_progress(self, backup_id: str, done: int, at: datetime) -> None:
        self._s.execute(
            update(BackupRow)
            .where(BackupRow.id == backup_id)
            .values(progress_done=done, progress_updated=at)
        )

    def record_drill(self, backup_id: str, drill: Drill) -> None:
        self._s.execute(
            update(BackupRow)
            .where(BackupRow.id == backup_id)
            .values(
                drill_status=drill.status.value,
                drilled_at=drill.at,
                drill_error=drill.error,
                drill_report=drill.report,
            )
        )

    def record_verification(self, backup_id: str, verification: Verification) -> None:
        self._s.execute(
            update(BackupRow)
            .where(BackupRow.id == backup_id)
            .values(
                verify_status=verification.status.value,
                verified_at=verification.at,
                verify_error=verification.error,
            )
        )


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


class SqlDatastoreRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def ensure(self, datastore: Datastore) -> None:
        row = self._s.get(DatastoreRow, datastore.id)
        if row is None:
            self._s.add(
                DatastoreRow(
                    id=datastore.id,
                    name=datastore.name,
                    default_version_id=datastore.default_version_id,
                )
            )
        else:
            row.default_version_id = datastore.default_version_id
        for version in datastore.versions:
            vrow = self._s.get(DatastoreVersionRow, version.id)
            if vrow is None:
                self._s.add(
                    DatastoreVersionRow(
                        id=version.id,
                        datastore_id=datastore.id,
                        name=version.name,
                        active=version.active,
                    )
                )
            else:
                vrow.active = version.active

    def deactivate_all(self) -> None:
        self._s.execute(update(DatastoreVersionRow).values(active=False))

    def all(self) -> list[Datastore]:
        rows = self._s.execute(select(DatastoreRow).order_by(DatastoreRow.name)).scalars().all()
        versions = self._s.execute(
            select(DatastoreVersionRow).order_by(DatastoreVersionRow.name)
        ).scalars()
        by_ds: dict[str, list[DatastoreVersion]] = {}
        names = {r.id: r.name for r in rows}
        for v in versions:
            by_ds.setdefault(v.datastore_id, []).append(
                DatastoreVersion(
                    v.id, v.datastore_id, names.get(v.datastore_id, ""), v.name, v.active
                )
            )
        return [
            Datastore(r.id, r.name, r.default_version_id, tuple(by_ds.get(r.id, []))) for r in rows
        ]


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


class SqlTokenRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def add(self, record: TokenRecord) -> None:
        self._s.add(
            TokenRow(
                id=record.id,
                token_hash=record.token_hash,
                project_id=record.project_id,
                user_id=record.user_id,
                roles=",".join(record.roles),
                created=record.created,
                revoked=record.revoked,
            )
        )

    def find_by_hash(self, token_hash: str) -> TokenRecord | None:
        row = self._s.execute(
            select(TokenRow).where(TokenRow.token_hash == token_hash)
        ).scalar_one_or_none()
        return _token(row) if row is not None else None

    def list(self) -> list[TokenRecord]:
        rows = self._s.execute(select(TokenRow).order_by(TokenRow.created)).scalars()
        return [_token(r) for r in rows]

    def revoke(self, token_id: str, at: datetime) -> bool:
        row = self._s.get(TokenRow, token_id)
        if row is None or row.revoked is not None:
            return False
        row.revoked = at
        return True

    def count(self) -> int:
        return int(self._s.execute(select(func.count()).select_from(TokenRow)).scalar_one())


def _token(row: TokenRow) -> TokenRecord:
    return TokenRecord(
        id=row.id,
        token_hash=row.token_hash,
        project_id=row.project_id,
        user_id=row.user_id,
        roles=tuple(r for r in row.roles.split(",") if r),
        created=row.created,
        revoked=row.revoked,
    )


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
