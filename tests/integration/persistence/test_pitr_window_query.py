"""The restorable window of an instance with thousands of archived batches, on each
metadata database: its runs come from one query that returns only the batches that start
or end a run, and another instance's batches never join them."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert

from strongroom.domain.model import (
    Backup,
    BackupId,
    BackupState,
    Instance,
    InstanceId,
    InstanceKind,
    InstanceStatus,
    ProjectId,
)
from strongroom.domain.pitr import ArchivedRun, PitrPolicy
from strongroom.persistence import migrate
from strongroom.persistence.pitr_repository import _RUN_STARTS
from strongroom.persistence.tables import WalBatchRow
from strongroom.persistence.unit_of_work import SqlUnitOfWork, make_engine, unit_of_work_factory
from strongroom.services.pitr import Span
from strongroom.services.pitr_policy import status_of

T0 = datetime(2026, 12, 6, 10, 0, 0)
STEP = 10  # seconds of commits per batch
SIZE = 1 << 20  # WAL per batch
# Run A: batches 0..2999; a hole of 5 batches (a lost slot); run B: 3005..4999; then one
# batch alone after another hole (a run no backup lies in).
RUN_A, RUN_B, ALONE = range(0, 3000), range(3005, 5000), 5100


def at(batch: int) -> datetime:
    return T0 + timedelta(seconds=batch * STEP)


def batch_row(instance_id: str, project_id: str, n: int, *, copy: int = 0) -> dict[str, Any]:
    return {
        "id": f"{instance_id}-{n:06d}-{copy}",
        "project_id": project_id,
        "instance_id": instance_id,
        "store_name": "local",
        "container": "c",
        "start": n * SIZE,
        "stop": (n + 1) * SIZE,
        "archived_from": at(n),
        "archived_through": at(n + 1),
        "created": at(n + 1) + timedelta(seconds=1 + copy),
    }


def instance(instance_id: str, project_id: str) -> Instance:
    return Instance(
        InstanceId(instance_id),
        ProjectId(project_id),
        instance_id,
        InstanceKind.MANAGED,
        "pg-15",
        InstanceStatus.ACTIVE,
        T0,
        T0,
    )


def backup(bid: str, instance_id: str, started: datetime, finished: datetime) -> Backup:
    return Backup(
        BackupId(bid),
        ProjectId("p"),
        bid,
        None,
        instance_id,
        None,
        BackupState.COMPLETED,
        started,
        finished,
    )


@pytest.fixture
def uow(tmp_path: Any, metadata_url: str | None) -> Iterator[Any]:
    engine = make_engine(metadata_url or f"sqlite:///{tmp_path / 'meta.db'}")
    migrate.upgrade(engine)
    sessions = unit_of_work_factory(engine)
    try:
        yield engine, lambda **kw: SqlUnitOfWork(sessions, **kw)
    finally:
        engine.dispose()


def test_window_of_thousands_of_batches_is_read_without_loading_them(uow: Any) -> None:
    engine, make_uow = uow
    rows = [batch_row("i1", "p", n) for n in [*RUN_A, *RUN_B, ALONE]]
    # A batch stored twice (a retried store): the copy sorts after it and starts where it
    # started, not where it stopped, so it begins a run of its own as before.
    rows.append(batch_row("i1", "p", RUN_B[-1], copy=1))
    # Another project's instance: batches that would fill the hole and archive later.
    rows += [batch_row("i2", "q", n) for n in range(2990, 5200)]
    with make_uow(write=True) as u:
        u.session.execute(insert(WalBatchRow), rows)
        for b in (
            backup("a", "i1", at(100), at(101)),
            backup("b", "i1", at(4000), at(4002)),
            backup("outside", "i1", at(2999), at(3006)),  # finished after the hole
        ):
            u.backups.add(b)
        u.pitr.save_policy(PitrPolicy("i1", "p", True, "local", "c", T0))
        u.commit()

    statements: list[str] = []
    loaded: list[object] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    def load(target: object, _context: Any) -> None:
        loaded.append(target)

    with make_uow() as u:
        summary = u.pitr.archive_summary("i1")
        event.listen(engine, "before_cursor_execute", seen)
        event.listen(WalBatchRow, "load", load)
        try:
            status = status_of(u, instance("i1", "p"), at(ALONE + 11))
        finally:
            event.remove(engine, "before_cursor_execute", seen)
            event.remove(WalBatchRow, "load", load)

    assert summary.runs == (
        ArchivedRun(at(RUN_A[0]), at(RUN_A[-1] + 1)),
        ArchivedRun(at(RUN_B[0]), at(RUN_B[-1] + 1)),
        ArchivedRun(at(RUN_B[-1]), at(RUN_B[-1] + 1)),  # the retried copy
        ArchivedRun(at(ALONE), at(ALONE + 1)),
    )
    assert summary.last_archived == at(ALONE + 1)
    assert status.window == (
        Span(at(101), at(RUN_A[-1] + 1)),
        Span(at(4002), at(RUN_B[-1] + 1)),
    )
    assert status.last_archived_at == at(ALONE + 1)
    assert status.lag_seconds == 10 * STEP
    # The view read the batches with one statement, which returns a row per run (A, B,
    # the copy, the lone batch), and made no row object of any batch.
    assert loaded == []
    assert len([s for s in statements if "wal_batches" in s]) == 1, statements
    with engine.connect() as conn:
        assert len(conn.execute(_RUN_STARTS, {"instance_id": "i1"}).all()) == 4


def test_another_instance_sees_only_its_own_batches(uow: Any) -> None:
    _engine, make_uow = uow
    with make_uow(write=True) as u:
        u.session.execute(insert(WalBatchRow), [batch_row("i2", "q", n) for n in range(10)])
        u.commit()
    with make_uow() as u:
        assert u.pitr.archive_summary("i1").runs == ()
        assert u.pitr.archive_summary("i1").last_archived is None
        status = status_of(u, instance("i1", "p"), at(20))
        assert status.window == () and status.last_archived_at is None
        assert u.pitr.archive_summary("i2").runs == (ArchivedRun(at(0), at(10)),)
