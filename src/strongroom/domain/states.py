"""The backup state machine."""

from __future__ import annotations

from datetime import datetime

from strongroom.domain.errors import InvalidStateError
from strongroom.domain.model import Backup, BackupState

S = BackupState
ALLOWED: dict[BackupState, frozenset[BackupState]] = {
    S.NEW: frozenset({S.BUILDING, S.FAILED, S.DELETING}),
    S.BUILDING: frozenset({S.SAVING, S.COMPLETED, S.FAILED, S.DELETING}),
    S.SAVING: frozenset({S.COMPLETED, S.FAILED, S.DELETING}),
    S.COMPLETED: frozenset({S.DELETING}),
    S.FAILED: frozenset({S.DELETING}),
    S.RESTORED: frozenset({S.DELETING}),
    S.DELETE_FAILED: frozenset({S.DELETING}),
    S.DELETING: frozenset({S.DELETE_FAILED}),
}


def check_transition(current: BackupState, target: BackupState) -> None:
    if target not in ALLOWED[current]:
        raise InvalidStateError(f"A backup cannot go from {current} to {target}.")


def transition(backup: Backup, target: BackupState, at: datetime) -> None:
    """Move ``backup`` to ``target`` (raises ``InvalidStateError`` if not allowed)."""
    check_transition(backup.state, target)
    backup.state = target
    backup.updated = at
