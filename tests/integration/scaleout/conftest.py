"""A scaled-out Strongroom on this machine: metadata in the real PostgreSQL (a fresh
database per test module), jobs over the real RabbitMQ (queue names unique per run), two
`strongroom api` processes and two `strongroom worker` processes with different host ids."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest

from fixtures.live import free_port

ADMIN_DSN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
BROKER = "amqp://guest:guest@127.0.0.1:5672//"


def _reachable() -> str | None:
    try:
        with psycopg.connect(ADMIN_DSN, connect_timeout=3):
            pass
    except Exception as exc:
        return f"PostgreSQL on 127.0.0.1:5432: {exc}"
    import socket

    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=3).close()
    except OSError as exc:
        return f"RabbitMQ on 127.0.0.1:5672: {exc}"
    return None


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@dataclass
class Cluster:
    root: Path
    env: dict[str, str]
    database: str
    procs: dict[str, Proc] = field(default_factory=dict)
    api_urls: list[str] = field(default_factory=list)

    def run(
        self, *args: str, extra_env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**self.env, **(extra_env or {})}
        return subprocess.run(
            [sys.executable, "-m", "strongroom", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def start(
        self, name: str, *args: str, ready: str, extra_env: dict[str, str] | None = None
    ) -> Proc:
        log = self.root / f"{name}.log"
        env = {**self.env, **(extra_env or {})}
        process = subprocess.Popen(
            [sys.executable, "-m", "strongroom", *args],
            env=env,
            stdout=open(log, "wb"),  # noqa: SIM115 - the process writes until it stops
            stderr=subprocess.STDOUT,
        )
        proc = Proc(name, process, log)
        self.procs[name] = proc
        deadline = time.monotonic() + 90
        while ready not in log.read_text(errors="replace"):
            if process.poll() is not None:
                raise AssertionError(f"{name} exited: {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{name} not ready: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        return proc

    def start_api(self, name: str, extra_env: dict[str, str] | None = None) -> str:
        port = free_port()
        self.start(
            name,
            "api",
            "--port",
            str(port),
            "--workers",
            "1",
            ready="Strongroom API serving",
            extra_env=extra_env,
        )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(url + "/", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} did not answer: {self.procs[name].log.read_text()[-2000:]}"
                )
            time.sleep(0.1)

    def start_worker(self, host_id: str) -> Proc:
        data = self.root / f"worker-{host_id}"
        return self.start(
            f"worker-{host_id}",
            "worker",
            "--host-id",
            host_id,
            "--data-dir",
            str(data),
            ready="ready.",
        )

    def token(self, project: str, role: str = "member") -> str:
        out = self.run("token", "create", "--project-id", project, "--role", role)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    def sql(self, query: str, *params: object) -> list[tuple]:
        with psycopg.connect(
            f"host=127.0.0.1 port=5432 user=postgres dbname={self.database}"
        ) as db:
            return db.execute(query, params).fetchall()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    problem = _reachable()
    if problem:
        pytest.fail(f"scaled-out tests need the machine's services: {problem}")
    root = Path(tmp_path_factory.mktemp("scaleout"))
    root.chmod(0o711)
    database = "strongroom_test_" + uuid.uuid4().hex[:10]
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'create database "{database}"')
    roots = root / "sqlite-roots"
    roots.mkdir()
    shared_store = root / "objects"
    env = dict(os.environ)
    env.update(
        {
            "STRONGROOM_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{database}",
            "STRONGROOM_BROKER_URL": BROKER,
            "STRONGROOM_QUEUE_PREFIX": "sr" + uuid.uuid4().hex[:10],
            "STRONGROOM_MASTER_KEY_FILE": str(root / "master.key"),
            "STRONGROOM_DATA_DIR": str(root / "api"),
            "STRONGROOM_STORES": json.dumps(
                [{"name": "local", "kind": "local", "root": str(shared_store)}]
            ),
            "STRONGROOM_DATASTORES": '["sqlite"]',
            "STRONGROOM_SQLITE_ROOTS": f'["{roots}"]',
            "STRONGROOM_HEARTBEAT_SECONDS": "0.5",
            "STRONGROOM_JOB_LEASE_SECONDS": "4",
            "STRONGROOM_REAPER_INTERVAL_SECONDS": "0.5",
            "STRONGROOM_REDISPATCH_AFTER_SECONDS": "2",
            "STRONGROOM_DISPATCH_DEADLINE_SECONDS": "120",
        }
    )
    c = Cluster(root, env, database)
    upgraded = c.run("db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    try:
        c.start_worker("h1")
        c.start_worker("h2")
        c.api_urls = [c.start_api("api-1"), c.start_api("api-2")]
        yield c
    finally:
        c.stop_all()
        with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'drop database if exists "{database}" with (force)')
