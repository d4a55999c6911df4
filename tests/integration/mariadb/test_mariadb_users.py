"""Trove's user, database and root calls on a managed MariaDB instance, through the API,
then logins with the mariadb client over TCP: a user reaches its database and not another;
root@'%' has every privilege; another project gets 404; reserved names 400."""

from __future__ import annotations

import os
import secrets
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from fixtures.service import Caller, Harness, make_harness, wait_for
from support.mariadb import require_mariadb, scratch_root

pytestmark = pytest.mark.integration

PASSWORD = "pw-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    require_mariadb()
    with scratch_root("sr-mdb-users-") as path:
        yield path


@pytest.fixture(scope="module")
def h(base: Path) -> Iterator[Harness]:
    harness = make_harness(base, datastores=["sqlite", "mariadb"])
    try:
        yield harness
    finally:
        harness.container.close()


@pytest.fixture(scope="module")
def mdb(h: Harness) -> dict[str, Any]:
    created = h.a.create_instance("mdb", datastore={"type": "mariadb"})

    def active() -> dict[str, Any] | None:
        view: dict[str, Any] = h.a.get(f"/instances/{created['id']}").json()["instance"]
        assert view["status"] != "ERROR", view.get("fault")
        return view if view["status"] == "ACTIVE" else None

    result: dict[str, Any] = wait_for(active, timeout=180, interval=0.2)
    return result


def put(caller: Caller, path: str, body: Any) -> Any:
    return caller.client.put(caller.url(path), json=body, headers=caller._headers(None))


def user_path(name: str, host: str) -> str:
    """As troveclient's quote_user_host makes it."""
    return quote(f"{name}@{host}").replace(".", "%2e")


def client(view: dict[str, Any], user: str, password: str, db: str, query: str) -> Any:
    """``query`` run by the mariadb client over TCP as ``user`` (password in the
    environment's option file, never on the command line)."""
    return subprocess.run(
        [
            "mariadb",
            "--no-defaults",
            "--protocol=TCP",
            "-h",
            view["ip"][0],
            "-P",
            str(view["connection"]["port"]),
            "-u",
            user,
            "-N",
            "-B",
            "-e",
            query,
            db,
        ],
        env={"PATH": os.environ["PATH"], "MYSQL_PWD": password},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_user_and_database_calls_then_login_reaches_only_its_database(
    h: Harness, mdb: dict[str, Any]
) -> None:
    base = f"/instances/{mdb['id']}"
    r = h.a.post(f"{base}/databases", {"databases": [{"name": "shop"}, {"name": "other"}]})
    assert r.status_code == 202, r.text
    r = h.a.post(
        f"{base}/users",
        {"users": [{"name": "clerk", "password": PASSWORD, "databases": [{"name": "shop"}]}]},
    )
    assert r.status_code == 202, r.text
    assert h.a.get(f"{base}/databases").json() == {
        "databases": [{"name": "other"}, {"name": "shop"}]
    }
    assert h.a.get(f"{base}/users").json() == {
        "users": [{"name": "clerk", "host": "%", "databases": [{"name": "shop"}]}]
    }
    clerk = user_path("clerk", "%")
    assert h.a.get(f"{base}/users/{clerk}").json()["user"]["host"] == "%"
    view = h.a.get(base).json()["instance"]
    assert view["ip"] == ["127.0.0.1"]
    assert view["connection"]["databases"] == ["other", "shop"]
    assert [u["name"] for u in view["connection"]["users"]] == ["clerk"]

    ok = client(
        view,
        "clerk",
        PASSWORD,
        "shop",
        "CREATE TABLE t (n INT); INSERT INTO t VALUES (7); SELECT n FROM t",
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "7"
    denied = client(view, "clerk", PASSWORD, "other", "SELECT 1")
    assert denied.returncode != 0 and "denied" in denied.stderr
    no_file = client(view, "clerk", PASSWORD, "shop", "SELECT LOAD_FILE('/etc/passwd') IS NULL")
    assert no_file.stdout.strip() == "1"
    no_super = client(view, "clerk", PASSWORD, "shop", "SET GLOBAL max_connections = 10")
    assert no_super.returncode != 0

    assert (
        put(h.a, f"{base}/users/{clerk}/databases", {"databases": [{"name": "other"}]}).status_code
        == 202
    )
    assert client(view, "clerk", PASSWORD, "other", "SELECT 1").returncode == 0
    assert h.a.delete(f"{base}/users/{clerk}/databases/other").status_code == 202
    assert client(view, "clerk", PASSWORD, "other", "SELECT 1").returncode != 0
    new_password = "new-" + PASSWORD
    r = put(h.a, f"{base}/users", {"users": [{"name": "clerk", "password": new_password}]})
    assert r.status_code == 202, r.text
    assert client(view, "clerk", new_password, "shop", "SELECT n FROM t").stdout.strip() == "7"
    assert client(view, "clerk", PASSWORD, "shop", "SELECT 1").returncode != 0

    assert h.a.delete(f"{base}/users/{clerk}").status_code == 202
    assert h.a.get(f"{base}/users/{clerk}").status_code == 404
    assert h.a.delete(f"{base}/databases/other").status_code == 202
    view = h.a.get(base).json()["instance"]
    assert view["connection"]["users"] == [] and view["connection"]["databases"] == ["shop"]


def test_user_with_a_host_is_its_own_account(h: Harness, mdb: dict[str, Any]) -> None:
    base = f"/instances/{mdb['id']}"
    r = h.a.post(
        f"{base}/users", {"users": [{"name": "web", "password": PASSWORD, "host": "10.0.0.%"}]}
    )
    assert r.status_code == 202, r.text
    assert h.a.get(f"{base}/users/web").status_code == 404  # web@'%' is another account
    shown = h.a.get(f"{base}/users/{user_path('web', '10.0.0.%')}").json()["user"]
    assert shown == {"name": "web", "host": "10.0.0.%", "databases": []}
    assert h.a.delete(f"{base}/users/{user_path('web', '10.0.0.%')}").status_code == 202


def test_root_enable_then_login_with_every_privilege(h: Harness, mdb: dict[str, Any]) -> None:
    base = f"/instances/{mdb['id']}"
    assert h.a.get(f"{base}/root").json() == {"rootEnabled": False}
    r = h.a.post(f"{base}/root")
    assert r.status_code == 200, r.text
    user = r.json()["user"]
    assert user["name"] == "root"
    out = client(mdb, "root", user["password"], "mysql", "SHOW GRANTS FOR CURRENT_USER")
    assert out.returncode == 0, out.stderr
    assert "ALL PRIVILEGES ON *.* TO `root`@`%`" in out.stdout and "WITH GRANT OPTION" in out.stdout
    assert h.a.get(f"{base}/root").json() == {"rootEnabled": True}
    assert h.a.delete(f"{base}/root").status_code == 200
    assert client(mdb, "root", user["password"], "mysql", "SELECT 1").returncode != 0
    assert h.a.get(f"{base}/root").json() == {"rootEnabled": True}


@pytest.mark.parametrize(
    "name", ["root", "mysql.sys", "mariadb.sys", "strongroom_admin", "strongroom_backup"]
)
def test_reserved_user_names_are_refused(h: Harness, mdb: dict[str, Any], name: str) -> None:
    base = f"/instances/{mdb['id']}"
    r = h.a.post(f"{base}/users", {"users": [{"name": name, "password": PASSWORD}]})
    assert r.status_code == 400, r.text
    assert "reserved" in r.json()["badRequest"]["message"]
    assert (
        put(h.a, f"{base}/users", {"users": [{"name": name, "password": PASSWORD}]}).status_code
        == 400
    )
    assert h.a.delete(f"{base}/users/{user_path(name, 'localhost')}").status_code == 400


@pytest.mark.parametrize("name", ["mysql", "information_schema", "sys", "performance_schema"])
def test_reserved_databases_are_refused(h: Harness, mdb: dict[str, Any], name: str) -> None:
    base = f"/instances/{mdb['id']}"
    assert h.a.post(f"{base}/databases", {"databases": [{"name": name}]}).status_code == 400
    assert h.a.delete(f"{base}/databases/{name}").status_code == 400


def test_a_wildcard_database_cannot_be_granted(h: Harness, mdb: dict[str, Any]) -> None:
    base = f"/instances/{mdb['id']}"
    r = h.a.post(f"{base}/users", {"users": [{"name": "w", "password": PASSWORD}]})
    assert r.status_code == 202, r.text
    r = put(h.a, f"{base}/users/w/databases", {"databases": [{"name": "%"}]})
    assert r.status_code == 400, r.text
    assert h.a.delete(f"{base}/users/w").status_code == 202


def test_another_project_gets_404(h: Harness, mdb: dict[str, Any]) -> None:
    base = f"/instances/{mdb['id']}"
    calls = [
        h.b.get(f"{base}/users"),
        h.b.post(f"{base}/users", {"users": [{"name": "x", "password": PASSWORD}]}),
        h.b.get(f"{base}/databases"),
        h.b.post(f"{base}/root"),
        h.b.get(f"{base}/root"),
    ]
    assert [c.status_code for c in calls] == [404] * len(calls)


@pytest.mark.parametrize("name", ["o'brien", "x`; DROP DATABASE shop; --", 'dq"name'])
def test_user_names_are_values_never_sql(h: Harness, mdb: dict[str, Any], name: str) -> None:
    base = f"/instances/{mdb['id']}"
    h.a.post(f"{base}/databases", {"databases": [{"name": "shop"}]})
    r = h.a.post(
        f"{base}/users",
        {"users": [{"name": name, "password": PASSWORD, "databases": [{"name": "shop"}]}]},
    )
    assert r.status_code == 202, r.text
    view = h.a.get(base).json()["instance"]
    out = client(view, name, PASSWORD, "shop", "SELECT CURRENT_USER()")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"{name}@%"
    assert "shop" in view["connection"]["databases"]
    assert h.a.delete(f"{base}/users/{user_path(name, '%')}").status_code == 202


def test_concurrent_changes_are_all_recorded(h: Harness, mdb: dict[str, Any]) -> None:
    base = f"/instances/{mdb['id']}"
    names = [f"c{i}" for i in range(6)]

    def create(name: str) -> int:
        body = {"users": [{"name": name, "password": PASSWORD}]}
        return int(h.a.post(f"{base}/users", body).status_code)

    # One event loop serves all six, as in a real server (outside its context, the test
    # client runs each request on an event loop of its own).
    with h.client, ThreadPoolExecutor(max_workers=6) as pool:
        assert list(pool.map(create, names)) == [202] * len(names)
    recorded = {u["name"] for u in h.a.get(base).json()["instance"]["connection"]["users"]}
    assert set(names) <= recorded
    for name in names:
        assert h.a.delete(f"{base}/users/{name}").status_code == 202


def test_view_of_a_new_instance_says_where_to_connect(h: Harness) -> None:
    created = h.a.create_instance(
        "seeded", datastore={"type": "mariadb"}, databases=[{"name": "seed"}]
    )

    def active() -> dict[str, Any] | None:
        view: dict[str, Any] = h.a.get(f"/instances/{created['id']}").json()["instance"]
        return view if view["status"] == "ACTIVE" else None

    view = wait_for(active, timeout=180, interval=0.2)
    assert view["ip"] == ["127.0.0.1"]
    assert isinstance(view["connection"]["port"], int)
    assert view["connection"]["databases"] == ["seed"]
    assert h.a.delete(f"/instances/{created['id']}").status_code == 202


def test_database_with_character_set_and_collation(h: Harness, mdb: dict[str, Any]) -> None:
    base = f"/instances/{mdb['id']}"
    body = {
        "databases": [{"name": "latin", "character_set": "latin1", "collate": "latin1_swedish_ci"}]
    }
    assert h.a.post(f"{base}/databases", body).status_code == 202
    password = h.a.post(f"{base}/root").json()["user"]["password"]
    out = client(mdb, "root", password, "mysql",
                 "SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME "
                 "FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'latin'")  # fmt: skip
    assert out.stdout.split() == ["latin1", "latin1_swedish_ci"], out.stderr
    h.a.delete(f"{base}/root")
    for bad in (
        {"name": "bad", "character_set": "no_such_set"},
        {"name": "bad", "character_set": "utf8mb4", "collate": "latin1_swedish_ci"},
        {"name": "bad", "collate": "x; DROP DATABASE latin"},
    ):
        r = h.a.post(f"{base}/databases", {"databases": [bad]})
        assert r.status_code == 400, r.text
    names = [d["name"] for d in h.a.get(f"{base}/databases").json()["databases"]]
    assert "bad" not in names and "latin" in names
    assert h.a.delete(f"{base}/databases/latin").status_code == 202


def test_update_attributes_moves_the_account_with_its_grants(
    h: Harness, mdb: dict[str, Any]
) -> None:
    """troveclient's update_attributes: PUT …/users/{name@host} with a new name, host and
    password; the account keeps its database and the old name no longer logs in."""
    base = f"/instances/{mdb['id']}"
    assert h.a.post(f"{base}/databases", {"databases": [{"name": "ledger"}]}).status_code == 202
    users = [
        {"name": "old", "password": PASSWORD, "host": "10.1.1.1", "databases": [{"name": "ledger"}]}
    ]
    assert h.a.post(f"{base}/users", {"users": users}).status_code == 202
    new_password = "upd-" + PASSWORD
    r = put(
        h.a,
        f"{base}/users/{user_path('old', '10.1.1.1')}",
        {"user": {"name": "renamed", "host": "%", "password": new_password}},
    )
    assert r.status_code == 202, r.text
    assert h.a.get(f"{base}/users/{user_path('old', '10.1.1.1')}").status_code == 404
    assert h.a.get(f"{base}/users/renamed").json()["user"] == {
        "name": "renamed",
        "host": "%",
        "databases": [{"name": "ledger"}],
    }
    view = h.a.get(base).json()["instance"]
    made = client(view, "renamed", new_password, "ledger", "CREATE TABLE t (n INT); SELECT 5")
    assert made.returncode == 0 and made.stdout.strip() == "5", made.stderr
    assert client(view, "renamed", PASSWORD, "ledger", "SELECT 1").returncode != 0
    reserved = put(h.a, f"{base}/users/renamed", {"user": {"name": "root"}})
    assert reserved.status_code == 400, reserved.text
    # another project: 404 before anything is looked at
    assert put(h.b, f"{base}/users/renamed", {"user": {"name": "x"}}).status_code == 404
    assert h.a.delete(f"{base}/users/renamed").status_code == 202
    assert h.a.delete(f"{base}/databases/ledger").status_code == 202
