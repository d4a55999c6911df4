"""Archiving policies and archived log batches."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from strongroom.domain.pitr import PitrPolicy, WalBatch
from strongroom.persistence.tables import PitrPolicyRow, WalBatchRow

_POLICY_FIELDS = (
    "instance_id",
    "project_id",
    "enabled",
    "store_name",
    "container",
    "updated",
    "next_start",
    "started_at",
    "last_error",
)
_BATCH_FIELDS = (
    "id",
    "project_id",
    "instance_id",
    "store_name",
    "container",
    "start",
    "stop",
    "archived_from",
    "archived_through",
    "created",
)


class SqlPitrRepository:
    def __init__(self, session: Session) -> None:
        self._s = session

    def policy(self, instance_id: str) -> PitrPolicy | None:
        row = self._s.get(PitrPolicyRow, instance_id)
        return None if row is None else _policy(row)

    def save_policy(self, policy: PitrPolicy) -> None:
        row = self._s.get(PitrPolicyRow, policy.instance_id)
        if row is None:
            row = PitrPolicyRow(instance_id=policy.instance_id)
            self._s.add(row)
        for name in _POLICY_FIELDS[1:]:
            setattr(row, name, getattr(policy, name))

    def remove_policy(self, instance_id: str) -> None:
        self._s.execute(delete(PitrPolicyRow).where(PitrPolicyRow.instance_id == instance_id))

    def policies(self) -> list[PitrPolicy]:
        return [_policy(r) for r in self._s.scalars(select(PitrPolicyRow))]

    def add_batch(self, batch: WalBatch) -> None:
        self._s.add(WalBatchRow(**{name: getattr(batch, name) for name in _BATCH_FIELDS}))

    def batches(self, instance_id: str) -> list[WalBatch]:
        rows = self._s.scalars(
            select(WalBatchRow)
            .where(WalBatchRow.instance_id == instance_id)
            .order_by(WalBatchRow.start, WalBatchRow.created)
        )
        return [_batch(r) for r in rows]

    def all_batches(self) -> list[WalBatch]:
        """Every instance's batches (a key rotation rewrites each one's manifest)."""
        return [_batch(r) for r in self._s.scalars(select(WalBatchRow).order_by(WalBatchRow.id))]

    def remove_batches(self, batch_ids: Sequence[str]) -> None:
        if batch_ids:
            self._s.execute(delete(WalBatchRow).where(WalBatchRow.id.in_(list(batch_ids))))


def _policy(row: PitrPolicyRow) -> PitrPolicy:
    return PitrPolicy(**{name: getattr(row, name) for name in _POLICY_FIELDS})


def _batch(row: WalBatchRow) -> WalBatch:
    return WalBatch(**{name: getattr(row, name) for name in _BATCH_FIELDS})
