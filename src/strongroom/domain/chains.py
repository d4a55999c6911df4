"""Backup chains: parent choice for incrementals and cascade-delete order.

A restore follows the chain through the stored manifests (services.transfer.open_chain),
so it works for backups this service has no rows for."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from strongroom.domain.errors import BackupRunningError
from strongroom.domain.model import Backup, BackupState


def choose_parent(candidates: Sequence[Backup]) -> Backup | None:
    """The most recently updated COMPLETED backup (full or incremental), as Trove does.

    ``candidates`` is the first page of the instance's backups, newest ``updated`` first
    (the search deliberately looks at one page only)."""
    completed = [b for b in candidates if b.state is BackupState.COMPLETED]
    return max(completed, key=lambda b: b.updated, default=None)


def descendants_first(root: Backup, children_of: dict[str, list[Backup]]) -> list[Backup]:
    """``root`` and all its descendants, each child before its parent (depth first)."""
    ordered: list[Backup] = []

    def visit(node: Backup) -> None:
        for child in sorted(children_of.get(node.id, []), key=lambda b: b.created):
            visit(child)
        ordered.append(node)

    visit(root)
    return ordered


def plan_delete(
    root: Backup,
    family: Iterable[Backup],
    *,
    now: datetime,
    running_expires: timedelta,
) -> list[Backup]:
    """Backups to delete, descendants first. Raises ``BackupRunningError`` naming the
    first running backup (possibly a child) younger than ``running_expires``, before
    anything is touched."""
    children_of: dict[str, list[Backup]] = {}
    for backup in family:
        if backup.parent_id is not None and backup.state is not BackupState.DELETING:
            children_of.setdefault(backup.parent_id, []).append(backup)
    plan = descendants_first(root, children_of)
    for backup in plan:
        if backup.is_running and now - backup.created < running_expires:
            raise BackupRunningError(backup.id)
    return plan
