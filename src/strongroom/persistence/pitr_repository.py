"""Archiving policies and archived log batches."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, bindparam, delete, func, or_, select
from sqlalchemy.orm import Session

from strongroom.domain.pitr import ArchivedRun, ArchiveSummary, PitrPolicy, WalBatch
from strongroom.persistence.tables import PitrPolicyRow, Timestamp, WalBatchRow

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
        """One query that returns a row per run, however many batches the instance has:
        each run's first batch, the end of the run before it and the newest batch's."""
        rows = self._s.execute(_RUN_STARTS, {"instance_id": instance_id}).all()
        if not rows:
            return ArchiveSummary((), None)
        ends = [previous_end for _, previous_end, _ in rows[1:]] + [rows[-1].newest]
        runs = tuple(
            ArchivedRun(archived_from, end)
            for (archived_from, _, _), end in zip(rows, ends, strict=True)
        )
        # Along a run each batch was cut after the one before it: a run's newest commit
        # is its last batch's.
        return ArchiveSummary(runs, max((r.archived_through for r in runs), default=None))

    def all_batches(self) -> list[WalBatch]:
        """Every instance's batches (a key rotation rewrites each one's manifest)."""
        return [_batch(r) for r in self._s.scalars(select(WalBatchRow).order_by(WalBatchRow.id))]

    def remove_batches(self, batch_ids: Sequence[str]) -> None:
        if batch_ids:
            self._s.execute(delete(WalBatchRow).where(WalBatchRow.id.in_(list(batch_ids))))


def _run_starts() -> Select[Any]:
    """Gaps and islands over one instance's batches in ``(start, created)`` order: a batch
    starts a run unless it starts where the one before it stopped; the one before it
    ended the previous run, and the last one ends the last run. One window (SQLite 3.25+,
    PostgreSQL, MariaDB 10.2+) and one read of the index backwards, in one statement so
    that both see the same batches."""
    b = WalBatchRow
    order = (b.start, b.created, b.id)
    instance = b.instance_id == bindparam("instance_id")
    marked = (
        select(
            b.start,
            b.created,
            b.id,
            b.archived_from,
            func.lag(b.stop).over(order_by=order).label("previous_stop"),
            func.lag(b.archived_through, type_=Timestamp)
            .over(order_by=order)
            .label("previous_through"),
        )
        .where(instance)
        .subquery()
    )
    last = (
        select(b.archived_through)
        .where(instance)
        .order_by(b.start.desc(), b.created.desc(), b.id.desc())
        .limit(1)
        .scalar_subquery()
        .label("newest")
    )
    return (
        select(marked.c.archived_from, marked.c.previous_through, last)
        .where(or_(marked.c.previous_stop.is_(None), marked.c.previous_stop != marked.c.start))
        .order_by(marked.c.start, marked.c.created, marked.c.id)
    )


_RUN_STARTS = _run_starts()


def _policy(row: PitrPolicyRow) -> PitrPolicy:
    return PitrPolicy(**{name: getattr(row, name) for name in _POLICY_FIELDS})


def _batch(row: WalBatchRow) -> WalBatch:
    return WalBatch(**{name: getattr(row, name) for name in _BATCH_FIELDS})
