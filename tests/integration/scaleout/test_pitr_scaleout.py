"""Point-in-time archiving in the scaled-out layout: it runs in the worker of the instance's
host; that worker killed with SIGKILL and started again goes on from the position the
catalog recorded (the slot kept the WAL meanwhile), so commits made while it was down are
archived, the window stays one range, and a restore to a time between them — made on any
host, from the shared store — holds exactly the rows committed by then."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from fixtures.cluster import Cluster, running_cluster
from fixtures.service import PROJECT_A, Caller, wait_for
from support.postgresql_service import PG_MAJOR, reachable_dir
from support.service_calls import wait_status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    env = {
        "STRONGROOM_DATASTORES": json.dumps(["sqlite", "postgresql"]),
        "STRONGROOM_PITR_INTERVAL_SECONDS": "1",
    }
    with reachable_dir("srp-") as base:
        (base / "c").mkdir()  # short: a server socket path has at most ~100 bytes
        with running_cluster(base / "c", extra_env=env) as c:
            yield c


def sql(view: dict[str, Any], login: tuple[str, str], query: str) -> list[str]:
    done = subprocess.run(
        [
            *("psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-h", view["ip"][0]),
            *("-p", str(view["connection"]["port"]), "-U", login[0], "-d", "postgres"),
            *("-c", query),
        ],
        env={"PATH": os.environ["PATH"], "PGPASSWORD": login[1], "PGTZ": "UTC"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def active(a: Caller, instance_id: str) -> dict[str, Any]:
    view: dict[str, Any] = wait_status(
        lambda: a.get(f"/instances/{instance_id}").json()["instance"], "ACTIVE", timeout=180
    )
    return view


def root_login(a: Caller, instance_id: str) -> tuple[str, str]:
    r = a.post(f"/instances/{instance_id}/root")
    assert r.status_code == 200, r.text
    return r.json()["user"]["name"], r.json()["user"]["password"]


def insert(view: dict[str, Any], login: tuple[str, str], n: int) -> datetime:
    (at,) = sql(view, login, f"INSERT INTO t VALUES ({n}) RETURNING extract(epoch from at)")
    return datetime.utcfromtimestamp(float(at))


def archived_at(a: Caller, instance_id: str) -> str | None:
    pitr: dict[str, Any] = a.get(f"/instances/{instance_id}").json()["instance"]["pitr"]
    return pitr.get("last_archived_at")


def window_reaches(a: Caller, instance_id: str, moment: datetime) -> list[dict[str, str]]:
    def reached() -> list[dict[str, str]] | None:
        window = a.get(f"/instances/{instance_id}").json()["instance"]["restorable_window"]
        if window and datetime.fromisoformat(window[-1]["to"].rstrip("Z")) >= moment:
            return list(window)
        return None

    found: list[dict[str, str]] = wait_for(reached, timeout=120, interval=0.2)
    return found


def test_archiving_survives_a_killed_worker_and_restores_on_any_host(cluster: Cluster) -> None:
    with httpx.Client(base_url=cluster.api_urls[0], timeout=60) as client:
        a = Caller(client, PROJECT_A, cluster.token(PROJECT_A))  # type: ignore[arg-type]
        created = a.create_instance("src", datastore={"type": "postgresql"})
        view = active(a, created["id"])
        ((host,),) = cluster.sql("select host from instances where id = %s", created["id"])
        login = root_login(a, created["id"])
        sql(view, login, "CREATE TABLE t (n int, at timestamptz DEFAULT clock_timestamp())")
        r = a.client.put(
            a.url(f"/instances/{created['id']}/pitr"),
            json={"pitr": {"enabled": True}},
            headers=a._headers(None),
        )
        assert r.status_code == 200, r.text
        # A backup counts towards the window once archiving had begun before it.
        wait_for(lambda: archived_at(a, created["id"]), timeout=120, interval=0.2)
        a.wait_backup(a.create_backup(created["id"], "base")["id"])
        before = [insert(view, login, n) for n in (1, 2, 3)]
        assert len(window_reaches(a, created["id"], before[-1])) == 1

        cluster.procs[f"worker-{host}"].stop(signal.SIGKILL)
        while_down = [insert(view, login, n) for n in (4, 5, 6)]
        cluster.start_worker(host)
        window = window_reaches(a, created["id"], while_down[-1])
        assert len(window) == 1, window  # no gap

        between = while_down[0] + (while_down[1] - while_down[0]) / 2
        point = {"instanceRef": created["id"], "restoreTime": between.isoformat() + "Z"}
        restored = a.create_instance("back", datastore={"type": "postgresql"}, restorePoint=point)
        back = active(a, restored["id"])
        rows = sql(back, root_login(a, restored["id"]), "SELECT n FROM t ORDER BY n")
        assert rows == ["1", "2", "3", "4"]
