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


@dataclass
class LatencyResult:
    name: str
    requests: int
    median_ms: float
    p99_ms: float
    rps: float
    socket_errors: int = 0  # connect, read, write errors and timeouts, as wrk counts them


def populate(data_dir: Path, count: int, database_url: str | None = None) -> list[str]:
    """Insert ``count`` COMPLETED backups through the persistence layer (one transaction)."""
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
        for i in range(count):
            created = base + timedelta(minutes=i)
            backup_id = str(uuid.uuid4())
            ids.append(backup_id)
            uow.backups.add(
                Backup(
                    id=backup_id,  # type: ignore[arg-type]
                    project_id=PROJECT,  # type: ignore[arg-type]
                    name=f"nightly-{i}",
                    description="benchmark row",
                    instance_id=None,
                    parent_id=None,
                    state=BackupState.COMPLETED,
                    created=created,
                    updated=created,
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
        # and sort (2.6 ms a page instead of 0.9 ms).
        with db.connect() as conn:
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
    out = run(["wrk", *load, "-s", script, base, "--", *args]).stdout
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


def bench_api(
    count: int, seconds: int, concurrency: int, layout: str = "embedded"
) -> list[LatencyResult]:
    data_dir = WORK / f"api-{layout}"
    shutil.rmtree(data_dir, ignore_errors=True)
    with _metadata_database(layout) as database_url:
        env = dict(
            os.environ, STRONGROOM_DATASTORES='["sqlite"]', STRONGROOM_DATA_DIR=str(data_dir)
        )
        if database_url is not None:
            env.update(
                STRONGROOM_DATABASE_URL=database_url,
                STRONGROOM_BROKER_URL=BROKER,
                STRONGROOM_QUEUE_PREFIX="srbench" + uuid.uuid4().hex[:8],
            )
            run([STRONGROOM, "db", "upgrade"], env=env)
        log(f"API ({layout}): inserting {count} backups")
        ids = populate(data_dir, count, database_url)
        token = (
            run([STRONGROOM, "token", "create", "--project-id", PROJECT], env=env)
            .stdout.strip()
            .split()[-1]
        )
        port = free_port()
        if layout == "embedded":
            argv = [STRONGROOM, "serve", "--host", "127.0.0.1", "--port", str(port)]
        else:
            argv = [STRONGROOM, "api", "--port", str(port)]
            argv += ["--workers", str(SCALED_OUT_API_PROCESSES)]
        server = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=open(WORK / f"api-{layout}.log", "wb"),  # noqa: SIM115
            env=env,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_until_serving(base, server, layout)
            return _measure(base, token, ids, seconds, concurrency, layout)
        finally:
            server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()


def _wait_until_serving(base: str, server: subprocess.Popen[bytes], layout: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(base + "/", timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError(f"the {layout} API did not start (see {WORK}/api-{layout}.log)")
        time.sleep(0.1)


def _measure(
    base: str, token: str, ids: list[str], seconds: int, concurrency: int, layout: str
) -> list[LatencyResult]:
    work = WORK / f"api-{layout}-wrk"
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
