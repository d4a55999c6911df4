"""The scaled-out layout: routing by host, dead workers, a lost broker, concurrent APIs."""

from __future__ import annotations

import signal
import sqlite3
import threading
import uuid

import httpx
import pytest
from keystoneauth1 import session
from keystoneauth1.token_endpoint import Token
from troveclient.v1 import client

from fixtures.service import wait_for


class Api:
    def __init__(self, url: str, project: str, token: str) -> None:
        self.base = f"{url}/v1.0/{project}"
        self.headers = {"X-Auth-Token": token}

    def post(self, path: str, body: dict) -> httpx.Response:
        return httpx.post(self.base + path, json=body, headers=self.headers, timeout=30)

    def get(self, path: str) -> httpx.Response:
        return httpx.get(self.base + path, headers=self.headers, timeout=30)

    def instance(self, name: str, host: str, **extra: object) -> dict:
        r = self.post(
            "/instances",
            {"instance": {"name": name, "datastore": {"type": "sqlite"}, "host": host, **extra}},
        )
        assert r.status_code == 200, r.text
        iid = r.json()["instance"]["id"]
        return wait_for(
            lambda: (
                (i := self.get(f"/instances/{iid}").json()["instance"])["status"] == "ACTIVE" and i
            ),
            timeout=60,
        )

    def backup(self, instance_id: str, name: str = "b") -> dict:
        r = self.post("/backups", {"backup": {"name": name, "instance": instance_id}})
        assert r.status_code == 202, r.text
        return r.json()["backup"]

    def wait_backup(self, backup_id: str, states=("COMPLETED",), timeout: float = 60) -> dict:
        def done():
            b = self.get(f"/backups/{backup_id}").json()["backup"]
            if b["status"] == "FAILED" and "FAILED" not in states:
                raise AssertionError(b.get("fail_reason"))
            return b if b["status"] in states else None

        return wait_for(done, timeout=timeout)


@pytest.fixture(scope="module")
def project(cluster):
    name = "p" + uuid.uuid4().hex[:10]
    return name, cluster.token(name, "admin")  # the tests place instances on chosen hosts


@pytest.fixture
def apis(cluster, project):
    name, token = project
    return [Api(url, name, token) for url in cluster.api_urls]


def test_backups_run_on_their_instances_host(cluster, apis):
    a1 = apis[0]
    instances = {
        host: [a1.instance(f"{host}-{i}", host) for i in range(2)] for host in ("h1", "h2")
    }
    for inst_list in instances.values():
        for inst in inst_list:
            with sqlite3.connect(inst["connection"]["path"]) as db:
                db.execute("create table t(x)")
                db.executemany("insert into t values (?)", [(i,) for i in range(500)])
    created = []
    for round_ in range(5):
        batch = []
        for n, (host, inst_list) in enumerate(sorted(instances.items())):
            for inst in inst_list:
                api = apis[(round_ + n) % 2]
                batch.append((host, api.backup(inst["id"], f"r{round_}")))
        for host, backup in batch:
            apis[0].wait_backup(backup["id"])
            created.append((host, backup["id"]))
    assert len(created) == 20
    for host, backup_id in created:
        (worker,) = cluster.sql(
            "select worker from jobs where target_id = %s and kind = 'backup'", backup_id
        )[0]
        assert worker == host


def locked_external(cluster, api: Api, host: str):
    path = cluster.root / "sqlite-roots" / f"locked-{uuid.uuid4().hex[:6]}.db"
    with sqlite3.connect(path) as db:
        db.execute("pragma journal_mode=delete")
        db.execute("create table t(x)")
        db.executemany("insert into t values (?)", [(i,) for i in range(1000)])
    r = api.post(
        "/instances",
        {
            "instance": {
                "name": "ext",
                "datastore": {"type": "sqlite"},
                "host": host,
                "external": {"path": str(path)},
            }
        },
    )
    assert r.status_code == 200, r.text
    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("begin exclusive")
    return r.json()["instance"], locker


def test_killed_worker_fails_its_backup_in_time_and_the_instance_recovers(cluster, apis):
    api = apis[0]
    inst, locker = locked_external(cluster, api, "h1")
    backup = api.backup(inst["id"], "doomed")
    api.wait_backup(backup["id"], ("BUILDING",))
    cluster.procs["worker-h1"].stop(signal.SIGKILL)
    locker.execute("rollback")
    locker.close()
    failed = api.wait_backup(backup["id"], ("FAILED",), timeout=30)
    assert "stopped responding" in failed["fail_reason"]
    assert "h1" in failed["fail_reason"]
    cluster.start_worker("h1")
    again = api.backup(inst["id"], "again")
    assert api.wait_backup(again["id"])["status"] == "COMPLETED"


def test_unreachable_broker_at_create_is_recovered(cluster, project):
    name, token = project
    url = cluster.start_api(
        "api-nobroker", extra_env={"STRONGROOM_BROKER_URL": "amqp://guest:guest@127.0.0.1:1//"}
    )
    try:
        api = Api(url, name, token)
        inst = Api(cluster.api_urls[0], name, token).instance("nobroker", "h2")
        backup = api.backup(inst["id"], "late")
        assert backup["status"] == "NEW"
        done = api.wait_backup(backup["id"], timeout=60)
        assert done["status"] == "COMPLETED"
    finally:
        cluster.procs["api-nobroker"].stop()


def test_concurrent_creates_from_two_api_processes_start_exactly_one(cluster, apis):
    inst = apis[0].instance("race", "h2")
    for _ in range(3):
        barrier = threading.Barrier(2)
        results: list[httpx.Response] = []

        def fire(api: Api, barrier: threading.Barrier = barrier, results: list = results) -> None:
            barrier.wait()
            results.append(
                api.post("/backups", {"backup": {"name": "race", "instance": inst["id"]}})
            )

        threads = [threading.Thread(target=fire, args=(api,)) for api in apis]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = sorted(r.status_code for r in results)
        assert codes == [202, 422], [r.text for r in results]
        winner = next(r for r in results if r.status_code == 202).json()["backup"]
        apis[0].wait_backup(winner["id"])


def test_quota_cannot_be_raced_past(cluster):
    name = "q" + uuid.uuid4().hex[:8]
    token = cluster.token(name, "admin")  # places instances on a chosen host
    apis = [Api(url, name, token) for url in cluster.api_urls]
    instances = [apis[0].instance(f"q{i}", "h1") for i in range(2)]
    # Fill the quota up to one below the limit through restore_from registrations.
    first = apis[0].backup(instances[0]["id"], "first")
    first = apis[0].wait_backup(first["id"])
    vid = apis[0].get("/datastores/sqlite").json()["datastore"]["default_version"]
    for i in range(48):
        r = apis[0].post(
            "/backups",
            {
                "backup": {
                    "name": f"imp{i}",
                    "restore_from": {
                        "remote_location": first["locationRef"],
                        "local_datastore_version_id": vid,
                        "size": 0.01,
                    },
                }
            },
        )
        assert r.status_code == 202, r.text
    barrier = threading.Barrier(2)
    results: list[httpx.Response] = []

    def fire(api: Api, inst: dict) -> None:
        barrier.wait()
        results.append(api.post("/backups", {"backup": {"name": "last", "instance": inst["id"]}}))

    threads = [threading.Thread(target=fire, args=(apis[i], instances[i])) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [202, 413], [r.text for r in results]


def test_troveclient_against_the_scaled_out_api(cluster, project):
    name, token = project
    trove = client.Client(
        session=session.Session(auth=Token(f"{cluster.api_urls[1]}/v1.0/{name}", token))
    )
    inst = trove.instances.create("tc", "1", datastore="sqlite")
    wait_for(lambda: trove.instances.get(inst.id).status == "ACTIVE", timeout=60)
    path = trove.instances.get(inst.id).connection["path"]
    with sqlite3.connect(path) as db:
        db.execute("create table t(id integer primary key, v text)")
        db.executemany("insert into t values (?, ?)", [(i, f"v{i}") for i in range(300)])
        expected = db.execute("select * from t order by id").fetchall()
    backup = trove.backups.create("tc-full", inst.id)
    wait_for(lambda: trove.backups.get(backup.id).status == "COMPLETED", timeout=60)
    restored = trove.instances.create(
        "tc-r", "1", restorePoint={"backupRef": backup.id}, datastore="sqlite"
    )
    wait_for(lambda: trove.instances.get(restored.id).status == "ACTIVE", timeout=60)
    with sqlite3.connect(trove.instances.get(restored.id).connection["path"]) as db:
        assert db.execute("select * from t order by id").fetchall() == expected
