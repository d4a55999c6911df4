"""Domain objects: plain dataclasses, no framework imports."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NewType

BackupId = NewType("BackupId", str)
InstanceId = NewType("InstanceId", str)
ProjectId = NewType("ProjectId", str)
JobId = NewType("JobId", str)


class BackupState(StrEnum):
    """Values are Trove's wire strings; DELETING is internal (such a backup is invisible)."""

    NEW = "NEW"
    BUILDING = "BUILDING"
    SAVING = "SAVING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DELETE_FAILED = "DELETE_FAILED"
    RESTORED = "RESTORED"
    DELETING = "DELETING"


RUNNING_STATES = frozenset({BackupState.NEW, BackupState.BUILDING, BackupState.SAVING})
RESTORABLE_STATES = frozenset({BackupState.COMPLETED, BackupState.RESTORED})


class InstanceStatus(StrEnum):
    BUILD = "BUILD"
    ACTIVE = "ACTIVE"
    ERROR = "ERROR"
    SHUTDOWN = "SHUTDOWN"
    DELETING = "DELETING"
    # Recreated by `strongroom catalog rebuild` from its backups' manifests: no server is
    # attached, so it cannot be backed up; its backups restore and it can be deleted.
    DETACHED = "DETACHED"


class InstanceKind(StrEnum):
    MANAGED = "managed"
    EXTERNAL = "external"


class JobKind(StrEnum):
    BACKUP = "backup"
    DELETE_BACKUP = "delete_backup"
    CREATE_INSTANCE = "create_instance"
    DELETE_INSTANCE = "delete_instance"
    VERIFY_BACKUP = "verify_backup"
    DRILL_BACKUP = "drill_backup"
    COPY_BACKUP = "copy_backup"
    DELETE_COPY = "delete_copy"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class RequestContext:
    project_id: ProjectId
    user_id: str
    roles: tuple[str, ...]
    # The cloud's admin, who sees every project: the policy's ``admin`` rule decides it when
    # the caller is authenticated (``Authorizer.caller``), so a policy file can narrow it.
    is_admin: bool = False


@dataclass(frozen=True)
class DatastoreVersion:
    id: str
    datastore_id: str
    datastore_name: str
    name: str
    active: bool = True


@dataclass(frozen=True)
class Datastore:
    id: str
    name: str
    default_version_id: str | None
    versions: tuple[DatastoreVersion, ...] = ()


@dataclass
class Progress:
    bytes_done: int = 0
    bytes_expected: int | None = None
    started_at: datetime | None = None
    updated_at: datetime | None = None


class VerifyStatus(StrEnum):
    RUNNING = "RUNNING"
    OK = "OK"
    CORRUPT = "CORRUPT"  # an object or manifest fails authentication or its checks
    MISSING = "MISSING"  # an object or manifest is not in the store
    ERROR = "ERROR"  # the check could not run (e.g. the store is unreachable)


@dataclass(frozen=True)
class Verification:
    status: VerifyStatus
    at: datetime  # when it was asked for (RUNNING) or finished
    error: str | None = None


class DrillStatus(StrEnum):
    RUNNING = "RUNNING"
    OK = "OK"  # restored into a throwaway instance, and the restored data checked out
    FAILED = "FAILED"


@dataclass(frozen=True)
class Drill:
    status: DrillStatus
    at: datetime
    error: str | None = None
    report: dict[str, Any] | None = None  # e.g. {"integrity_check": "ok", "rows": {...}}


class CopyState(StrEnum):
    COPYING = "COPYING"  # objects being copied, then read back
    COMPLETED = "COMPLETED"  # copied and verified: a restore may fall back to it
    FAILED = "FAILED"  # see ``error``; asking again replaces it
    DELETING = "DELETING"  # its objects are being removed (retention, or its backup went)


@dataclass
class BackupCopy:
    """A backup's objects, byte for byte, in another named store."""

    id: str
    backup_id: BackupId
    project_id: ProjectId
    store_name: str
    container: str
    state: CopyState
    created: datetime
    updated: datetime
    location_ref: str | None = None  # the copied manifest's URL, once written
    verified_at: datetime | None = None
    error: str | None = None


@dataclass
class Backup:
    id: BackupId
    project_id: ProjectId
    name: str
    description: str | None
    instance_id: InstanceId | None
    parent_id: BackupId | None
    state: BackupState
    created: datetime
    updated: datetime
    datastore_version_id: str | None = None
    size_gb: float | None = None
    location_ref: str | None = None
    store_name: str | None = None
    container: str | None = None
    fail_reason: str | None = None
    progress: Progress = field(default_factory=Progress)
    stored_bytes: int | None = None
    schedule_id: str | None = None  # the schedule that made it
    verification: Verification | None = None
    drill: Drill | None = None
    manifest_sha256: str | None = None  # restore_from: the manifest registered, pinned
    copies: list[BackupCopy] = field(default_factory=list)  # filled in for views only

    @property
    def is_running(self) -> bool:
        return self.state in RUNNING_STATES


@dataclass
class Instance:
    id: InstanceId
    project_id: ProjectId
    name: str
    kind: InstanceKind
    datastore_version_id: str
    status: InstanceStatus
    created: datetime
    updated: datetime
    flavor_id: str | None = None
    volume_size: int | None = None
    task: str | None = None  # e.g. "BUILDING", "DELETING"; None when idle
    restore_backup_id: BackupId | None = None
    fault: str | None = None
    host: str = "local"
    public_connection: dict[str, Any] | None = None
    external_identity: str | None = None  # SHA-256 of the registered database's identity


@dataclass(frozen=True)
class BackupStrategy:
    project_id: ProjectId
    instance_id: str  # "" for the project-wide strategy
    swift_container: str


@dataclass
class Job:
    id: JobId
    kind: JobKind
    target_id: str
    state: JobState
    created: datetime
    updated: datetime
    attempts: int = 0
    payload: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    route: str = "local"  # the queue: a worker host's id, or SHARED_ROUTE
    worker: str | None = None  # the host running it
    heartbeat: datetime | None = None


SHARED_ROUTE = "shared"


# The project recorded in the manifests of the service's own metadata backups: no tenant's
# request may register or restore them, whatever its project is called.
SERVICE_PROJECT = "strongroom-metadata"
