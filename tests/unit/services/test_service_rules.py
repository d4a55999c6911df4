"""The rules the create use cases apply, on in-memory ports: which limit a project gets,
when an instance is ready for a backup, which backup becomes an incremental's parent,
where a new instance is placed, how large a volume may be, which container names pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from strongroom.domain.errors import (
    BadRequestError,
    OverLimitError,
    ResourceNotFoundError,
    UnprocessableError,
)
from strongroom.domain.model import (
    Backup,
    BackupId,
    BackupState,
    InstanceId,
    InstanceStatus,
    ProjectId,
    RequestContext,
)
from strongroom.domain.ports import BackupQuery, UnitOfWork
from strongroom.services.backups import BackupService, check_container
from strongroom.services.commands import CreateBackup
from strongroom.services.instances import InstanceService
from strongroom.services.quotas import BACKUPS, INSTANCES, project_limit
from strongroom.services.rules import ServiceRules

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
ALICE = RequestContext(ProjectId("alice"), "u1", ("member",))
BOB = RequestContext(ProjectId("bob"), "u2", ("member",))
ADMIN = RequestContext(ProjectId("ops"), "root", ("admin",), is_admin=True)


# -- in-memory ports: only what these rules read ------------------------------------------
@dataclass
class Quotas:
    overrides: dict[str, dict[str, int]] = field(default_factory=dict)

    def limits(self, project_id: str) -> dict[str, int]:
        return dict(self.overrides.get(project_id, {}))


@dataclass
class Backups:
    rows: dict[str, Backup] = field(default_factory=dict)
    queries: list[BackupQuery] = field(default_factory=list)

    def find(self, backup_id: str) -> Backup | None:
        return self.rows.get(backup_id)

    def query(self, q: BackupQuery) -> list[Backup]:
        self.queries.append(q)
        found = [
            b
            for b in self.rows.values()
            if (q.project_id is None or b.project_id == q.project_id)
            and b.instance_id == q.instance_id
        ]
        found.sort(key=lambda b: b.updated, reverse=True)
        return found[q.offset : q.offset + (q.limit or len(found))]

    def running_for_instance(self, instance_id: str) -> list[Backup]:
        return [b for b in self.rows.values() if b.instance_id == instance_id and b.is_running]


@dataclass
class Workers:
    hosts: list[str] = field(default_factory=list)
    asked_since: list[datetime] = field(default_factory=list)

    def live(self, since: datetime) -> list[str]:
        self.asked_since.append(since)
        return list(self.hosts)


@dataclass
class Instances:
    by_host: dict[str, int] = field(default_factory=dict)

    def count_by_host(self) -> dict[str, int]:
        return dict(self.by_host)


@dataclass
class Uow:
    quotas: Quotas = field(default_factory=Quotas)
    backups: Backups = field(default_factory=Backups)
    workers: Workers = field(default_factory=Workers)
    instances: Instances = field(default_factory=Instances)


def _uow(**parts: Any) -> UnitOfWork:
    return cast(UnitOfWork, Uow(**parts))


def _backup(
    backup_id: str,
    *,
    project: str = "alice",
    instance: str = "i1",
    state: BackupState = BackupState.COMPLETED,
    age_minutes: int = 0,
) -> Backup:
    at = NOW - timedelta(minutes=age_minutes)
    return Backup(
        id=BackupId(backup_id),
        project_id=ProjectId(project),
        name=backup_id,
        description=None,
        instance_id=InstanceId(instance),
        parent_id=None,
        state=state,
        created=at,
        updated=at,
    )


class _Clock:
    def now(self) -> datetime:
        return NOW


def _backups(rules: ServiceRules | None = None) -> BackupService:
    unused: Any = None
    return BackupService(
        uow=unused,
        clock=_Clock(),
        authorizer=unused,
        catalog=unused,
        stores=unused,
        jobs=unused,
        rules=rules or ServiceRules(),
    )


def _instances(rules: ServiceRules) -> InstanceService:
    unused: Any = None
    return InstanceService(
        uow=unused,
        clock=_Clock(),
        authorizer=unused,
        catalog=unused,
        jobs=unused,
        secrets=unused,
        rules=rules,
    )


# -- quotas --------------------------------------------------------------------------------
def test_a_project_limit_is_its_override_else_the_default() -> None:
    rules = ServiceRules(backup_quota=50, instance_quota=20)
    quotas = Quotas({"alice": {BACKUPS: 3}})
    assert project_limit(quotas, rules, "alice", BACKUPS) == 3
    assert project_limit(quotas, rules, "alice", INSTANCES) == 20
    assert project_limit(quotas, rules, "bob", BACKUPS) == 50


# -- an instance ready for a backup ----------------------------------------------------------
def test_a_backup_needs_an_active_instance_with_no_task_and_no_running_backup() -> None:
    ready = _uow()
    BackupService._check_ready(ready, "i1", InstanceStatus.ACTIVE, None)
    with pytest.raises(UnprocessableError, match=r"task status was BUILDING"):
        BackupService._check_ready(ready, "i1", InstanceStatus.ACTIVE, "BUILDING")
    with pytest.raises(UnprocessableError, match=r"instance status was BUILD"):
        BackupService._check_ready(ready, "i1", InstanceStatus.BUILD, None)
    busy = _uow(backups=Backups({"b": _backup("b", state=BackupState.BUILDING)}))
    with pytest.raises(UnprocessableError, match=r"instance status was BACKUP"):
        BackupService._check_ready(busy, "i1", InstanceStatus.ACTIVE, None)
    # Another instance's running backup does not hold this one.
    BackupService._check_ready(busy, "i2", InstanceStatus.ACTIVE, None)


# -- an incremental's parent -------------------------------------------------------------------
def _parent(uow: UnitOfWork, ctx: RequestContext, **command: Any) -> str | None:
    service = _backups()
    return service._parent_for(uow, ctx, CreateBackup(name="n", **command), "i1", (0, None))


def test_an_explicit_parent_is_a_completed_backup_of_the_same_instance() -> None:
    uow = _uow(
        backups=Backups(
            {
                "done": _backup("done"),
                "failed": _backup("failed", state=BackupState.FAILED),
                "elsewhere": _backup("elsewhere", instance="i2"),
                "bobs": _backup("bobs", project="bob"),
            }
        )
    )
    assert _parent(uow, ALICE, parent_id="done") == "done"
    for refused in ("failed", "elsewhere"):
        with pytest.raises(BadRequestError, match="cannot be the parent"):
            _parent(uow, ALICE, parent_id=refused)
    with pytest.raises(ResourceNotFoundError):  # another project's: as if it did not exist
        _parent(uow, ALICE, parent_id="bobs")
    assert _parent(uow, ADMIN, parent_id="done") == "done"


def test_incremental_takes_the_newest_completed_backup_of_the_first_page() -> None:
    backups = Backups(
        {
            "old": _backup("old", age_minutes=30),
            "new": _backup("new", age_minutes=10),
            "running": _backup("running", state=BackupState.BUILDING, age_minutes=1),
            "bobs": _backup("bobs", project="bob", age_minutes=0),
        }
    )
    uow = _uow(backups=backups)
    assert _parent(uow, ALICE) is None  # not incremental: a full backup
    assert _parent(uow, ALICE, incremental=True) == "new"
    assert backups.queries[-1] == BackupQuery(
        project_id="alice", instance_id="i1", offset=0, limit=ServiceRules().page_size
    )
    assert _parent(uow, ADMIN, incremental=True) == "bobs"  # an admin sees every project
    assert _parent(_uow(), ALICE, incremental=True) is None  # nothing to build on: a full


# -- placement and volumes ---------------------------------------------------------------------
def test_a_new_instance_goes_to_the_live_host_with_fewest_instances() -> None:
    rules = ServiceRules(default_host="local", worker_lease=timedelta(seconds=60))
    service = _instances(rules)
    workers = Workers(["b", "a", "c"])
    uow = _uow(workers=workers, instances=Instances({"a": 2, "b": 1}))
    assert service._place(uow, None) == "c"  # none yet
    assert workers.asked_since == [NOW - timedelta(seconds=60)]
    uow = _uow(workers=Workers(["b", "a"]), instances=Instances({"a": 1, "b": 1}))
    assert service._place(uow, None) == "a"  # a tie goes by name
    assert service._place(_uow(), None) == "local"  # no live worker: the default host
    assert service._place(uow, "b") == "b"
    assert service._place(uow, "local") == "local"
    with pytest.raises(BadRequestError, match="not a live worker host"):
        service._place(uow, "gone")


def test_a_volume_is_at_most_the_configured_size() -> None:
    service = _instances(ServiceRules(max_volume_size=10))
    assert service._volume_size(None) is None
    assert service._volume_size(10) == 10
    with pytest.raises(OverLimitError, match="cannot exceed maximum of 10 GB"):
        service._volume_size(11)


# -- containers --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["database_backups", "db-backups.2026", "A1"])
def test_container_names_trove_accepts(name: str) -> None:
    check_container(name)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "with space"])
def test_container_names_refused(name: str) -> None:
    with pytest.raises(BadRequestError):
        check_container(name)


# -- failure reasons -------------------------------------------------------------------------
def test_a_failure_reason_names_its_kind_once_and_is_bounded() -> None:
    from strongroom.services.failure import MAX_REASON, describe_failure

    assert describe_failure(ValueError("bad input")) == "ValueError: bad input"
    assert describe_failure(ValueError("ValueError: said")) == "ValueError: said"
    assert describe_failure(KeyError()) == "KeyError"
    assert len(describe_failure(RuntimeError("x" * 10_000))) == MAX_REASON
