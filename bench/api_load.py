"""API latency: GET /backups?limit=20 and GET /backups/{id} with 10,000 backups in one project,
against `strongroom serve` (embedded default: SQLite metadata, in-process workers) and against
`strongroom api --workers 2` (scaled out: metadata in the machine's PostgreSQL, RabbitMQ).

The load comes from `wrk` (C, one event loop per thread), so the client takes little of the
two cores the server shares with it; a Lua script adds the token and, for single backups, a
random id per request."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.common import ROOT, WORK, free_port, log, run

PROJECT = "benchproject"
STRONGROOM = str(ROOT / ".venv" / "bin" / "strongroom")
WARM_UP_SECONDS = 3
# The scaled-out layout uses the machine's PostgreSQL and RabbitMQ (a fresh database and
# queue prefix per run, dropped afterwards).
ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"
SCALED_OUT_API_PROCESSES = 2
SERVE_WORKERS = 2  # `serve --workers`, the embedded default in several processes
API_ENDPOINTS = ("GET /backups?limit=20", "GET /backups/{id}", "GET /backups?instance_id=")


@dataclass
class LatencyResult:
    name: str
    requests: int
    median_ms: float
    p99_ms: float
    rps: float
    socket_errors: int = 0  # connect, read, write errors and timeouts, as wrk counts them
    host_cpu_busy: float = 0.0  # share of all the host's cores busy during the run (0-1)


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


INSTANCES = 20
CHAIN = 7  # a full and six incrementals, as a weekly full with daily incrementals


def create_instances(base: str, token: str, count: int = INSTANCES) -> list[str]:
    """Real managed SQLite instances, created through the API as a tenant does; returns
    their ids once every one is ACTIVE."""
    headers = {"X-Auth-Token": token}
    with httpx.Client(base_url=f"{base}/v1.0/{PROJECT}", headers=headers, timeout=30) as api:
        return create_instances_with(api, count)


def create_instances_with(api: httpx.Client, count: int = INSTANCES) -> list[str]:
    """:func:`create_instances` through a client whose base URL is the project's and which
    sends the token."""
    ids = []
    for i in range(count):
        body = {
            "instance": {
                "name": f"app-{i}",
                "flavorRef": "1",
                "volume": {"size": 1},
                "datastore": {"type": "sqlite", "version": "3"},
            }
        }
        response = api.post("/instances", json=body)
        response.raise_for_status()
        ids.append(response.json()["instance"]["id"])
    deadline = time.monotonic() + 120
    for instance_id in ids:
        while True:
            status = api.get(f"/instances/{instance_id}").json()["instance"]["status"]
            if status == "ACTIVE":
                break
            if status == "ERROR" or time.monotonic() > deadline:
                raise RuntimeError(f"instance {instance_id} did not become ACTIVE: {status}")
            time.sleep(0.05)
    return ids


def populate(
    data_dir: Path, count: int, database_url: str | None = None, instance_ids: list[str] = ()
) -> list[str]:
    """Insert ``count`` COMPLETED backups through the persistence layer (one transaction):
    chains of ``CHAIN`` (a full, then incrementals each the child of the one before) of the
    given instances in turn, each with its instance's datastore version, as Trove's own
    table holds them."""
    from strongroom.config import Settings
    from strongroom.domain.model import Backup, BackupState
    from strongroom.persistence import migrate
    from strongroom.persistence.unit_of_work import (
        SqlUnitOfWork,
        make_engine,
        unit_of_work_factory,
    )

    settings = Settings(data_dir=data_dir, database_url=database_url)
    data_dir.mkdir(parents=True, exist_ok=True)
    db = make_engine(settings.metadata_url)
    migrate.upgrade(db)
    sessions = unit_of_work_factory(db)
    base = datetime(2024, 1, 1, tzinfo=UTC).replace(tzinfo=None)
    ids: list[str] = []
    with SqlUnitOfWork(sessions, write=True) as uow:
        versions = {}
        for instance_id in instance_ids:
            instance = uow.instances.find(instance_id)
            assert instance is not None, instance_id
            versions[instance_id] = instance.datastore_version_id
        parent: dict[str, str | None] = dict.fromkeys(instance_ids)
        for i in range(count):
            created = base + timedelta(minutes=i)
            backup_id = str(uuid.uuid4())
            ids.append(backup_id)
            instance_id = instance_ids[(i // CHAIN) % len(instance_ids)] if instance_ids else None
            parent_id = None
            if instance_id is not None:
                parent_id = parent[instance_id] if i % CHAIN else None
                parent[instance_id] = backup_id
            uow.backups.add(
                Backup(
                    id=backup_id,  # type: ignore[arg-type]
                    project_id=PROJECT,  # type: ignore[arg-type]
                    name=f"nightly-{i}",
                    description="benchmark row",
                    instance_id=instance_id,  # type: ignore[arg-type]
                    parent_id=parent_id,  # type: ignore[arg-type]
                    state=BackupState.COMPLETED,
                    created=created,
                    updated=created,
                    datastore_version_id=versions.get(instance_id) if instance_id else None,
                    size_gb=0.01,
                    location_ref=f"file:///nonexistent/{backup_id}/manifest.json",
                    store_name="local",
                    container="database_backups",
                    stored_bytes=10_000_000,
                )
            )
        uow.quotas.set_in_use(PROJECT, "backups", count)
        uow.commit()
    if db.dialect.name == "postgresql":
        # Statistics, as autovacuum gathers them on a live database within a minute: a
        # table loaded just now has none, and its list pages were planned as a full scan
        # and sort (2.6 ms a page instead of 0.9 ms). Committed: statistics gathered in a
        # transaction that rolls back (a bare ``connect()`` block) are rolled back with it.
        with db.begin() as conn:
            conn.exec_driver_sql("ANALYZE backups")
    db.dispose()
    return ids


WRK_SCRIPT = """
local token, path, ids
function init(args)
  token = io.open(args[1]):read("*l")
  path = args[2]
  if args[3] then
    ids = {}
    for line in io.lines(args[3]) do ids[#ids + 1] = line end
  end
end
function request()
  local p = path
  if ids then p = path .. ids[math.random(#ids)] end
  return wrk.format("GET", p, {["X-Auth-Token"] = token})
end
"""
UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(
    base: str, script: Path, args: list[str], connections: int, seconds: int, name: str
) -> LatencyResult:
    threads = min(2, connections)
    load = [f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    busy_before, total_before = _cpu_times()
    out = run(["wrk", *load, "-s", script, base, "--", *args]).stdout
    busy_after, total_after = _cpu_times()
    failed = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if failed:
        raise RuntimeError(f"{name}: {failed.group(1)} requests were refused:\n{out}")
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    return LatencyResult(
        name,
        int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
        _latency_ms(out, "50"),
        _latency_ms(out, "99"),
        float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
        (busy_after - busy_before) / max(1, total_after - total_before),
    )


def _latency_ms(wrk_output: str, percentile: str) -> float:
    match = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", wrk_output, re.M)
    if match is None:
        raise RuntimeError(f"no {percentile}th percentile in wrk's output:\n{wrk_output}")
    return float(match.group(1)) * UNITS_MS[match.group(2)]


@contextlib.contextmanager
def _metadata_database(layout: str) -> Iterator[str | None]:
    """``None`` (SQLite in the data dir) for the embedded layout; a fresh PostgreSQL
    database, dropped afterwards, for the scaled-out one."""
    if layout == "embedded":
        yield None
        return
    import psycopg

    name = "strongroom_bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start(argv: list[str], env: dict[str, str], log_name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        stdout=subprocess.DEVNULL,
        stderr=open(WORK / log_name, "ab"),
        env=env,
    )


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()


def bench_api(
    count: int, seconds: int, concurrency: int, layout: str = "embedded", serve_workers: int = 1
) -> list[LatencyResult]:
    label = layout if serve_workers == 1 else f"{layout}, serve --workers {serve_workers}"
    slug = layout if serve_workers == 1 else f"{layout}-w{serve_workers}"
    data_dir = WORK / f"api-{slug}"
    shutil.rmtree(data_dir, ignore_errors=True)
    (WORK / f"api-{slug}.log").unlink(missing_ok=True)
    with _metadata_database(layout) as database_url:
        env = dict(
            os.environ, STRONGROOM_DATASTORES='["sqlite"]', STRONGROOM_DATA_DIR=str(data_dir)
        )
        if database_url is not None:
            env["STRONGROOM_DATABASE_URL"] = database_url
            run([STRONGROOM, "db", "upgrade"], env=env)
        token = (
            run([STRONGROOM, "token", "create", "--project-id", PROJECT], env=env)
            .stdout.strip()
            .split()[-1]
        )
        # The instances are made by the embedded service on the same metadata (its
        # in-process workers create the SQLite files), which then stops.
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        serve = [STRONGROOM, "serve", "--host", "127.0.0.1", "--port", str(port)]
        seeder = _start(serve, env, f"api-{slug}.log")
        try:
            _wait_until_serving(base, seeder, slug)
            log(f"API ({label}): creating {INSTANCES} SQLite instances")
            instance_ids = create_instances(base, token)
        finally:
            _stop(seeder)
        log(f"API ({label}): inserting {count} backups in chains of {CHAIN}")
        ids = populate(data_dir, count, database_url, instance_ids)
        if database_url is not None:
            env.update(
                STRONGROOM_BROKER_URL=BROKER,
                STRONGROOM_QUEUE_PREFIX="srbench" + uuid.uuid4().hex[:8],
            )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        if layout == "embedded":
            argv = [STRONGROOM, "serve", "--host", "127.0.0.1", "--port", str(port)]
            if serve_workers > 1:
                argv += ["--workers", str(serve_workers)]
        else:
            argv = [STRONGROOM, "api", "--port", str(port)]
            argv += ["--workers", str(SCALED_OUT_API_PROCESSES)]
        since = (WORK / f"api-{slug}.log").stat().st_size  # the seeder's lines come before
        server = _start(argv, env, f"api-{slug}.log")
        try:
            processes = serve_workers if layout == "embedded" else SCALED_OUT_API_PROCESSES
            _wait_until_serving(base, server, slug, processes, since)
            return _measure(base, token, ids, instance_ids, seconds, concurrency, label)
        finally:
            _stop(server)


def _wait_until_serving(
    base: str, server: subprocess.Popen[bytes], layout: str, processes: int = 0, since: int = 0
) -> None:
    """Until the server answers and each of its ``processes`` API processes has said in its
    log, past byte ``since``, that it is ready: wrk keeps its connections for the whole run,
    so those made while one process is still starting would all go to the others."""
    deadline = time.monotonic() + 60
    log_file = WORK / f"api-{layout}.log"
    while True:
        try:
            if httpx.get(base + "/", timeout=1).status_code < 500:
                if processes == 0:
                    return
                with log_file.open("rb") as logged:
                    logged.seek(since)
                    if logged.read().count(b" API process ") >= processes:
                        return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError(f"the {layout} API did not start (see {WORK}/api-{layout}.log)")
        time.sleep(0.1)


def _measure(
    base: str,
    token: str,
    ids: list[str],
    instance_ids: list[str],
    seconds: int,
    concurrency: int,
    layout: str,
) -> list[LatencyResult]:
    work = WORK / f"api-{layout.replace(', serve --workers ', '-w')}-wrk"
    work.mkdir(exist_ok=True)
    script, token_file, ids_file = work / "get.lua", work / "token", work / "ids"
    script.write_text(WRK_SCRIPT)
    token_file.write_text(token + "\n")
    token_file.chmod(0o600)
    ids_file.write_text("\n".join(ids) + "\n")
    backups = f"/v1.0/{PROJECT}/backups"
    endpoints = [
        ("GET /backups?limit=20", [str(token_file), backups + "?limit=20"]),
        ("GET /backups/{id}", [str(token_file), backups + "/", str(ids_file)]),
        (
            "GET /backups?instance_id=",
            [str(token_file), backups + f"?limit=20&instance_id={instance_ids[0]}"],
        ),
    ]
    log(f"API ({layout}): {seconds} s per endpoint at {concurrency} concurrent clients, then 1")
    for _name, args in endpoints:  # warm-up: connections, caches, the first compilations
        _wrk(base, script, args, concurrency, WARM_UP_SECONDS, "warm-up")
    results = [
        _wrk(base, script, args, concurrency, seconds, f"{name}, {concurrency} clients, {layout}")
        for name, args in endpoints
    ]
    results += [
        _wrk(base, script, args, 1, max(1, seconds // 2), f"{name}, 1 client, {layout}")
        for name, args in endpoints
    ]
    return results
