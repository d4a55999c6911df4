"""SQLAlchemy 2 rows. Only persistence and migrations know these."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


# Microseconds everywhere: "most recently updated" must order within a second, and MySQL /
# MariaDB keep whole seconds unless asked.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
# Sizes: MySQL's FLOAT is single precision; elsewhere Float is already double.
SizeInGb = Float().with_variant(mysql.DOUBLE(), "mysql", "mariadb")


class BackupRow(Base):
    __tablename__ = "backups"
    # The list query's filters and order (read backwards): a page is never sorted.
    __table_args__ = (
        Index("ix_backups_project_order", "project_id", "updated", "created", "id"),
        Index("ix_backups_instance_order", "instance_id", "updated", "created", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(String(255))
    instance_id: Mapped[str | None] = mapped_column(String(36), index=True)
    parent_id: Mapped[str | None] = mapped_column(String(36), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    created: Mapped[datetime] = mapped_column(Timestamp)
    updated: Mapped[datetime] = mapped_column(Timestamp, index=True)
    datastore_version_id: Mapped[str | None] = mapped_column(String(36))
    size_gb: Mapped[float | None] = mapped_column(SizeInGb)
    location_ref: Mapped[str | None] = mapped_column(Text)
    store_name: Mapped[str | None] = mapped_column(String(64))
    container: Mapped[str | None] = mapped_column(String(255))
    fail_reason: Mapped[str | None] = mapped_column(Text)
    progress_done: Mapped[int] = mapped_column(BigInteger, default=0)
    progress_expected: Mapped[int | None] = mapped_column(BigInteger)
    progress_started: Mapped[datetime | None] = mapped_column(Timestamp)
    progress_updated: Mapped[datetime | None] = mapped_column(Timestamp)
    stored_bytes: Mapped[int | None] = mapped_column(BigInteger)
    schedule_id: Mapped[str | None] = mapped_column(String(36), index=True)
    verify_status: Mapped[str | None] = mapped_column(String(16))
    verified_at: Mapped[datetime | None] = mapped_column(Timestamp)
    verify_error: Mapped[str | None] = mapped_column(Text)
    drill_status: Mapped[str | None] = mapped_column(String(16))
    drilled_at: Mapped[datetime | None] = mapped_column(Timestamp)
    drill_error: Mapped[str | None] = mapped_column(Text)
    drill_report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # A restore_from registration: the SHA-256 of the manifest it was registered with.
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))


class BackupCopyRow(Base):
    """A backup's objects copied into another named store (one copy per store)."""

    __tablename__ = "backup_copies"
    __table_args__ = (
        UniqueConstraint("backup_id", "store_name", name="uq_backup_copies_backup_store"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    backup_id: Mapped[str] = mapped_column(String(36), index=True)
    project_id: Mapped[str] = mapped_column(String(64))
    store_name: Mapped[str] = mapped_column(String(64))
    container: Mapped[str] = mapped_column(String(255))
    state: Mapped[str] = mapped_column(String(16))
    location_ref: Mapped[str | None] = mapped_column(Text)
    verified_at: Mapped[datetime | None] = mapped_column(Timestamp)
    error: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(Timestamp)
    updated: Mapped[datetime] = mapped_column(Timestamp)


class InstanceRow(Base):
    __tablename__ = "instances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(255))
    kind: Mapped[str] = mapped_column(String(16))
    datastore_version_id: Mapped[str] = mapped_column(String(36))
    status: Mapped[str] = mapped_column(String(16))
    task: Mapped[str | None] = mapped_column(String(32))
    flavor_id: Mapped[str | None] = mapped_column(String(64))
    volume_size: Mapped[int | None] = mapped_column(BigInteger)
    restore_backup_id: Mapped[str | None] = mapped_column(String(36))
    fault: Mapped[str | None] = mapped_column(Text)
    host: Mapped[str] = mapped_column(String(255), default="local")
    connection_sealed: Mapped[str | None] = mapped_column(Text)
    # An external instance: SHA-256 of what makes it *this* database (engine-defined).
    external_identity: Mapped[str | None] = mapped_column(String(64), index=True)
    public_connection: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created: Mapped[datetime] = mapped_column(Timestamp)
    updated: Mapped[datetime] = mapped_column(Timestamp)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)


class BackupStrategyRow(Base):
    __tablename__ = "backup_strategies"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    instance_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    swift_container: Mapped[str] = mapped_column(String(255))


class DatastoreRow(Base):
    __tablename__ = "datastores"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    default_version_id: Mapped[str | None] = mapped_column(String(36))


class DatastoreVersionRow(Base):
    __tablename__ = "datastore_versions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    datastore_id: Mapped[str] = mapped_column(ForeignKey("datastores.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    active: Mapped[bool] = mapped_column(Boolean, default=True)


class QuotaUsageRow(Base):
    __tablename__ = "quota_usages"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    in_use: Mapped[int] = mapped_column(Integer, default=0)


class ProjectQuotaRow(Base):
    """An operator's limit for one project's resource, overriding the configured default."""

    __tablename__ = "project_quotas"

    project_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    resource: Mapped[str] = mapped_column(String(32), primary_key=True)
    hard_limit: Mapped[int] = mapped_column(Integer)


class TokenRow(Base):
    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    project_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(64))
    roles: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(Timestamp)
    revoked: Mapped[datetime | None] = mapped_column(Timestamp)


class JobRow(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    target_id: Mapped[str] = mapped_column(String(36), index=True)
    state: Mapped[str] = mapped_column(String(16), index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    error: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(Timestamp)
    updated: Mapped[datetime] = mapped_column(Timestamp)
    heartbeat: Mapped[datetime | None] = mapped_column(Timestamp)
    route: Mapped[str] = mapped_column(String(255), default="local")
    worker: Mapped[str | None] = mapped_column(String(255))


class WorkerRow(Base):
    """A worker host's heartbeat: placement of new instances picks among live ones."""

    __tablename__ = "workers"

    host_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_seen: Mapped[datetime] = mapped_column(Timestamp)


class BackupScheduleRow(Base):
    """A backup schedule; ``next_run_at`` is the claim: a run is taken by the one process
    whose conditional UPDATE moves it on."""

    __tablename__ = "backup_schedules"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64), index=True)
    instance_id: Mapped[str] = mapped_column(String(36), index=True)
    name: Mapped[str] = mapped_column(String(255))
    cron: Mapped[str] = mapped_column(String(255))
    timezone: Mapped[str] = mapped_column(String(64))
    incremental: Mapped[bool] = mapped_column(Boolean, default=False)
    full_every: Mapped[int] = mapped_column(Integer, default=7)
    storage_driver: Mapped[str | None] = mapped_column(String(64))
    swift_container: Mapped[str | None] = mapped_column(String(255))
    retention: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    verify: Mapped[bool] = mapped_column(Boolean, default=False)
    drill_cron: Mapped[str | None] = mapped_column(String(255))
    user_id: Mapped[str] = mapped_column(String(64))
    roles: Mapped[str] = mapped_column(String(255))
    created: Mapped[datetime] = mapped_column(Timestamp)
    updated: Mapped[datetime] = mapped_column(Timestamp)
    next_run_at: Mapped[datetime] = mapped_column(Timestamp, index=True)
    last_run_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_backup_id: Mapped[str | None] = mapped_column(String(36))
    last_status: Mapped[str | None] = mapped_column(String(16))
    last_error: Mapped[str | None] = mapped_column(Text)
    pending_backup_id: Mapped[str | None] = mapped_column(String(36), index=True)
    next_drill_at: Mapped[datetime | None] = mapped_column(Timestamp, index=True)
    # The last drill the schedule asked for: when, of which backup, and why it did not start.
    last_drill_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_drill_backup_id: Mapped[str | None] = mapped_column(String(36))
    last_drill_error: Mapped[str | None] = mapped_column(Text)
    # {"storage_driver", "swift_container"}: where each backup of the schedule is copied.
    copy_to: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    copy_retention: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class PitrPolicyRow(Base):
    """An instance's point-in-time archiving: on or off, where, and where to go on from."""

    __tablename__ = "pitr_policies"

    instance_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean)
    store_name: Mapped[str] = mapped_column(String(64))
    container: Mapped[str] = mapped_column(String(255))
    next_start: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[datetime | None] = mapped_column(Timestamp)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated: Mapped[datetime] = mapped_column(Timestamp)


class WalBatchRow(Base):
    """One archived log batch (its objects: ``<container>/<instance>/wal/<id>/``)."""

    __tablename__ = "wal_batches"
    __table_args__ = (Index("ix_wal_batches_instance_start", "instance_id", "start"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    project_id: Mapped[str] = mapped_column(String(64))
    instance_id: Mapped[str] = mapped_column(String(36))
    store_name: Mapped[str] = mapped_column(String(64))
    container: Mapped[str] = mapped_column(String(255))
    start: Mapped[int] = mapped_column(BigInteger)
    stop: Mapped[int] = mapped_column(BigInteger)
    archived_from: Mapped[datetime] = mapped_column(Timestamp)
    archived_through: Mapped[datetime] = mapped_column(Timestamp)
    created: Mapped[datetime] = mapped_column(Timestamp)
