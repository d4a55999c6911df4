"""Trove's user, database and root calls behave the same in the embedded service and in the
scaled-out layout (API processes relay them to the worker of the instance's host): a user
made through the API logs in with psql (or the mariadb client) and reaches its database
only; root enable gives a superuser; another project gets 404; a SQLite instance 501.
Scaled out only: a host whose worker is gone answers 503 in bounded time, and no password
reaches a log."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from fixtures.cluster import Cluster, running_cluster
from fixtures.service import PROJECT_A, PROJECT_B, Caller, make_harness
from support.mariadb import remove_os_users_under, require_mariadb, stop_servers_under
from support.postgresql_service import PG_MAJOR, reachable_dir, wait_status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]

DATASTORES = ["sqlite", "postgresql", "mariadb"]


@dataclass
class Layout:
    name: str
    a: Caller
    b: Caller
    cluster: Cluster | None = None


@pytest.fixture(scope="module", params=["embedded", "scaled-out"])
def layout(request: pytest.FixtureRequest) -> Iterator[Layout]:
    with reachable_dir("sra-") as base, mariadb_servers_stopped(base):
        if request.param == "embedded":
            (base / "service").mkdir(mode=0o711)
            h = make_harness(base / "service", engine_timeout=120, datastores=DATASTORES)
            try:
                yield Layout("embedded", h.a, h.b)
            finally:
                h.container.close()
            return
        env = {
            "STRONGROOM_DATASTORES": json.dumps(DATASTORES),
            "STRONGROOM_ACCOUNT_CALL_TIMEOUT": "5",
        }
        (base / "c").mkdir()  # short: a server socket path has at most ~100 bytes
        with (
            running_cluster(base / "c", extra_env=env) as c,
            httpx.Client(base_url=c.api_urls[0], timeout=60) as first,
            httpx.Client(base_url=c.api_urls[1], timeout=60) as second,
        ):
            yield Layout(
                "scaled-out",
                Caller(first, PROJECT_A, c.token(PROJECT_A)),  # type: ignore[arg-type]
                Caller(second, PROJECT_B, c.token(PROJECT_B)),  # type: ignore[arg-type]
                c,
            )


@contextlib.contextmanager
def mariadb_servers_stopped(base: Path) -> Iterator[None]:
    try:
        yield
    finally:
        stop_servers_under(base)
        remove_os_users_under(base)


@pytest.fixture(scope="module")
def pg(layout: Layout) -> dict[str, Any]:
    created = layout.a.create_instance("pg", datastore={"type": "postgresql"})
    view: dict[str, Any] = wait_status(
        lambda: layout.a.get(f"/instances/{created['id']}").json()["instance"], "ACTIVE"
    )
    return view


def put(caller: Caller, path: str, body: Any) -> Any:
    return caller.client.put(caller.url(path), json=body, headers=caller._headers(None))


def psql(view: dict[str, Any], user: str, password: str, db: str, query: str) -> Any:
    return subprocess.run(
        [
            *("psql", "-X", "-qAt", "-v", "ON_ERROR_STOP=1", "-h", view["ip"][0]),
            *("-p", str(view["connection"]["port"]), "-U", user, "-d", db, "-c", query),
        ],
        env={"PATH": os.environ["PATH"], "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_users_databases_and_root_then_logins(layout: Layout, pg: dict[str, Any]) -> None:
    password = "pw-" + secrets.token_hex(8)
    base = f"/instances/{pg['id']}"
    r = layout.a.post(f"{base}/databases", {"databases": [{"name": "shop"}, {"name": "other"}]})
    assert r.status_code == 202, r.text
    users = [{"name": "clerk", "password": password, "databases": [{"name": "shop"}]}]
    r = layout.a.post(f"{base}/users", {"users": users})
    assert r.status_code == 202, r.text
    assert layout.a.get(f"{base}/users").json() == {
        "users": [{"name": "clerk", "host": "%", "databases": [{"name": "shop"}]}]
    }
    assert layout.a.get(f"{base}/users/clerk/databases").json() == {"databases": [{"name": "shop"}]}
    view = layout.a.get(base).json()["instance"]
    assert view["connection"]["users"] == ["clerk"]
    made = psql(view, "clerk", password, "shop", "CREATE TABLE t (n int); SELECT 7")
    assert made.returncode == 0 and made.stdout.strip() == "7", made.stderr
    assert "permission denied" in psql(view, "clerk", password, "other", "SELECT 1").stderr
    grants = psql(
        view,
        "clerk",
        password,
        "shop",
        "SELECT rolsuper, rolcreaterole, rolcreatedb FROM pg_roles WHERE rolname = current_user",
    )
    assert grants.stdout.strip() == "f|f|f"
    # Errors come back as the same faults.
    assert layout.a.get(f"{base}/users/nobody").status_code == 404
    assert (
        layout.a.post(
            f"{base}/users", {"users": [{"name": "postgres", "password": password}]}
        ).status_code
        == 400
    )

    new_password = "new-" + password
    r = put(layout.a, f"{base}/users", {"users": [{"name": "clerk", "password": new_password}]})
    assert r.status_code == 202, r.text
    assert psql(view, "clerk", new_password, "shop", "SELECT 1").returncode == 0
    assert psql(view, "clerk", password, "shop", "SELECT 1").returncode != 0

    # Trove's update of one user: a new name keeps the password and the grants.
    assert put(layout.a, f"{base}/users/clerk", {"user": {}}).status_code == 400
    spare = {"users": [{"name": "spare", "password": password}]}
    assert layout.a.post(f"{base}/users", spare).status_code == 202
    taken = put(layout.a, f"{base}/users/clerk", {"user": {"name": "spare"}})
    assert taken.status_code == 400 and "already exists" in taken.text
    assert layout.a.delete(f"{base}/users/spare").status_code == 202
    r = put(layout.a, f"{base}/users/clerk", {"user": {"name": "cashier"}})
    assert r.status_code == 202, r.text
    assert psql(view, "cashier", new_password, "shop", "SELECT count(*) FROM t").returncode == 0
    assert "permission denied" in psql(view, "cashier", new_password, "other", "SELECT 1").stderr
    assert psql(view, "clerk", new_password, "shop", "SELECT 1").returncode != 0
    assert layout.a.get(f"{base}/users/clerk").status_code == 404
    third = "third-" + password
    r = put(layout.a, f"{base}/users/cashier", {"user": {"password": third}})
    assert r.status_code == 202, r.text
    assert psql(view, "cashier", third, "shop", "SELECT 1").returncode == 0
    # Trove routes GET …/databases/{name} and answers that it is not implemented.
    assert layout.a.get(f"{base}/databases/shop").status_code == 501
    assert layout.b.get(f"{base}/databases/shop").status_code == 404

    root = layout.a.post(f"{base}/root")
    assert root.status_code == 200, root.text
    name, root_password = root.json()["user"]["name"], root.json()["user"]["password"]
    assert layout.a.get(f"{base}/root").json() == {"rootEnabled": True}
    is_super = psql(view, name, root_password, "postgres", "SHOW is_superuser")
    assert is_super.stdout.strip() == "on", is_super.stderr

    assert psql(view, "cashier", third, "shop", "DROP TABLE t").returncode == 0
    assert layout.a.delete(f"{base}/users/cashier").status_code == 202
    assert layout.a.delete(f"{base}/databases/other").status_code == 202
    assert layout.a.get(f"{base}/databases").json() == {"databases": [{"name": "shop"}]}
    if layout.cluster is not None:  # the relayed passwords are in no process's log
        for proc in layout.cluster.procs.values():
            text = proc.log.read_text(errors="replace")
            for secret in (password, new_password, third, root_password):
                assert secret not in text, proc.name


def test_another_project_gets_404_and_sqlite_501(layout: Layout, pg: dict[str, Any]) -> None:
    base = f"/instances/{pg['id']}"
    for path in ("/users", "/databases", "/root", "/users/clerk"):
        r = layout.b.get(base + path)
        assert r.status_code == 404, (path, r.text)
    assert layout.b.post(base + "/root").status_code == 404
    created = layout.a.create_instance("lite")
    layout.a.wait_instance(created["id"])
    r = layout.a.get(f"/instances/{created['id']}/users")
    assert r.status_code == 501, r.text
    assert "not supported for the 'sqlite' datastore" in r.json()["notImplemented"]["message"]


def mariadb(view: dict[str, Any], user: str, password: str, db: str, query: str) -> Any:
    return subprocess.run(
        [
            *("mariadb", "--no-defaults", "--protocol=TCP", "-h", view["ip"][0]),
            *("-P", str(view["connection"]["port"]), "-u", user, "-N", "-B", "-e", query, db),
        ],
        env={"PATH": os.environ["PATH"], "MYSQL_PWD": password},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_mariadb_user_logs_in_with_its_grants_then_root(layout: Layout) -> None:
    require_mariadb()
    created = layout.a.create_instance("mdb", datastore={"type": "mariadb"})
    base = f"/instances/{created['id']}"
    wait_status(lambda: layout.a.get(base).json()["instance"], "ACTIVE")
    password = "pw-" + secrets.token_hex(8)
    assert layout.a.post(f"{base}/databases", {"databases": [{"name": "shop"}]}).status_code == 202
    users = [{"name": "clerk", "password": password, "databases": [{"name": "shop"}]}]
    assert layout.a.post(f"{base}/users", {"users": users}).status_code == 202
    view = layout.a.get(base).json()["instance"]
    grants = mariadb(view, "clerk", password, "shop", "SHOW GRANTS FOR CURRENT_USER")
    assert grants.returncode == 0, grants.stderr
    lines = grants.stdout.strip().splitlines()
    assert len(lines) == 2 and "GRANT USAGE ON *.*" in lines[0], lines
    assert "GRANT ALL PRIVILEGES ON `shop`.* TO `clerk`@`%`" in lines[1], lines
    assert mariadb(view, "clerk", password, "mysql", "SELECT 1").returncode != 0
    root = layout.a.post(f"{base}/root").json()["user"]
    everything = mariadb(view, "root", root["password"], "mysql", "SHOW GRANTS FOR CURRENT_USER")
    assert "ALL PRIVILEGES ON *.* TO `root`@`%`" in everything.stdout, everything.stderr
    assert layout.b.get(f"{base}/users").status_code == 404
    assert layout.a.delete(base).status_code == 202


def test_a_host_without_its_worker_answers_503(layout: Layout, pg: dict[str, Any]) -> None:
    if layout.cluster is None:
        pytest.skip("the embedded service is its own host")
    [(host,)] = layout.cluster.sql("select host from instances where id = %s", pg["id"])
    layout.cluster.procs[f"worker-{host}"].stop()
    started = time.monotonic()
    r = layout.a.get(f"/instances/{pg['id']}/users")
    assert r.status_code == 503, r.text
    assert "did not answer in time" in r.json()["serviceUnavailable"]["message"]
    assert time.monotonic() - started < 15
