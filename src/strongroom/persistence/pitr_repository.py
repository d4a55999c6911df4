"""Archiving policies and archived log batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, bindparam, case, delete, func, or_, select
from sqlalchemy.orm import Session

from strongroom.domain.pitr import ArchivedRun, ArchiveSummary, PitrPolicy, WalBatch
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

    def archive_summary(self, instance_id: str) -> ArchiveSummary:
        """Only the batches that start or end a run come back (with the newest archived
        commit on each), so an instance with thousands of batches is read in one query
        that returns a few rows."""
        runs: list[ArchivedRun] = []
        last = None
        for archived_from, archived_through, first, newest in self._s.execute(
            _RUN_ENDS, {"instance_id": instance_id}
        ):
            if first:
                runs.append(ArchivedRun(archived_from, archived_through))
            else:
                runs[-1] = ArchivedRun(runs[-1].archived_from, archived_through)
            last = newest
        return ArchiveSummary(tuple(runs), last)

    def all_batches(self) -> list[WalBatch]:
        """Every instance's batches (a key rotation rewrites each one's manifest)."""
        return [_batch(r) for r in self._s.scalars(select(WalBatchRow).order_by(WalBatchRow.id))]

    def remove_batches(self, batch_ids: Sequence[str]) -> None:
        if batch_ids:
            self._s.execute(delete(WalBatchRow).where(WalBatchRow.id.in_(list(batch_ids))))


def _run_ends() -> Select[Any]:
    """Gaps and islands over one instance's batches in ``(start, created)`` order: a batch
    starts a run unless it starts where the one before it stopped, and ends one unless the
    next one starts where it stopped. Window functions: SQLite 3.25+, PostgreSQL, MariaDB
    10.2+."""
    b = WalBatchRow
    order = (b.start, b.created, b.id)
    first = case((func.lag(b.stop).over(order_by=order) == b.start, 0), else_=1)
    last = case((func.lead(b.start).over(order_by=order) == b.stop, 0), else_=1)
    marked = (
        select(
            b.start,
            b.created,
            b.id,
            b.archived_from,
            b.archived_through,
            first.label("run_first"),
            last.label("run_last"),
            func.max(b.archived_through).over().label("newest"),
        )
        .where(b.instance_id == bindparam("instance_id"))
        .subquery()
    )
    return (
        select(
            marked.c.archived_from, marked.c.archived_through, marked.c.run_first, marked.c.newest
        )
        .where(or_(marked.c.run_first == 1, marked.c.run_last == 1))
        .order_by(marked.c.start, marked.c.created, marked.c.id)
    )


_RUN_ENDS = _run_ends()


def _policy(row: PitrPolicyRow) -> PitrPolicy:
    return PitrPolicy(**{name: getattr(row, name) for name in _POLICY_FIELDS})


def _batch(row: WalBatchRow) -> WalBatch:
    return WalBatch(**{name: getattr(row, name) for name in _BATCH_FIELDS})
