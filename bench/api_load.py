"""API latency: GET /backups?limit=20 and GET /backups/{id} against a live `strongroom serve`
(embedded default: SQLite metadata, in-process workers) holding 10,000 backups in one project."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import statistics
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.common import ROOT, WORK, free_port, log, run

PROJECT = "benchproject"
STRONGROOM = str(ROOT / ".venv" / "bin" / "strongroom")
SERIAL_REQUESTS = 300


@dataclass
class LatencyResult:
    name: str
    requests: int
    median_ms: float
    p99_ms: float
    rps: float


def populate(data_dir: Path, count: int) -> list[str]:
    """Insert ``count`` COMPLETED backups through the persistence layer (one transaction)."""
    from strongroom.config import Settings
    from strongroom.domain.model import Backup, BackupState
    from strongroom.persistence import migrate
    from strongroom.persistence.unit_of_work import (
        SqlUnitOfWork,
        make_engine,
        unit_of_work_factory,
    )

    settings = Settings(data_dir=data_dir)
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
) -> tuple[list[float], float]:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for p in paths:
        queue.put_nowait(p)
    latencies: list[float] = []

    async def worker() -> None:
        while True:
            try:
                path = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            t0 = time.perf_counter()
            response = await client.get(path)
            latencies.append(time.perf_counter() - t0)
            if response.status_code != 200:
                raise RuntimeError(f"GET {path}: {response.status_code} {response.text[:300]}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - started


def _summary(name: str, latencies: list[float], elapsed: float) -> LatencyResult:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * len(ordered)) - 1)]
    return LatencyResult(
        name, len(ordered), statistics.median(ordered) * 1000, p99 * 1000, len(ordered) / elapsed
    )


def bench_api(count: int, requests: int, concurrency: int) -> list[LatencyResult]:
    data_dir = WORK / "api"
    shutil.rmtree(data_dir, ignore_errors=True)
    log(f"API: inserting {count} backups")
    ids = populate(data_dir, count)
    token = (
        run([STRONGROOM, "token", "create", "--data-dir", data_dir, "--project-id", PROJECT])
        .stdout.strip()
        .split()[-1]
    )
    port = free_port()
    env = dict(os.environ, STRONGROOM_DATASTORES='["sqlite"]')
    server = subprocess.Popen(
        [
            STRONGROOM,
            "serve",
            "--data-dir",
            str(data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(WORK / "api-serve.log", "wb"),  # noqa: SIM115
        env=env,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/", timeout=1).status_code < 500:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(f"strongroom serve did not start (see {WORK}/api-serve.log)")
            time.sleep(0.1)
        rng = random.Random(42)
        list_paths = [f"/v1.0/{PROJECT}/backups?limit=20"] * requests
        show_paths = [f"/v1.0/{PROJECT}/backups/{rng.choice(ids)}" for _ in range(requests)]
        results: list[LatencyResult] = []

        async def go() -> None:
            limits = httpx.Limits(
                max_connections=concurrency, max_keepalive_connections=concurrency
            )
            async with httpx.AsyncClient(
                base_url=base, headers={"X-Auth-Token": token}, limits=limits, timeout=30
            ) as client:
                await _load(client, list_paths[:200] + show_paths[:200], concurrency)  # warm-up
                for name, paths in (
                    ("GET /backups?limit=20", list_paths),
                    ("GET /backups/{id}", show_paths),
                ):
                    lat, elapsed = await _load(client, paths, concurrency)
                    results.append(_summary(f"{name}, {concurrency} clients", lat, elapsed))
                for name, paths in (
                    ("GET /backups?limit=20", list_paths[:SERIAL_REQUESTS]),
                    ("GET /backups/{id}", show_paths[:SERIAL_REQUESTS]),
                ):
                    lat, elapsed = await _load(client, paths, 1)
                    results.append(_summary(f"{name}, 1 client", lat, elapsed))

        log(f"API: {requests} requests per endpoint, {concurrency} concurrent clients")
        asyncio.run(go())
        return results
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
