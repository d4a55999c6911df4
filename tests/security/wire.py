"""What every security suite checks on the wire, and a live server with callers and data."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from fixtures.live import LiveServer, start_server

ADMIN_PROJECT = "admin"


def fault_problem(status: int, body: Any) -> str | None:
    """Why ``body`` is not a Trove fault for ``status`` (``None`` when it is one)."""
    if not isinstance(body, dict) or len(body) != 1:
        return f"expected one top-level key, got {body!r:.300}"
    ((name, inner),) = body.items()
    if not isinstance(inner, dict):
        return f"fault {name!r} is not an object: {inner!r:.300}"
    code, message = inner.get("code"), inner.get("message")
    if type(code) is not int or code != status:
        return f"fault code {code!r} is not the status {status}"
    if not isinstance(message, str):
        return f"fault message {message!r:.100} is not a string"
    return None


def assert_fault(response: httpx.Response, status: int | tuple[int, ...]) -> dict[str, Any]:
    """``response`` has one of the ``status`` codes and a Trove fault body; return the body."""
    allowed = (status,) if isinstance(status, int) else status
    assert response.status_code in allowed, (response.status_code, response.text[:500])
    body: dict[str, Any] = response.json()
    problem = fault_problem(response.status_code, body)
    assert problem is None, problem
    return body


def send(caller: Any, method: str, path: str, body: Any) -> Any:
    """One request of an attack table: GET, DELETE, or a POST of ``body``."""
    if method == "GET":
        return caller.get(path)
    if method == "DELETE":
        return caller.delete(path)
    return caller.post(path, body)


def assert_sees_by_id(caller: Any, backup_id: str, instance_id: str) -> None:
    """``caller`` reads the backup and the instance by id, and the instance's list of
    backups holds the backup (an admin looking at another project's)."""
    assert caller.get(f"/backups/{backup_id}").status_code == 200
    assert caller.get(f"/instances/{instance_id}").status_code == 200
    listed = caller.get(f"/instances/{instance_id}/backups").json()["backups"]
    assert backup_id in [b["id"] for b in listed]


def wait_for(predicate: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)
    return value


@dataclass
class LiveCaller:
    """One token on a live server; every response it receives is kept (for secret scans)."""

    http: httpx.Client
    project: str
    token: str
    received: list[bytes] = field(default_factory=list)

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"X-Auth-Token": self.token, "Accept": "application/json"}
        headers.update(kw.pop("headers", {}))
        response = self.http.request(method, f"/v1.0/{self.project}{path}", headers=headers, **kw)
        self.received.append(response.content)
        return response

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> httpx.Response:
        return self.request("POST", path, json=body, **kw)

    def delete(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("DELETE", path, **kw)

    def create_instance(self, name: str = "db", **extra: Any) -> dict[str, Any]:
        body = {"instance": {"name": name, "flavorRef": "1", "datastore": {"type": "sqlite"}}}
        body["instance"].update(extra)
        r = self.post("/instances", body)
        assert r.status_code == 200, r.text
        instance: dict[str, Any] = r.json()["instance"]
        return instance

    def wait_instance(self, instance_id: str) -> dict[str, Any]:
        def active() -> dict[str, Any] | None:
            inst: dict[str, Any] = self.get(f"/instances/{instance_id}").json()["instance"]
            assert inst["status"] != "ERROR", inst
            return inst if inst["status"] == "ACTIVE" else None

        found: dict[str, Any] = wait_for(active)
        return found

    def create_backup(self, instance_id: str, name: str = "bk", **extra: Any) -> dict[str, Any]:
        r = self.post("/backups", {"backup": {"name": name, "instance": instance_id, **extra}})
        assert r.status_code == 202, r.text
        backup: dict[str, Any] = r.json()["backup"]
        return backup

    def wait_backup(self, backup_id: str) -> dict[str, Any]:
        def completed() -> dict[str, Any] | None:
            b: dict[str, Any] = self.get(f"/backups/{backup_id}").json()["backup"]
            assert b["status"] != "FAILED", b
            return b if b["status"] == "COMPLETED" else None

        found: dict[str, Any] = wait_for(completed)
        return found


@dataclass
class Site:
    """A live server, its callers (members of two projects, an admin) and seeded data."""

    server: LiveServer
    root: Path
    http: httpx.Client
    a: LiveCaller
    b: LiveCaller
    admin: LiveCaller
    data: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def callers(self) -> list[LiveCaller]:
        return [self.a, self.b, self.admin]

    def seed(self, caller: LiveCaller, key: str) -> dict[str, Any]:
        """An ACTIVE managed instance with a table, a COMPLETED backup, two strategies."""
        instance = caller.create_instance(f"{key}-db")
        caller.wait_instance(instance["id"])
        backup = caller.create_backup(instance["id"], f"{key}-full")
        backup = caller.wait_backup(backup["id"])
        for spec in (
            {"swift_container": f"{key}-c"},
            {"swift_container": f"{key}-i", "instance_id": instance["id"]},
        ):
            assert caller.post("/backup_strategies", {"backup_strategy": spec}).status_code == 202
        self.data[key] = {"instance": instance, "backup": backup}
        return self.data[key]


def external_sqlite(directory: Path, name: str = "ext.db") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS t (x TEXT)")
        conn.execute("INSERT INTO t VALUES ('row')")
    return path


@contextmanager
def live_site(root: Path, *extra: str) -> Iterator[Site]:
    """A fresh live server under ``root`` (external SQLite files allowed in root/external)."""
    external_sqlite(root / "external")
    server = start_server(root / "data", "--sqlite-root", str(root / "external"), *extra)
    http = httpx.Client(base_url=server.url, timeout=30)
    try:
        site = Site(
            server,
            root,
            http,
            LiveCaller(http, "proja", server.token("proja")),
            LiveCaller(http, "projb", server.token("projb")),
            LiveCaller(http, ADMIN_PROJECT, server.admin_token),
        )
        yield site
    finally:
        http.close()
        server.stop()
