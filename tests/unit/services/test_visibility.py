"""The visibility rule every use case applies: another project's instance or backup is
"not found" (the same answer as an id that does not exist), a backup being deleted is
gone for everyone, and an admin (as the policy decided when it was authenticated) sees
every project."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import pytest

from strongroom.domain.errors import ResourceNotFoundError
from strongroom.domain.model import (
    Backup,
    BackupId,
    BackupState,
    Instance,
    InstanceId,
    InstanceKind,
    InstanceStatus,
    ProjectId,
    RequestContext,
)
from strongroom.services.visibility import sees, visible_backup, visible_instance

T0 = datetime(2026, 1, 1)


@dataclass
class _Rows:
    rows: dict[str, Any] = field(default_factory=dict)

    def find(self, row_id: str) -> Any:
        return self.rows.get(row_id)


@dataclass
class _Uow:
    instances: _Rows = field(default_factory=_Rows)
    backups: _Rows = field(default_factory=_Rows)


def _ctx(project: str, *roles: str) -> RequestContext:
    return RequestContext(project_id=ProjectId(project), user_id="u", roles=roles or ("member",))


def _instance(instance_id: str, project: str) -> Instance:
    return Instance(
        id=InstanceId(instance_id),
        project_id=ProjectId(project),
        name="db",
        kind=InstanceKind.MANAGED,
        datastore_version_id="v",
        status=InstanceStatus.ACTIVE,
        created=T0,
        updated=T0,
    )


def _backup(backup_id: str, project: str, state: BackupState) -> Backup:
    return Backup(
        id=BackupId(backup_id),
        project_id=ProjectId(project),
        name="bk",
        description=None,
        instance_id=None,
        parent_id=None,
        state=state,
        created=T0,
        updated=T0,
    )


@pytest.fixture
def uow() -> _Uow:
    u = _Uow()
    u.instances.rows["i-a"] = _instance("i-a", "project-a")
    u.backups.rows["b-a"] = _backup("b-a", "project-a", BackupState.COMPLETED)
    u.backups.rows["b-gone"] = _backup("b-gone", "project-a", BackupState.DELETING)
    return u


def test_visibility_owner_sees_its_instance_and_backup(uow: _Uow) -> None:
    owner = _ctx("project-a")
    assert visible_instance(uow, owner, "i-a").id == "i-a"
    assert visible_backup(uow, owner, "b-a").id == "b-a"
    assert sees(owner, "project-a") and not sees(owner, "project-b")


def test_visibility_another_project_gets_not_found_as_for_a_missing_id(uow: _Uow) -> None:
    other = _ctx("project-b")
    with pytest.raises(ResourceNotFoundError) as crossed:
        visible_instance(uow, other, "i-a")
    with pytest.raises(ResourceNotFoundError) as missing:
        visible_instance(uow, other, "i-none")
    assert type(crossed.value) is type(missing.value)
    assert "project-a" not in str(crossed.value)
    with pytest.raises(ResourceNotFoundError):
        visible_backup(uow, other, "b-a")


def test_visibility_admin_sees_every_project_but_not_a_deleting_backup(uow: _Uow) -> None:
    admin = replace(_ctx("project-b", "admin"), is_admin=True)
    assert visible_instance(uow, admin, "i-a").project_id == "project-a"
    assert visible_backup(uow, admin, "b-a").project_id == "project-a"
    for ctx in (admin, _ctx("project-a")):
        with pytest.raises(ResourceNotFoundError):
            visible_backup(uow, ctx, "b-gone")


def test_visibility_the_admin_role_alone_does_not_cross_projects(uow: _Uow) -> None:
    """The policy's ``admin`` rule makes an admin (a policy file may narrow it), not the
    role's name: a context the authorizer did not make an admin sees its own project."""
    narrowed = _ctx("project-b", "admin", "member")
    assert not sees(narrowed, "project-a")
    with pytest.raises(ResourceNotFoundError):
        visible_instance(uow, narrowed, "i-a")
    with pytest.raises(ResourceNotFoundError):
        visible_backup(uow, narrowed, "b-a")
