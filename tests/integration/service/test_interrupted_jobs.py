"""Jobs interrupted mid-run are settled by one rule, whether the service finds them on a
restart (embedded) or the reaper finds their worker dead (scaled out): a backup ends
FAILED and its partial objects are removed, a half-built instance ends ERROR and its home
on this host is removed, a deletion runs again to its end."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from fixtures.service import Harness, wait_for
from strongroom.domain.model import (
    Backup,
    BackupId,
    BackupState,
    Instance,
    InstanceId,
    InstanceKind,
    InstanceStatus,
    Job,
    JobId,
    JobKind,
    JobState,
    ProjectId,
)
from strongroom.services import object_layout
from strongroom.services.clock import SystemClock


def interrupted(h: Harness, kind: JobKind, target: str) -> JobId:
    """A job claimed by this host's worker long ago, with no heartbeat since."""
    long_ago = SystemClock().now() - timedelta(hours=1)
    job_id = JobId(str(uuid.uuid4()))
    with h.container.uow(write=True) as uow:
        uow.jobs.add(Job(job_id, kind, target, JobState.QUEUED, long_ago, long_ago))
        assert uow.jobs.claim(job_id, h.container.handlers.host_id, long_ago) is not None
        uow.commit()
    return job_id


def settle(h: Harness, how: str) -> None:
    if how == "restart":
        for job in h.container.handlers.recover():
            h.container.queue.submit(job.id, job.route)
    else:
        h.container.reaper.reap()
    h.wait_idle()


@pytest.mark.parametrize("how", ["restart", "reaper"])
def test_interrupted_jobs_are_settled_the_same_way(harness, how):
    h = harness
    source = h.a.wait_instance(h.a.create_instance("src")["id"])
    kept = h.a.wait_backup(h.a.create_backup(source["id"], "kept")["id"])
    doomed = h.a.wait_backup(h.a.create_backup(source["id"], "doomed")["id"])
    now = SystemClock().now()

    # A backup whose worker died after writing a chunk.
    partial = Backup(
        BackupId(str(uuid.uuid4())), ProjectId(h.a.project), "partial", None,
        InstanceId(source["id"]), None, BackupState.BUILDING, now, now,
        store_name="local", container="database-backups",
    )  # fmt: skip
    store = h.container.stores.backend("local")
    store.put(object_layout.chunk_key("database-backups", partial.id, 0), b"half")
    # An instance whose build stopped half way, its home on this host.
    building = Instance(
        InstanceId(str(uuid.uuid4())), ProjectId(h.a.project), "half", InstanceKind.MANAGED,
        _version_id(h), InstanceStatus.BUILD, now, now,
        task="BUILDING",
    )  # fmt: skip
    home = h.container.handlers.home_of(building.id)
    home.mkdir(parents=True)
    (home / "half.db").write_bytes(b"x")
    with h.container.uow(write=True) as uow:
        uow.backups.add(partial)
        uow.instances.add(building, None)
        deleting = uow.backups.find(doomed["id"])
        assert deleting is not None
        deleting.state = BackupState.DELETING
        uow.backups.save(deleting)
        uow.commit()
    jobs = {
        "backup": interrupted(h, JobKind.BACKUP, partial.id),
        "build": interrupted(h, JobKind.CREATE_INSTANCE, building.id),
        "delete": interrupted(h, JobKind.DELETE_BACKUP, doomed["id"]),
    }

    settle(h, how)

    failed = h.a.get(f"/backups/{partial.id}").json()["backup"]
    assert failed["status"] == "FAILED" and failed["fail_reason"]
    assert store.list(object_layout.backup_prefix("database-backups", partial.id)) == []
    broken = h.a.get(f"/instances/{building.id}").json()["instance"]
    assert broken["status"] == "ERROR" and broken["fault"]["message"]
    assert not home.exists()
    wait_for(lambda: h.a.get(f"/backups/{doomed['id']}").status_code == 404)
    assert store.list(object_layout.backup_prefix("database-backups", doomed["id"])) == []
    with h.container.uow() as uow:
        states = {name: uow.jobs.find(job_id).state for name, job_id in jobs.items()}
        assert uow.backups.find(doomed["id"]) is None
    assert states == {"backup": JobState.FAILED, "build": JobState.FAILED, "delete": JobState.DONE}
    assert h.a.get(f"/backups/{kept['id']}").json()["backup"]["status"] == "COMPLETED"


def _version_id(h: Harness) -> str:
    return str(h.a.get("/datastores/sqlite").json()["datastore"]["default_version"])
