"""The API's most frequent reads (a backup, a page, their copies) run on SQLite's cursor
rather than through SQLAlchemy's execution: they must give exactly the values SQLAlchemy
gives, on every metadata database, and fail as SQLAlchemy fails."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import exc

from strongroom.domain.model import (
    Backup,
    BackupCopy,
    BackupId,
    BackupState,
    CopyState,
    Drill,
    DrillStatus,
    InstanceId,
    Progress,
    ProjectId,
    Verification,
    VerifyStatus,
)
from strongroom.domain.ports import BackupQuery
from strongroom.persistence import core_reads, migrate
from strongroom.persistence.backup_repository import _backup_by_id, _backup_page
from strongroom.persistence.copy_repository import LISTED_IDS, _copies_of
from strongroom.persistence.unit_of_work import SqlUnitOfWork, make_engine, unit_of_work_factory

T0 = datetime(2026, 1, 1, 12, 0, 0, 123456)  # microseconds: every database keeps them


def full_backup(n: int) -> Backup:
    """Every column set, several of them converted on the way out (times, JSON)."""
    at = T0 + timedelta(minutes=n)
    return Backup(
        id=BackupId(f"b{n:03}"),
        project_id=ProjectId("p"),
        name=f"name-{n} ü",
        description=None if n % 2 else "d",
        instance_id=InstanceId("i"),
        parent_id=BackupId(f"b{n - 1:03}") if n else None,
        state=BackupState.COMPLETED,
        created=at,
        updated=at + timedelta(seconds=1),
        datastore_version_id="v",
        size_gb=0.25 + n,
        location_ref=f"file:///x/{n}/manifest.json",
        store_name="local",
        container="c",
        fail_reason=None,
        progress=Progress(7, 9, at + timedelta(seconds=2), at + timedelta(seconds=3)),
        stored_bytes=5 * 1024**3 + n,
        schedule_id="s" if n % 3 else None,
        manifest_sha256="ab" * 32,
    )


@pytest.fixture
def seeded(tmp_path, metadata_url):
    engine = make_engine(metadata_url or f"sqlite:///{tmp_path / 'meta.db'}")
    migrate.upgrade(engine)
    sessions = unit_of_work_factory(engine)
    backups = [full_backup(n) for n in range(LISTED_IDS + 5)]
    with SqlUnitOfWork(sessions, write=True) as uow:
        for b in backups:
            uow.backups.add(b)
        uow.session.flush()
        for n, b in enumerate(backups[:30]):
            uow.copies.add(
                BackupCopy(
                    id=f"c{n:03}",
                    backup_id=b.id,
                    project_id=b.project_id,
                    store_name="offsite",
                    container="c",
                    state=CopyState.COMPLETED,
                    created=T0 + timedelta(minutes=n),
                    updated=T0 + timedelta(minutes=n),
                    location_ref=None if n % 2 else "s3://x",
                    verified_at=T0 if n % 2 else None,
                )
            )
        uow.backups.record_verification(
            "b001", Verification(VerifyStatus.OK, T0 + timedelta(hours=1), None)
        )
        uow.backups.record_drill(
            "b002",
            Drill(DrillStatus.OK, T0 + timedelta(hours=2), None, {"tables": 3, "ok": True}),
        )
        uow.commit()
    yield sessions, backups
    engine.dispose()


def test_the_frequent_reads_give_what_sqlalchemy_gives(seeded):
    sessions, backups = seeded
    ids = [b.id for b in backups]
    cases = [
        (_backup_by_id(), {"id": "b002"}),
        (_backup_by_id(), {"id": "b001"}),
        (_backup_by_id(), {"id": "missing"}),
        (
            _backup_page(project=True, instance=True, versions=False, states=False, limited=True),
            {"project_id": "p", "instance_id": "i", "offset": 3, "limit": 20},
        ),
        (_copies_of(1), {"b0": "b004"}),
        (_copies_of(20), {f"b{i}": backup_id for i, backup_id in enumerate(ids[:20])}),
        (_copies_of(0), {"backup_ids": ids}),  # expanded when run: SQLAlchemy runs it
    ]
    with SqlUnitOfWork(sessions) as uow:
        conn = uow.session.connection()
        for stmt, params in cases:
            expected = [tuple(row) for row in conn.execute(stmt, params)]
            assert [tuple(row) for row in core_reads.rows(uow.session, stmt, params)] == expected
        on_sqlite = conn.dialect.name == "sqlite"
        # Not a comparison of SQLAlchemy with itself: on SQLite the cursor ran these.
        assert (core_reads._prepared(_backup_by_id(), conn) is not None) is on_sqlite
        assert core_reads._prepared(_copies_of(0), conn) is None


def test_repositories_read_back_every_field(seeded):
    sessions, backups = seeded
    with SqlUnitOfWork(sessions) as uow:
        found = uow.backups.find("b002")
        assert found is not None
        assert found.drill == Drill(
            DrillStatus.OK, T0 + timedelta(hours=2), None, {"tables": 3, "ok": True}
        )
        assert uow.backups.find("b001").verification == Verification(  # type: ignore[union-attr]
            VerifyStatus.OK, T0 + timedelta(hours=1), None
        )
        found.drill = None
        assert found == backups[2]
        assert uow.backups.find("b010") == backups[10]
        page = uow.backups.query(BackupQuery(project_id="p", instance_id="i", limit=5))
        assert page == sorted(backups, key=lambda b: b.updated, reverse=True)[:5]
        by_one = [uow.copies.of_backups([b.id]) for b in backups]
        together = uow.copies.of_backups([b.id for b in backups[:20]])
        every = uow.copies.of_backups([b.id for b in backups])  # more than LISTED_IDS
    assert [c.id for copies in by_one for c in copies] == [f"c{n:03}" for n in range(30)]
    assert together == [c for copies in by_one[:20] for c in copies]
    assert every == [c for copies in by_one for c in copies]
    assert by_one[1][0].verified_at == T0 and by_one[0][0].location_ref == "s3://x"


def test_a_failed_read_raises_sqlalchemys_error(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")  # no tables
    with (
        SqlUnitOfWork(unit_of_work_factory(engine)) as uow,
        pytest.raises(exc.OperationalError, match="no such table: backups"),
    ):
        core_reads.rows(uow.session, _backup_by_id(), {"id": "b"})
    engine.dispose()
