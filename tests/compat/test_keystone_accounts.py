"""`openstack database user|db|root …` through a real Keystone's catalog on managed
PostgreSQL and MariaDB instances, on both layouts: a member of project A creates a database
and a user, then logs in with psql (or mariadb) as that user (grants checked); a reader of A
lists but may not create; a member of project B does not see A's instance; an admin (of B)
sees it; root enable gives a superuser login."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from fixtures.cluster import running_cluster
from fixtures.keystone import SERVICE_TIMEOUTS, KeystoneServer, create_project, create_user
from fixtures.live import start_server
from fixtures.service import wait_for
from support.mariadb import remove_os_users_under, require_mariadb, stop_servers_under
from support.postgresql_service import PG_MAJOR, reachable_dir

pytestmark = pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed")
Osc = Callable[..., Any]
OPENSTACK = shutil.which("openstack") or str(Path(sys.executable).parent / "openstack")
ROLES = {"member-a": ("a", "member"), "reader-a": ("a", "reader"), "member-b": ("b", "member")}
ROLES["admin-b"] = ("b", "admin")


def keystone_env(server: KeystoneServer, admin: Any) -> dict[str, str]:
    account = create_project(admin, "svc")
    user, password = create_user(admin, account.id, ("service",))
    return {
        "STRONGROOM_DATASTORES": '["sqlite", "postgresql", "mariadb"]',
        "STRONGROOM_KEYSTONE__ENABLED": "true",
        "STRONGROOM_KEYSTONE__AUTH_URL": server.auth_url,
        "STRONGROOM_KEYSTONE__USERNAME": user.name,
        "STRONGROOM_KEYSTONE__PASSWORD": password,
        "STRONGROOM_KEYSTONE__PROJECT_NAME": account.name,
        "STRONGROOM_KEYSTONE__REGION_NAME": server.region,
        "STRONGROOM_KEYSTONE__INTERFACE": "public",
        "STRONGROOM_KEYSTONE__TOKEN_CACHE_TIME": "0",
        **{f"STRONGROOM_KEYSTONE__{k.upper()}": str(v) for k, v in SERVICE_TIMEOUTS.items()},
    }


@pytest.fixture(scope="module", params=["embedded", "scaled-out"])
def osc(
    request: pytest.FixtureRequest, keystone_server: KeystoneServer, keystone_admin: Any
) -> Iterator[Osc]:
    env = keystone_env(keystone_server, keystone_admin)
    with ExitStack() as stack:
        base = stack.enter_context(reachable_dir("srk-"))
        stack.callback(remove_os_users_under, base)
        stack.callback(stop_servers_under, base)
        if request.param == "embedded":
            server = start_server(base / "data", env=env)
            stack.callback(server.stop)
            url = server.url
        else:
            (base / "c").mkdir()
            cluster = stack.enter_context(running_cluster(base / "c", extra_env=env))
            url = cluster.api_urls[0]
        args = [
            "keystone",
            "register",
            "--auth-url",
            keystone_server.auth_url,
            "--region",
            keystone_server.region,
            "--public-url",
            url,
            "--username",
            keystone_server.admin_user,
            "--project-name",
            keystone_server.admin_project,
        ]
        registered = subprocess.run(
            [sys.executable, "-m", "strongroom", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "OS_PASSWORD": keystone_server.admin_password},
            check=False,
        )
        assert registered.returncode == 0, registered.stderr
        projects = {key: create_project(keystone_admin) for key in ("a", "b")}
        clouds: dict[str, Any] = {}
        for cloud, (project, role) in ROLES.items():
            user, password = create_user(keystone_admin, projects[project].id, (role,))
            clouds[cloud] = {
                "auth_type": "password",
                "auth": {
                    "auth_url": keystone_server.auth_url,
                    "username": user.name,
                    "password": password,
                    "project_id": projects[project].id,
                    "user_domain_name": "Default",
                },
                "region_name": keystone_server.region,
            }
        path = base / "clouds.yaml"
        path.write_text(json.dumps({"clouds": clouds}))
        run_env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        run_env["OS_CLIENT_CONFIG_FILE"] = str(path)

        def run(*args: str, cloud: str = "member-a", parse: bool = True, ok: bool = True) -> Any:
            out = subprocess.run(
                [OPENSTACK, "--os-cloud", cloud, "database", *args]
                + (["-f", "json"] if parse else []),
                capture_output=True,
                text=True,
                timeout=120,
                env=run_env,
                check=False,
            )
            if not ok:
                return out
            assert out.returncode == 0, out.stderr
            return json.loads(out.stdout) if parse and out.stdout.strip() else out.stdout

        yield run


def psql(ip: str, port: int, user: str, password: str, db: str, query: str) -> Any:
    return subprocess.run(
        ["psql", "-X", "-qAt", "-h", ip, "-p", str(port), "-U", user, "-d", db, "-c", query],
        env={"PATH": os.environ["PATH"], "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_users_databases_and_root_by_role_then_logins(osc: Osc) -> None:
    created = osc(
        "instance",
        "create",
        "ks-pg",
        "--flavor",
        "1",
        "--size",
        "1",
        "--datastore",
        "postgresql",
        "--nic",
        "net-id=11111111-2222-3333-4444-555555555555",
    )
    inst = created["id"]
    wait_for(lambda: osc("instance", "show", inst)["status"] == "ACTIVE", timeout=120)
    password = "pw-" + uuid.uuid4().hex[:12]

    osc("db", "create", inst, "shop", parse=False)
    osc("db", "create", inst, "other", parse=False)
    osc("user", "create", inst, "clerk", password, "--databases", "shop", parse=False)
    assert [d["Name"] for d in osc("db", "list", inst)] == ["other", "shop"]
    assert [u["Name"] for u in osc("user", "list", inst)] == ["clerk"]
    # A reader lists, and may not change anything.
    assert [u["Name"] for u in osc("user", "list", inst, cloud="reader-a")] == ["clerk"]
    refused = osc(
        "user", "create", inst, "other", password, cloud="reader-a", parse=False, ok=False
    )
    assert refused.returncode != 0 and "403" in refused.stderr
    # Another project's member does not see the instance; an admin does.
    hidden = osc("user", "list", inst, cloud="member-b", ok=False)
    assert hidden.returncode != 0 and "No instance with a name or ID" in hidden.stderr
    assert [u["Name"] for u in osc("user", "list", inst, cloud="admin-b")] == ["clerk"]

    view = osc("instance", "show", inst)
    ip = view["ip"] if isinstance(view["ip"], str) else view["ip"][0]
    ip = ip.split(",")[0].strip()
    port = _port_from(view)
    made = psql(ip, port, "clerk", password, "shop", "CREATE TABLE t (n int); SELECT 3")
    assert made.returncode == 0 and made.stdout.strip() == "3", made.stderr
    flags = psql(
        ip,
        port,
        "clerk",
        password,
        "shop",
        "SELECT rolsuper, rolcreatedb FROM pg_roles WHERE rolname = current_user",
    )
    assert flags.stdout.strip() == "f|f"
    assert "permission denied" in psql(ip, port, "clerk", password, "other", "SELECT 1").stderr

    # update-attributes: a new name and password, the grants kept.
    renamed = "cashier"
    password = "new-" + password
    osc(
        "user",
        "update",
        "attributes",
        inst,
        "clerk",
        "--new_name",
        renamed,
        "--new_password",
        password,
        parse=False,
    )
    assert [u["Name"] for u in osc("user", "list", inst)] == [renamed]
    moved = psql(ip, port, renamed, password, "shop", "SELECT count(*) FROM t")
    assert moved.stdout.strip() == "0", moved.stderr

    root = osc("root", "enable", inst)
    is_super = psql(ip, port, root["name"], root["password"], "postgres", "SHOW is_superuser")
    assert is_super.stdout.strip() == "on", is_super.stderr

    assert psql(ip, port, renamed, password, "shop", "DROP TABLE t").returncode == 0
    osc("user", "delete", inst, renamed, parse=False)
    assert osc("user", "list", inst) == []
    # limit list: the ABSOLUTE entry with what is in use, then Trove's rate entries.
    printed = osc("limit", "list", parse=False)
    assert "instances_in_use" in printed and "MINUTE" in printed and "POST" in printed


def test_mariadb_user_and_root_made_with_osc_log_in(osc: Osc) -> None:
    require_mariadb()
    created = osc(
        "instance",
        "create",
        "ks-mdb",
        *("--flavor", "1", "--size", "1", "--datastore", "mariadb"),
        *("--nic", "net-id=11111111-2222-3333-4444-555555555555"),
    )
    inst = created["id"]
    wait_for(lambda: osc("instance", "show", inst)["status"] == "ACTIVE", timeout=180)
    password = "pw-" + uuid.uuid4().hex[:12]
    osc("db", "create", inst, "shop", parse=False)
    osc("user", "create", inst, "clerk", password, "--databases", "shop", parse=False)
    assert [u["Name"] for u in osc("user", "list", inst)] == ["clerk"]
    hidden = osc("user", "list", inst, cloud="member-b", ok=False)
    assert hidden.returncode != 0 and "No instance with a name or ID" in hidden.stderr
    view = osc("instance", "show", inst)
    ip = view["ip"] if isinstance(view["ip"], str) else view["ip"][0]
    ip, port = ip.split(",")[0].strip(), _port_from(view)
    grants = mariadb(ip, port, "clerk", password, "shop", "SHOW GRANTS FOR CURRENT_USER")
    assert grants.returncode == 0, grants.stderr
    assert "GRANT ALL PRIVILEGES ON `shop`.* TO `clerk`@`%`" in grants.stdout, grants.stdout
    assert mariadb(ip, port, "clerk", password, "mysql", "SELECT 1").returncode != 0
    root = osc("root", "enable", inst)
    everything = mariadb(ip, port, root["name"], root["password"], "mysql", "SHOW GRANTS")
    assert "ALL PRIVILEGES ON *.* TO `root`@`%`" in everything.stdout, everything.stderr
    osc("instance", "delete", inst, parse=False)


def mariadb(ip: str, port: int, user: str, password: str, db: str, query: str) -> Any:
    return subprocess.run(
        [
            *("mariadb", "--no-defaults", "--protocol=TCP", "-h", ip, "-P", str(port)),
            *("-u", user, "-N", "-B", "-e", query, db),
        ],
        env={"PATH": os.environ["PATH"], "MYSQL_PWD": password},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _port_from(view: dict[str, Any]) -> int:
    """The port in the view's ``connection`` (OSC may print it as a Python dict's text)."""
    connection = view["connection"]
    if isinstance(connection, str):
        connection = json.loads(connection.replace("'", '"'))
    return int(connection["port"])
