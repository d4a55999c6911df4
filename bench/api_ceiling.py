"""What the HTTP stack alone serves on this machine, under the same load as the API rows:
the ceiling any Python API served this way can reach here, measured beside Strongroom's.

Two applications, each served exactly as `strongroom serve` serves its own (the same
``serve_workers``: uvicorn with httptools, the same edge settings, 1 and 2 processes):
- ``bare``: a raw ASGI callable answering every request with the same bytes: uvicorn's
  own cost per request (parse, schedule, write);
- ``fastapi``: one FastAPI ``async`` route (as Strongroom's are) returning the same body
  as a dict in a JSONResponse: the framework's routing and serialization cost.
The body is a real `GET /backups/{id}` answer's size. What Strongroom adds on top of the
``fastapi`` row is its own work (authentication, policy, the metadata query, the view)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bench.api_load import WRK_SCRIPT, LatencyResult, _stop, _wait_until_serving, _wrk
from bench.common import ROOT, WORK, free_port, log

BODY = {
    "backup": {
        "created": "2026-12-06T10:15:30",
        "datastore": {
            "type": "sqlite",
            "version": "3",
            "version_id": "b00000b0-00b0-0b00-00b0-000b000000bb",
        },
        "description": "nightly",
        "id": "a9832168-7541-4536-b8d9-a8a9b79cf1b4",
        "instance_id": "44b277eb-39be-4921-be31-3d61b43651d7",
        "locationRef": "file:///var/lib/strongroom/objects/database_backups/"
        "a9832168-7541-4536-b8d9-a8a9b79cf1b4/manifest.json",
        "name": "nightly-3",
        "parent_id": "c1f0e6b2-7c55-4f0e-9a0f-3f1b2f4e5d6a",
        "project_id": "benchproject",
        "size": 0.01,
        "status": "COMPLETED",
        "updated": "2026-12-06T10:15:41",
        "storage_driver": "local",
        "stored_bytes": 1048576,
        "progress": {"bytes_done": 4194304, "bytes_expected": 4194304},
        "verification": None,
        "drill": None,
        "copies": [],
    }
}
RAW = json.dumps(BODY).encode()
KINDS = ("bare", "fastapi")


async def _bare(scope: dict, receive: object, send: object) -> None:  # type: ignore[type-arg]
    if scope["type"] != "http":
        return
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(RAW)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})  # type: ignore[operator]
    await send({"type": "http.response.body", "body": RAW})  # type: ignore[operator]


def create_bare() -> object:
    return _bare


def create_fastapi() -> object:
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    app = FastAPI()

    @app.get("/v1.0/{project}/backups/{backup_id}")
    async def show(project: str, backup_id: str) -> JSONResponse:
        return JSONResponse(BODY)

    @app.get("/")
    async def root() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def _serve(kind: str, port: int, workers: int) -> None:
    from strongroom.api.server import listen, serve_workers

    serve_workers(f"bench.api_ceiling:create_{kind}", listeners=listen("127.0.0.1", port, workers))


def ceiling_ids(count: int = 1000) -> list[str]:
    """Ids for the request paths (the applications answer any id alike)."""
    return [f"{i:08d}-0000-4000-8000-000000000000" for i in range(count)]


def bench_ceiling(ids: list[str], seconds: int, concurrency: int) -> list[LatencyResult]:
    """``GET /backups/{id}`` against each application in 1 and 2 processes."""
    work = WORK / "api-ceiling"
    work.mkdir(parents=True, exist_ok=True)
    script, token_file, ids_file = work / "get.lua", work / "token", work / "ids"
    script.write_text(WRK_SCRIPT)
    token_file.write_text("unused\n")
    ids_file.write_text("\n".join(ids) + "\n")
    results = []
    for kind in KINDS:
        for workers in (1, 2):
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            label = f"ceiling: {kind}, {workers} process{'es' if workers > 1 else ''}"
            log(f"API {label}: {seconds} s at {concurrency} clients")
            server = subprocess.Popen(
                [sys.executable, "-m", "bench.api_ceiling", kind, str(port), str(workers)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=open(WORK / "api-ceiling.log", "ab"),  # noqa: SIM115
                env=dict(os.environ),
            )
            try:
                _wait_until_serving(base, server, "ceiling")
                args = [str(token_file), "/v1.0/benchproject/backups/", str(ids_file)]
                _wrk(base, script, args, concurrency, 3, "warm-up")
                name = f"GET /backups/{{id}}, {concurrency} clients, {label}"
                results.append(_wrk(base, script, args, concurrency, seconds, name))
            finally:
                _stop(server)
    return results


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] in KINDS:
        _serve(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
    else:
        seconds = int(os.environ.get("BENCH_API_SECONDS", "10"))
        for r in bench_ceiling(ceiling_ids(), seconds, 32):
            print(
                f"{r.name}: {r.rps:,.0f} req/s, median {r.median_ms:.1f} ms, "
                f"p99 {r.p99_ms:.1f} ms, host CPU busy {r.host_cpu_busy:.0%}"
            )
