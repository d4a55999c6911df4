"""Repository rules that the API relies on, on a real SQLite metadata database."""

from datetime import datetime, timedelta

from strongroom.domain.model import Backup, BackupId, BackupState, ProjectId
from strongroom.domain.ports import BackupQuery
from strongroom.persistence import migrate
from strongroom.persistence.unit_of_work import SqlUnitOfWork, make_engine, unit_of_work_factory

T0 = datetime(2026, 1, 1, 12, 0, 0)


def uow_factory(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'meta.db'}")
    migrate.upgrade(engine)
    sessions = unit_of_work_factory(engine)
    return lambda write=False: SqlUnitOfWork(sessions, write=write)


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
