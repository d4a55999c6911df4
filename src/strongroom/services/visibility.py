"""What a request may see. Another project's instance or backup is "not found", never
"forbidden" (its existence does not leak), and a backup being deleted is gone already."""

from __future__ import annotations

from strongroom.domain.errors import ResourceNotFoundError
from strongroom.domain.model import Backup, BackupState, Instance, RequestContext
from strongroom.domain.ports import UnitOfWork


def sees(ctx: RequestContext, project_id: str) -> bool:
    """Whether ``ctx`` may see what belongs to ``project_id`` (admins see every project)."""
    return ctx.is_admin or project_id == ctx.project_id


def visible_instance(uow: UnitOfWork, ctx: RequestContext, instance_id: str) -> Instance:
    """The instance, or :class:`ResourceNotFoundError` when it is absent or not ``ctx``'s."""
    instance = uow.instances.find(instance_id)
    if instance is None or not sees(ctx, instance.project_id):
        raise ResourceNotFoundError(instance_id)
    return instance


def visible_backup(
    uow: UnitOfWork, ctx: RequestContext, backup_id: str, *, with_copies: bool = False
) -> Backup:
    """The backup (``with_copies``: and its copies, see ``attach_copies``), or
    :class:`ResourceNotFoundError` when it is absent, being deleted or not ``ctx``'s."""
    backups = uow.backups
    backup = backups.find_with_copies(backup_id) if with_copies else backups.find(backup_id)
    if backup is None or backup.state is BackupState.DELETING or not sees(ctx, backup.project_id):
        raise ResourceNotFoundError(backup_id)
    return backup
