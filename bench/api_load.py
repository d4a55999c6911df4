"""API latency: GET /backups?limit=20 and GET /backups/{id} with 10,000 backups in one project,
against `strongroom serve` (embedded default: SQLite metadata, in-process workers) and against
`strongroom api --workers 2` (scaled out: metadata in the machine's PostgreSQL, RabbitMQ)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import statistics
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
SERIAL_REQUESTS = 300
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
    retried: int = 0  # requests sent again after the connection was closed under them


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
    db.dispose()
    return ids


async def _load(
    client: httpx.AsyncClient, paths: list[str], concurrency: int
) -> tuple[list[float], float, int]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in paths:
        queue.put_nowait(p)
    latencies: list[float] = []
    errors: list[str] = []

    async def worker() -> None:
        while True:
            try:
                path = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            try:
                response = await client.get(path)
            except httpx.TransportError:
                # A keep-alive connection the server closed as it was reused: counted,
                # then the request is sent again (its latency includes both tries).
                errors.append(path)
                response = await client.get(path)
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started, len(errors)


def _summary(name: str, latencies: list[float], elapsed: float, retried: int) -> LatencyResult:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    return LatencyResult(
        name,
        len(ordered),
        statistics.median(ordered) * 1000,
        p99 * 1000,
        len(ordered) / elapsed,
        retried,
    )


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
    count: int, requests: int, concurrency: int, layout: str = "embedded"
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
            return _measure(base, token, ids, requests, concurrency, layout)
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
    base: str, token: str, ids: list[str], requests: int, concurrency: int, layout: str
) -> list[LatencyResult]:
    rng = random.Random(42)
    list_paths = [f"/v1.0/{PROJECT}/backups?limit=20"] * requests
    show_paths = [f"/v1.0/{PROJECT}/backups/{rng.choice(ids)}" for _ in range(requests)]
    results: list[LatencyResult] = []

    async def go() -> None:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(
            base_url=base, headers={"X-Auth-Token": token}, limits=limits, timeout=30
        ) as client:
            await _load(client, list_paths[:200] + show_paths[:200], concurrency)  # warm-up
            for name, paths in (
                ("GET /backups?limit=20", list_paths),
                ("GET /backups/{id}", show_paths),
            ):
                lat, elapsed, retried = await _load(client, paths, concurrency)
                results.append(
                    _summary(f"{name}, {concurrency} clients, {layout}", lat, elapsed, retried)
                )
            for name, paths in (
                ("GET /backups?limit=20", list_paths[:SERIAL_REQUESTS]),
                ("GET /backups/{id}", show_paths[:SERIAL_REQUESTS]),
            ):
                lat, elapsed, retried = await _load(client, paths, 1)
                results.append(_summary(f"{name}, 1 client, {layout}", lat, elapsed, retried))

    log(f"API ({layout}): {requests} requests per endpoint, {concurrency} concurrent clients")
    asyncio.run(go())
    return results
