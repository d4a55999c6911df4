"""The backup state machine (contract §5.1)."""

from __future__ import annotations

from strongroom.domain.errors import InvalidStateError
from strongroom.domain.model import BackupState

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
