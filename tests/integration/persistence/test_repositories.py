"""Repository rules that the API relies on, on a real SQLite metadata database."""

from datetime import datetime, timedelta

from strongroom.domain.model import (
    Backup,
    BackupId,
    BackupState,
    InstanceId,
    Progress,
    ProjectId,
)
from strongroom.domain.ports import BackupQuery
from strongroom.persistence import migrate
from strongroom.persistence.unit_of_work import SqlUnitOfWork, make_engine, unit_of_work_factory

T0 = datetime(2026, 1, 1, 12, 0, 0)


def uow_factory(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    migrate.upgrade(engine)
    sessions = unit_of_work_factory(engine)
    return lambda **kw: SqlUnitOfWork(sessions, **kw)


def backup(bid: str, minutes: int, state=BackupState.COMPLETED) -> Backup:
    t = T0 + timedelta(minutes=minutes)
    return Backup(BackupId(bid), ProjectId("p"), bid, None, None, None, state, t, t)


def test_list_orders_by_updated_and_a_state_change_moves_to_front(tmp_path):
    uow = uow_factory(tmp_path)
    with uow(write=True) as u:
        for i, bid in enumerate(["a", "b", "c"]):
            u.backups.add(backup(bid, i))
        u.commit()
    with uow() as u:
        assert [b.id for b in u.backups.query(BackupQuery(project_id="p"))] == ["c", "b", "a"]
    with uow(write=True) as u:
        a = u.backups.find("a")
        a.state = BackupState.FAILED
        a.updated = T0 + timedelta(minutes=10)
        u.backups.save(a)
        u.commit()
    with uow() as u:
        assert [b.id for b in u.backups.query(BackupQuery(project_id="p"))] == ["a", "c", "b"]
        page = u.backups.query(BackupQuery(project_id="p", offset=1, limit=1))
        assert [b.id for b in page] == ["c"]


def test_deleting_backups_are_invisible_to_queries(tmp_path):
    uow = uow_factory(tmp_path)
    with uow(write=True) as u:
        u.backups.add(backup("kept", 0))
        u.backups.add(backup("going", 1, BackupState.DELETING))
        u.commit()
    with uow() as u:
        assert [b.id for b in u.backups.query(BackupQuery())] == ["kept"]


def test_quota_lock_creates_the_usage_row(tmp_path):
    uow = uow_factory(tmp_path)
    with uow(write=True) as u:
        assert u.quotas.lock_in_use("p", "backups") == 0
        u.quotas.set_in_use("p", "backups", 2)
        u.commit()
    with uow(write=True) as u:
        assert u.quotas.lock_in_use("p", "backups") == 2


def test_job_claim_runs_a_job_once(tmp_path):
    from strongroom.domain.model import Job, JobId, JobKind, JobState

    uow = uow_factory(tmp_path)
    job = Job(JobId("j1"), JobKind.BACKUP, "b1", JobState.QUEUED, T0, T0, route="h1")
    with uow(write=True) as u:
        u.jobs.add(job)
        u.commit()
    with uow(write=True) as u:
        claimed = u.jobs.claim("j1", "h1", T0)
        u.commit()
    assert claimed is not None and claimed.worker == "h1" and claimed.attempts == 1
    with uow(write=True) as u:
        assert u.jobs.claim("j1", "h2", T0) is None
    with uow(write=True) as u:
        stale = u.jobs.stale(JobState.RUNNING, T0 + timedelta(seconds=1))
        assert [j.id for j in stale] == ["j1"]
        assert u.jobs.stale(JobState.RUNNING, T0) == []


def test_metadata_file_never_holds_a_token(tmp_path):
    from strongroom.services.clock import SystemClock
    from strongroom.services.tokens import TokenService

    tokens = TokenService(uow_factory(tmp_path), SystemClock())
    issued = tokens.create(project_id="p", user_id="u", roles=("member",))
    assert tokens.authenticate(issued.token).project_id == "p"
    assert issued.token.encode() not in (tmp_path / "meta.db").read_bytes()
    assert tokens.authenticate(issued.token + "x") is None


def test_every_backup_field_survives_a_round_trip(tmp_path):
    """Backup reads unpack rows by column position: each field must come back as written."""
    uow = uow_factory(tmp_path)
    written = Backup(
        id=BackupId("full"),
        project_id=ProjectId("p"),
        name="n",
        description="d",
        instance_id=InstanceId("i"),
        parent_id=BackupId("parent"),
        state=BackupState.SAVING,
        created=T0,
        updated=T0 + timedelta(seconds=1),
        datastore_version_id="v",
        size_gb=0.5,
        location_ref="file:///x/manifest.json",
        store_name="local",
        container="c",
        fail_reason="r",
        progress=Progress(
            bytes_done=7,
            bytes_expected=9,
            started_at=T0 + timedelta(seconds=2),
            updated_at=T0 + timedelta(seconds=3),
        ),
        stored_bytes=11,
    )
    with uow(write=True) as u:
        u.backups.add(written)
        u.commit()
    with uow() as u:
        assert u.backups.find("full") == written
        assert u.backups.find_for_update("full") == written
        assert u.backups.children("parent") == [written]
        assert u.backups.running_for_instance("i") == [written]
        assert u.backups.in_states([BackupState.SAVING]) == [written]
        assert u.backups.query(BackupQuery(project_id="p")) == [written]
        assert u.backups.find("missing") is None


def test_each_list_filter_alone_and_together(tmp_path):
    """The list statement is built once per combination of filters, values bound later."""
    uow = uow_factory(tmp_path)
    rows = [
        ("a", "p", "i1", "v1", BackupState.COMPLETED),
        ("b", "p", "i2", "v2", BackupState.FAILED),
        ("c", "q", "i1", "v1", BackupState.COMPLETED),
        ("d", "p", "i1", "v2", BackupState.NEW),
    ]
    with uow(write=True) as u:
        for minutes, (bid, project, instance, version, state) in enumerate(rows):
            b = backup(bid, minutes, state)
            b.project_id = ProjectId(project)
            b.instance_id = InstanceId(instance)
            b.datastore_version_id = version
            u.backups.add(b)
        u.commit()

    def ids(**filters) -> list[str]:
        with uow() as u:
            return [b.id for b in u.backups.query(BackupQuery(**filters))]

    assert ids() == ["d", "c", "b", "a"]
    assert ids(project_id="p") == ["d", "b", "a"]
    assert ids(project_id="q") == ["c"]
    assert ids(instance_id="i1") == ["d", "c", "a"]
    assert ids(datastore_version_ids=["v2"]) == ["d", "b"]
    assert ids(datastore_version_ids=[]) == []
    assert ids(states=[BackupState.COMPLETED]) == ["c", "a"]
    assert ids(project_id="p", instance_id="i1", datastore_version_ids=["v1"]) == ["a"]
    assert ids(limit=2) == ["d", "c"]
    assert ids(offset=1, limit=2) == ["c", "b"]
    assert ids(offset=3) == ["a"]


def test_a_read_sees_the_unit_of_works_own_pending_changes(tmp_path):
    """Reads are Core statements: they rely on the session flushing pending changes first."""
    uow = uow_factory(tmp_path)
    with uow(write=True) as u:
        u.backups.add(backup("a", 0))
        assert [b.id for b in u.backups.query(BackupQuery(project_id="p"))] == ["a"]
        a = u.backups.find("a")
        a.state = BackupState.FAILED
        u.backups.save(a)
        assert u.backups.find("a").state is BackupState.FAILED


def test_a_read_only_step_that_cannot_start_gives_its_connection_back(tmp_path):
    """A read-only step checks out its connection before its session exists: when making
    the session fails, the connection goes back to the pool (``__exit__`` never runs)."""
    import pytest
    from sqlalchemy.orm import Session, sessionmaker

    class RefusedSession(Session):
        def __init__(self, *args, **kwargs):
            raise RuntimeError("no session")

    engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    migrate.upgrade(engine)
    sessions = sessionmaker(bind=engine, class_=RefusedSession)
    with (
        pytest.raises(RuntimeError, match="no session") as refused,
        SqlUnitOfWork(sessions, read_only=True),
    ):
        pass
    # Given back, not merely collected with the frames: the traceback still holds them.
    assert refused.traceback is not None
    assert engine.pool.checkedout() == 0
    engine.dispose()
