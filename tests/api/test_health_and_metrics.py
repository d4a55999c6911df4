"""/healthcheck and /readyz on the API port without a token; /metrics on its own listener,
moving when a real SQLite backup and restore run, and showing nothing of a tenant's beyond
ids."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fixtures.service import Caller, Harness, make_harness, wait_for
from strongroom.bootstrap import metrics_registry
from strongroom.observability.listener import MetricsListener

SECRET_KEY = "s3cr3t-key-0f-the-spare-store"
UNREACHABLE_S3 = {
    "name": "far",
    "kind": "s3",
    "endpoint_url": "http://127.0.0.1:9",
    "access_key": "spare-access-key-id",
    "secret_key": SECRET_KEY,
}


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = make_harness(
        tmp_path,
        chunk_size=64 * 1024,
        metrics_port=9779,  # counters on; no listener is bound by the service here
        stores=[
            {"name": "local", "kind": "local"},
            {"name": "spare", "kind": "local", "root": str(tmp_path / "spare")},
        ],
    )
    try:
        yield harness
    finally:
        harness.container.close()


@pytest.fixture
def metrics(h: Harness) -> Iterator[MetricsListener]:
    listener = MetricsListener("127.0.0.1", 0).serve(metrics_registry(h.container))
    try:
        yield listener
    finally:
        listener.close()


def scrape(listener: MetricsListener) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics, parsed by prometheus_client's own parser."""
    r = httpx.get(f"http://127.0.0.1:{listener.port}/metrics", timeout=10)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def source_with_rows(caller: Caller, rows: int = 3000) -> dict[str, Any]:
    inst = caller.wait_instance(caller.create_instance("payroll-db")["id"])
    with sqlite3.connect(inst["connection"]["path"]) as db:
        db.execute("create table t(id integer primary key, body text)")
        db.executemany("insert into t values (?, ?)", [(i, f"row {i} " * 20) for i in range(rows)])
    return inst


# -- /healthcheck ----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/healthcheck", "/health"])
def test_healthcheck_answers_ok_in_plain_text_without_a_token(h: Harness, path: str) -> None:
    r = h.client.get(path)
    assert r.status_code == 200
    assert r.text == "OK"
    assert r.headers["content-type"].startswith("text/plain")
    assert h.client.head(path).status_code == 200


def test_healthcheck_is_503_once_the_process_is_shutting_down(h: Harness) -> None:
    health = h.container.services.health
    assert health is not None
    health.draining.set()
    r = h.client.get("/healthcheck")
    assert r.status_code == 503
    assert r.text == "SHUTTING DOWN"
    assert h.client.get("/readyz").status_code == 503


def test_metrics_is_not_served_on_the_api_port(h: Harness) -> None:
    r = h.client.get("/metrics")
    assert r.status_code == 404  # not 401: the answer says where metrics are
    assert "metrics_port" in r.json()["itemNotFound"]["message"]


def test_other_paths_still_need_a_token(h: Harness) -> None:
    assert h.client.get("/v1.0/proja/backups").status_code == 401
    assert h.client.get("/healthcheck/../v1.0/proja/backups").status_code == 401


# -- /readyz ---------------------------------------------------------------------------


def test_readyz_reports_the_metadata_and_every_store(h: Harness) -> None:
    r = h.client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"metadata": "ok", "stores": {"local": "ok", "spare": "ok"}}


def test_readyz_names_the_store_that_cannot_be_used(h: Harness, tmp_path: Path) -> None:
    spare = tmp_path / "spare"
    if spare.exists():
        os.rmdir(spare)
    spare.write_text("a file where the store's root should be")
    try:
        r = h.client.get("/readyz")
        assert r.status_code == 503
        body = r.json()
        assert body["metadata"] == "ok"
        assert body["stores"]["local"] == "ok"
        assert body["stores"]["spare"].startswith("unreachable")
        assert str(tmp_path) not in r.text  # no paths, only the store's name and a kind
    finally:
        spare.unlink()
    assert h.client.get("/readyz").status_code == 200  # back once the root can be made


def test_readyz_and_metrics_hold_no_secret_of_an_unreachable_store(tmp_path: Path) -> None:
    harness = make_harness(
        tmp_path,
        stores=[{"name": "local", "kind": "local"}, UNREACHABLE_S3],
        readiness_timeout=20,
        metrics_port=9779,
    )
    listener = MetricsListener("127.0.0.1", 0).serve(metrics_registry(harness.container))
    try:
        r = harness.client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["stores"]["local"] == "ok"
        assert r.json()["stores"]["far"] != "ok"
        text = httpx.get(f"http://127.0.0.1:{listener.port}/metrics", timeout=10).text
        for output in (r.text, text):
            assert SECRET_KEY not in output
            assert "spare-access-key-id" not in output
            assert "127.0.0.1:9" not in output
        assert 'strongroom_store_errors_total{kind="TransientStorageError",store="far"}' in text
    finally:
        listener.close()
        harness.container.close()


def test_readyz_answers_within_its_bound_when_a_check_hangs(h: Harness) -> None:
    import threading

    from strongroom.services.health import Health

    release = threading.Event()

    def hanging_ping() -> None:
        release.wait(30)

    health = Health(ping_metadata=hanging_ping, stores=h.container.stores, timeout=0.5)
    try:
        started = time.monotonic()
        report = health.readiness()
        assert time.monotonic() - started < 5
        assert report.metadata == "no answer within 0.5 s"
        assert not report.ready
        assert report.stores == {"local": "ok", "spare": "ok"}
    finally:
        release.set()
        health.close()


def test_readyz_keeps_a_failing_metadata_database_message_out(h: Harness) -> None:
    from strongroom.services.health import Health

    def failing_ping() -> None:
        raise ConnectionError("could not connect to postgresql://strongroom:hunter2@db:5432")

    health = Health(ping_metadata=failing_ping, stores=h.container.stores, timeout=5)
    try:
        report = health.readiness()
    finally:
        health.close()
    assert report.metadata == "unreachable (ConnectionError)"
    assert "hunter2" not in str(report)


# -- /metrics --------------------------------------------------------------------------


def test_metrics_listener_serves_only_metrics_and_needs_no_token(
    h: Harness, metrics: MetricsListener
) -> None:
    base = f"http://127.0.0.1:{metrics.port}"
    assert metrics.port != 8779
    assert httpx.get(f"{base}/metrics", timeout=10).status_code == 200
    for path in ("/", "/v1.0/proja/backups", "/healthcheck", "/metrics/../v1.0"):
        assert httpx.get(f"{base}{path}", timeout=10).status_code == 404
    assert httpx.post(f"{base}/metrics", timeout=10).status_code == 404


def test_metrics_move_when_a_real_backup_and_restore_run(
    h: Harness, metrics: MetricsListener
) -> None:
    before = scrape(metrics)
    assert value(before, "strongroom_metadata_up") == 1
    inst = source_with_rows(h.a)
    size = Path(inst["connection"]["path"]).stat().st_size
    backup = h.a.wait_backup(h.a.create_backup(inst["id"], name="q3-salaries")["id"])
    r = h.a.post(
        "/instances", {"instance": {"name": "r", "restorePoint": {"backupRef": backup["id"]}}}
    )
    restored = h.a.wait_instance(r.json()["instance"]["id"])
    query = "select id, body from t order by id"
    with (
        sqlite3.connect(inst["connection"]["path"]) as src,
        sqlite3.connect(restored["connection"]["path"]) as dst,
    ):
        assert src.execute(query).fetchall() == dst.execute(query).fetchall()
    h.wait_idle()
    after = scrape(metrics)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    done = {"datastore": "sqlite", "outcome": "completed"}
    assert moved("strongroom_backups_finished_total", **done) == 1
    assert moved("strongroom_backup_duration_seconds_count", **done) == 1
    assert moved("strongroom_backup_duration_seconds_sum", **done) > 0
    assert moved("strongroom_restore_duration_seconds_count", **done) == 1
    assert moved("strongroom_backup_read_bytes_total", datastore="sqlite") >= size
    assert moved("strongroom_backup_stored_bytes_total", datastore="sqlite") > 0
    assert moved("strongroom_backups", state="COMPLETED", datastore="sqlite") == 1
    last = value(
        after,
        "strongroom_last_successful_backup_timestamp_seconds",
        instance_id=inst["id"],
        project_id="proja",
    )
    assert abs(last - time.time()) < 120
    assert value(after, "strongroom_jobs_running") == 0
    assert value(after, "strongroom_jobs_queued") == 0
    assert value(after, "strongroom_jobs_in_progress", kind="backup") == 0
    text = httpx.get(f"http://127.0.0.1:{metrics.port}/metrics", timeout=10).text
    # Ids only: no instance or backup name, no file of the tenant's, no token.
    for private in ("payroll-db", "q3-salaries", inst["connection"]["path"], h.a.token):
        assert private not in text


def test_a_backup_whose_store_breaks_ends_failed_and_is_counted(
    h: Harness, metrics: MetricsListener, tmp_path: Path
) -> None:
    inst = source_with_rows(h.a, rows=100)
    before = scrape(metrics)
    spare = tmp_path / "spare"
    h.container.queue.hold()  # type: ignore[attr-defined]
    try:
        backup = h.a.create_backup(inst["id"], storage_driver="spare")
        for entry in spare.iterdir():  # the root becomes a file once the job is queued
            entry.rmdir() if entry.is_dir() else entry.unlink()
        spare.rmdir()
        spare.write_text("not a directory")
    finally:
        h.container.queue.release()  # type: ignore[attr-defined]
    try:
        failed = h.a.wait_backup(backup["id"], states=("FAILED",))
        assert failed["fail_reason"]
        h.wait_idle()
    finally:
        spare.unlink()
    after = scrape(metrics)
    errors = sum(
        v - before.get(k, 0.0)
        for k, v in after.items()
        if k[0] == "strongroom_store_errors_total" and ("store", "spare") in k[1]
    )
    assert errors >= 1
    failed_runs = {"datastore": "sqlite", "outcome": "failed"}
    assert (
        value(after, "strongroom_backups_finished_total", **failed_runs)
        - value(before, "strongroom_backups_finished_total", **failed_runs)
        == 1
    )
    assert value(after, "strongroom_backups", state="FAILED", datastore="sqlite") == 1


def test_a_scrape_during_a_backup_sees_it_running(h: Harness, metrics: MetricsListener) -> None:
    inst = source_with_rows(h.a, rows=100)
    h.container.queue.hold()  # type: ignore[attr-defined]
    try:
        h.a.create_backup(inst["id"])
        samples = scrape(metrics)
        assert value(samples, "strongroom_jobs_queued") == 1
        assert value(samples, "strongroom_backups", state="NEW", datastore="sqlite") == 1
    finally:
        h.container.queue.release()  # type: ignore[attr-defined]
    wait_for(lambda: value(scrape(metrics), "strongroom_jobs_queued") == 0)


def test_a_termination_signal_marks_the_process_draining_before_it_stops(h: Harness) -> None:
    import signal

    from strongroom.api.health import mark_draining_on_signals

    health = h.container.services.health
    assert health is not None
    received: list[int] = []
    original = signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))
    try:
        mark_draining_on_signals(health)  # as uvicorn's handler is in place when it runs
        signal.raise_signal(signal.SIGTERM)
        assert health.draining.is_set()
        assert received == [signal.SIGTERM]  # the server's own handler still runs
    finally:
        signal.signal(signal.SIGTERM, original)
    assert h.client.get("/healthcheck").status_code == 503
