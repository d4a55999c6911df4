"""Metrics in the scaled-out layout: `strongroom api --workers 2` sums both processes'
counters on one listener (prometheus_client's multi-process mode), the metadata series are
service-wide, and a worker's listener counts the backups and restores it ran."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from fixtures.cluster import Cluster
from fixtures.live import free_port
from fixtures.service import wait_for

FAR = {
    "name": "far",
    "kind": "s3",
    "endpoint_url": "http://127.0.0.1:9",
    "access_key": "k",
    "secret_key": "far-secret-key",
}


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert r.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_two_api_processes_and_a_worker_report_the_right_counts(cluster: Cluster) -> None:
    root: Path = cluster.root
    api_port, api_metrics = free_port(), free_port()
    stores = [{"name": "local", "kind": "local", "root": str(root / "objects")}, FAR]
    cluster.start(
        "api-metrics",
        "api",
        "--port",
        str(api_port),
        "--workers",
        "2",
        "--metrics-port",
        str(api_metrics),
        ready="Strongroom API serving",
        extra_env={"STRONGROOM_STORES": json.dumps(stores)},
    )
    worker_metrics = free_port()
    cluster.start(
        "worker-h3",
        "worker",
        "--host-id",
        "h3",
        "--data-dir",
        str(root / "worker-h3"),
        "--metrics-port",
        str(worker_metrics),
        ready="ready.",
    )
    url = f"http://127.0.0.1:{api_port}"
    wait_for(lambda: _answers(url), timeout=60)
    project = "m" + uuid.uuid4().hex[:10]
    headers = {"X-Auth-Token": cluster.token(project, "admin")}
    base = f"{url}/v1.0/{project}"

    # A real backup and restore on worker h3, compared row for row.
    r = httpx.post(
        f"{base}/instances",
        json={"instance": {"name": "src", "datastore": {"type": "sqlite"}, "host": "h3"}},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    source = _wait_instance(base, headers, r.json()["instance"]["id"])
    with sqlite3.connect(source["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, body text)")
        db.executemany("insert into t values (?, ?)", [(i, f"row {i}") for i in range(2000)])
    # Refused requests to an unreachable store, on fresh connections: each API process
    # counts its own, the listener shows the sum.
    refused = 8
    for _ in range(refused):
        with httpx.Client(timeout=60) as one_connection:
            r = one_connection.post(
                f"{base}/backups",
                json={"backup": {"name": "x", "instance": source["id"], "storage_driver": "far"}},
                headers=headers,
            )
            assert r.status_code == 500, r.text  # Trove's "Cannot connect to Swift."
    r = httpx.post(
        f"{base}/backups",
        json={"backup": {"name": "b", "instance": source["id"]}},
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 202, r.text
    backup_id = r.json()["backup"]["id"]
    wait_for(
        lambda: (
            httpx.get(f"{base}/backups/{backup_id}", headers=headers, timeout=10).json()["backup"][
                "status"
            ]
            == "COMPLETED"
        ),
        timeout=90,
    )
    r = httpx.post(
        f"{base}/instances",
        json={
            "instance": {
                "name": "copy",
                "host": "h3",
                "restorePoint": {"backupRef": backup_id},
            }
        },
        headers=headers,
        timeout=30,
    )
    assert r.status_code == 200, r.text
    copy = _wait_instance(base, headers, r.json()["instance"]["id"])
    query = "select id, body from t order by id"
    with (
        sqlite3.connect(source["connection"]["path"]) as src,
        sqlite3.connect(copy["connection"]["path"]) as dst,
    ):
        assert src.execute(query).fetchall() == dst.execute(query).fetchall()

    api = scrape(api_metrics)
    far_errors = sum(
        v
        for (name, labels), v in api.items()
        if name == "strongroom_store_errors_total" and ("store", "far") in labels
    )
    # Each API process checked the store once as it started, then served some of the
    # refused requests: the one listener shows the sum over both processes.
    assert far_errors == refused + 2
    metrics_dir = root / "api" / "metrics" / f"api-{api_metrics}"
    assert metrics_dir.stat().st_mode & 0o777 == 0o700
    assert value(api, "strongroom_workers_live") >= 3  # h1, h2 (the module's) and h3
    assert value(api, "strongroom_backups", state="COMPLETED", datastore="sqlite") >= 1
    last = value(
        api,
        "strongroom_last_successful_backup_timestamp_seconds",
        instance_id=source["id"],
        project_id=project,
    )
    assert abs(last - time.time()) < 300
    worker = scrape(worker_metrics)
    done = {"datastore": "sqlite", "outcome": "completed"}
    assert value(worker, "strongroom_backups_finished_total", **done) == 1
    assert value(worker, "strongroom_restore_duration_seconds_count", **done) == 1
    assert value(worker, "strongroom_backup_read_bytes_total", datastore="sqlite") > 0
    # The same service-wide series on every listener.
    assert value(worker, "strongroom_backups", state="COMPLETED", datastore="sqlite") == value(
        api, "strongroom_backups", state="COMPLETED", datastore="sqlite"
    )


def _answers(url: str) -> bool:
    try:
        return httpx.get(url + "/healthcheck", timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _wait_instance(base: str, headers: dict[str, str], iid: str) -> dict:
    def active() -> dict | None:
        inst = httpx.get(f"{base}/instances/{iid}", headers=headers, timeout=10).json()["instance"]
        assert inst["status"] != "ERROR", inst.get("fault")
        return inst if inst["status"] == "ACTIVE" else None

    return wait_for(active, timeout=90)
