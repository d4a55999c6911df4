"""Where the API's own time goes on the read endpoints, in one process, without HTTP.

    .venv/bin/python -m bench.api_profile                 # CPU µs per request, per endpoint
    .venv/bin/python -m bench.api_profile --profile       # and cProfile's top 30 of each
    .venv/bin/python -m bench.api_profile --postgres      # metadata in the machine's PostgreSQL
    BENCH_PROFILE_CALLERS='isoformat|urlencode' ...  --profile   # and who calls those

Seeds as ``bench.api_load`` does (SQLite instances created through the API, then backups in
chains through the persistence layer; 2,000 by default), then sends each endpoint's requests
straight to the ASGI application that `strongroom serve` serves (its middleware, its access
log, written to /dev/null here), one after another on one event loop: what is measured is
Strongroom's own work per request, without uvicorn's parsing or a client. Every answer must
be 200. Ids and names come from a fixed seed, so the ``digest`` of each endpoint's answers
(the same requests in the same order) is the same from one run to the next as long as the
bytes the API sends are: compare it before and after a change."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import hashlib
import io
import logging
import os
import pstats
import random
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from bench.api_load import (
    CHAIN,
    INSTANCES,
    PROJECT,
    _metadata_database,
    create_instances_with,
    populate,
)
from bench.common import WORK, log

SERVER = ("127.0.0.1", 8779)
WARM_UP = 200
Asgi = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


@contextlib.contextmanager
def fixed_ids(seed: int) -> Iterator[None]:
    """``uuid.uuid4()`` from a seeded generator while the data is made, so that a run's
    ids (and with them the answers' bytes) are the same every run."""
    rng = random.Random(seed)
    original = uuid.uuid4
    uuid.uuid4 = lambda: uuid.UUID(int=rng.getrandbits(128), version=4)  # type: ignore[assignment]
    try:
        yield
    finally:
        uuid.uuid4 = original  # type: ignore[assignment]


@dataclass
class Answer:
    status: int
    body: bytes


async def call(app: Asgi, method: str, target: str, token: str) -> Answer:
    """One request as uvicorn hands it to the application (the same scope keys)."""
    path, _, query = target.partition("?")
    headers = [
        (b"host", f"{SERVER[0]}:{SERVER[1]}".encode()),
        (b"user-agent", b"bench"),
        (b"accept", b"*/*"),
        (b"x-auth-token", token.encode()),
    ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": SERVER,
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": method,
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": headers,
        "state": {},
    }
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # the client stays connected
        return {"type": "http.disconnect"}

    answer = Answer(0, b"")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
        elif message["type"] == "http.response.body":
            answer.body += message.get("body", b"")

    await app(scope, receive, send)
    return answer


@contextlib.asynccontextmanager
async def lifespan(app: Asgi) -> Any:
    """The application's startup and shutdown, as uvicorn runs them."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    started = await outbox.get()
    assert started["type"] == "lifespan.startup.complete", started
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


@dataclass
class Measured:
    endpoint: str
    requests: int
    cpu_us: float
    wall_us: float
    digest: str
    stats: str = ""


async def measure(
    app: Asgi, token: str, name: str, targets: list[str], profile: bool, top: int
) -> Measured:
    for target in targets[:WARM_UP]:
        await call(app, "GET", target, token)
    digest = hashlib.sha256()
    profiler = cProfile.Profile() if profile else None
    cpu, wall = time.process_time(), time.perf_counter()
    if profiler is not None:
        profiler.enable()
    for target in targets:
        answer = await call(app, "GET", target, token)
        if answer.status != 200:
            raise RuntimeError(f"{name}: {target} answered {answer.status}: {answer.body!r}")
        digest.update(answer.body)
    if profiler is not None:
        profiler.disable()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stats = ""
    if profiler is not None:
        out = io.StringIO()
        ps = pstats.Stats(profiler, stream=out)
        ps.sort_stats("tottime").print_stats(top)
        ps.sort_stats("cumulative").print_stats(top)
        if os.environ.get("BENCH_PROFILE_CALLERS"):
            ps.print_callers(os.environ["BENCH_PROFILE_CALLERS"])
        stats = out.getvalue()
    n = len(targets)
    return Measured(name, n, cpu / n * 1e6, wall / n * 1e6, digest.hexdigest()[:16], stats)


async def measure_all(
    app: Asgi, token: str, endpoints: dict[str, list[str]], args: argparse.Namespace
) -> list[Measured]:
    rounds: dict[str, list[Measured]] = {name: [] for name in endpoints}
    async with lifespan(app):
        for _ in range(args.rounds):  # in turn, so that a noisy moment spreads over all
            for name, targets in endpoints.items():
                m = await measure(app, token, name, targets, args.profile, args.top)
                rounds[name].append(m)
    # The least CPU of the rounds: the host is shared, and the others only add to it.
    return [min(ms, key=lambda m: m.cpu_us) for ms in rounds.values()]


def run(args: argparse.Namespace, database_url: str | None) -> list[Measured]:
    from fastapi.testclient import TestClient

    from strongroom import logformat
    from strongroom.api.app import create_app
    from strongroom.bootstrap import build, edge_settings
    from strongroom.config import Settings

    data_dir = WORK / "api-profile"
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    logformat.configure()  # as `strongroom serve`: one access line per request, formatted
    sink = open(os.devnull, "w")  # noqa: SIM115 - for the whole run
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(sink)
    settings = Settings(
        data_dir=data_dir, database_url=database_url, datastores=["sqlite"], metrics_port=0
    )
    with fixed_ids(args.seed):
        container = build(settings, role="embedded", run_scheduler=False)
        try:
            app = create_app(container.services, edge_settings(settings))
            token = container.services.tokens.create(
                project_id=PROJECT, user_id=PROJECT, roles=("member",)
            ).token
            log(f"api profile: {INSTANCES} instances, {args.backups} backups")
            seeder = TestClient(
                app, base_url=f"http://testserver/v1.0/{PROJECT}", headers={"X-Auth-Token": token}
            )
            instance_ids = create_instances_with(seeder, INSTANCES)
            ids = populate(data_dir, args.backups, database_url, instance_ids)
            rng = random.Random(args.seed)
            backups = f"/v1.0/{PROJECT}/backups"
            n = args.requests
            endpoints = {
                "GET /backups?limit=20": [f"{backups}?limit=20"] * n,
                "GET /backups/{id}": [f"{backups}/{rng.choice(ids)}" for _ in range(n)],
                "GET /backups?instance_id=": [f"{backups}?limit=20&instance_id={instance_ids[0]}"]
                * n,
            }
            chosen = {k: v for k, v in endpoints.items() if not args.only or args.only in k}
            results = asyncio.run(measure_all(app, token, chosen, args))
        finally:
            container.close()
    sink.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--backups", type=int, default=2000, help="backups seeded (2000)")
    parser.add_argument("--requests", type=int, default=2000, help="per endpoint (2000)")
    parser.add_argument("--rounds", type=int, default=3, help="of each; the least CPU is shown")
    parser.add_argument("--profile", action="store_true", help="cProfile's top of each")
    parser.add_argument("--top", type=int, default=30, help="functions shown (30)")
    parser.add_argument("--only", help="only the endpoints whose name contains this")
    parser.add_argument("--postgres", action="store_true", help="metadata in PostgreSQL")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    assert args.backups >= CHAIN * INSTANCES, "at least one chain per instance"
    layout = "scaled-out" if args.postgres else "embedded"
    with _metadata_database(layout) as database_url:
        results = run(args, database_url)
    metadata = "PostgreSQL" if args.postgres else "SQLite"
    print(
        f"\n{args.backups} backups, {metadata} metadata, requests one after another, "
        f"least CPU of {args.rounds} rounds"
    )
    print(f"{'endpoint':<28} {'requests':>8} {'CPU µs/req':>11} {'wall µs/req':>12}  digest")
    for m in results:
        print(f"{m.endpoint:<28} {m.requests:>8} {m.cpu_us:>11.0f} {m.wall_us:>12.0f}  {m.digest}")
    for m in results:
        if m.stats:
            print(f"\n===== {m.endpoint}\n{m.stats}")


if __name__ == "__main__":
    main()
