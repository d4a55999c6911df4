"""`openstack --os-cloud … database …` through a real Keystone's catalog: the service is
registered by `strongroom keystone register`, the client knows only a clouds.yaml (password
or application credential), and Strongroom validates the Keystone tokens it receives."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.keystone import (
    SERVICE_TIMEOUTS,
    KeystoneProject,
    KeystoneServer,
    create_project,
    create_user,
)
from fixtures.live import LiveServer, start_server
from fixtures.service import wait_for

OPENSTACK = shutil.which("openstack") or str(
    Path(__file__).resolve().parents[2] / ".venv/bin/openstack"
)
Osc = Callable[..., Any]


def strongroom(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "strongroom", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
        check=False,
    )


@pytest.fixture(scope="module")
def keystone_served(
    tmp_path_factory: pytest.TempPathFactory, keystone_server: KeystoneServer, keystone_admin: Any
) -> Iterator[LiveServer]:
    """A `strongroom serve` with [keystone] enabled, registered in the catalog."""
    root = Path(tmp_path_factory.mktemp("keystone-served"))
    account = create_project(keystone_admin, "svc")
    user, password = create_user(keystone_admin, account.id, ("service",))
    config = root / "strongroom.toml"
    config.write_text(
        "[keystone]\n"
        "enabled = true\n"
        f'auth_url = "{keystone_server.auth_url}"\n'
        f'username = "{user.name}"\n'
        f'password = "{password}"\n'
        f'project_name = "{account.name}"\n'
        f'region_name = "{keystone_server.region}"\n'
        'interface = "public"\n'
        "token_cache_time = 0\n"
        + "".join(f"{name} = {value}\n" for name, value in SERVICE_TIMEOUTS.items())
    )
    config.chmod(0o600)
    server = start_server(root / "data", "--config", str(config))
    try:
        admin_env = {"OS_PASSWORD": keystone_server.admin_password}
        args = [
            "keystone",
            "register",
            "--auth-url",
            keystone_server.auth_url,
            "--region",
            keystone_server.region,
            "--public-url",
            server.url,
            "--username",
            keystone_server.admin_user,
            "--project-name",
            keystone_server.admin_project,
        ]
        first = strongroom(*args, env=admin_env)
        assert first.returncode == 0, first.stderr
        again = strongroom(*args, env=admin_env)  # idempotent
        assert again.returncode == 0, again.stderr
        assert "already registered" in again.stdout
        yield server
    finally:
        server.stop()


def write_clouds(path: Path, server: KeystoneServer, project: KeystoneProject) -> Path:
    clouds = {
        "clouds": {
            "pw": {
                "auth_type": "password",
                "auth": {
                    "auth_url": server.auth_url,
                    "username": project.username,
                    "password": project.password,
                    "project_id": project.project_id,
                    "user_domain_name": "Default",
                },
                "region_name": server.region,
            },
            "appcred": {
                "auth_type": "v3applicationcredential",
                "auth": {
                    "auth_url": server.auth_url,
                    "application_credential_id": project.application_credential_id,
                    "application_credential_secret": project.application_credential_secret,
                },
                "region_name": server.region,
            },
        }
    }
    path.write_text(json.dumps(clouds))  # YAML is a superset of JSON
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def osc(
    keystone_served: LiveServer,
    keystone_server: KeystoneServer,
    keystone_project: KeystoneProject,
    tmp_path_factory: pytest.TempPathFactory,
) -> Osc:
    clouds = write_clouds(
        Path(tmp_path_factory.mktemp("clouds")) / "clouds.yaml", keystone_server, keystone_project
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = str(clouds)

    def run(*args: str, cloud: str = "pw", parse: bool = True, ok: bool = True) -> Any:
        out = subprocess.run(
            [OPENSTACK, "--os-cloud", cloud, "database", *args] + (["-f", "json"] if parse else []),
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
        if not ok:
            return out
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if parse else out.stdout

    return run


def create_instance(osc: Osc, name: str, *extra: str, cloud: str = "pw") -> dict[str, Any]:
    instance: dict[str, Any] = osc(
        "instance",
        "create",
        name,
        "--flavor",
        "1",
        "--size",
        "1",
        "--datastore",
        "sqlite",
        "--datastore-version",
        "3",
        "--nic",
        "net-id=11111111-2222-3333-4444-555555555555",
        *extra,
        cloud=cloud,
    )
    wait_for(lambda: osc("instance", "show", instance["id"])["status"] == "ACTIVE", timeout=90)
    return instance


def test_backup_lifecycle_and_restore_through_the_catalog(osc: Osc) -> None:
    inst = create_instance(osc, "ks-src")
    created = osc("backup", "create", "ks-full", "--instance", inst["id"])
    wait_for(lambda: osc("backup", "show", created["id"])["status"] == "COMPLETED", timeout=90)
    listed = osc("backup", "list")
    assert created["id"] in [b["ID"] for b in listed]
    restored = create_instance(osc, "ks-restored", "--backup", created["id"])
    assert restored["id"] != inst["id"]
    osc("backup", "delete", created["id"], parse=False)
    wait_for(lambda: created["id"] not in [b["ID"] for b in osc("backup", "list")], timeout=60)


def test_application_credential_lists_through_the_catalog(osc: Osc) -> None:
    inst = create_instance(osc, "ks-appcred", cloud="appcred")
    assert inst["id"] in [i["ID"] for i in osc("instance", "list", cloud="appcred")]
    assert isinstance(osc("backup", "list", cloud="appcred"), list)


def test_limit_list_and_quota_show_count_the_projects_backups(
    osc: Osc, keystone_project: KeystoneProject
) -> None:
    inst = create_instance(osc, "ks-quota")
    created = osc("backup", "create", "ks-counted", "--instance", inst["id"])
    wait_for(lambda: osc("backup", "show", created["id"])["status"] == "COMPLETED", timeout=90)
    printed = osc("limit", "list", parse=False)
    assert "max_backups" in printed and "backups_in_use" in printed
    quotas = {q["Resource"]: q for q in osc("quota", "show", keystone_project.project_id)}
    assert quotas["backups"]["In Use"] >= 1 and quotas["backups"]["Limit"] == 50
    refused = osc("quota", "update", keystone_project.project_id, "backups", "1", ok=False)
    assert refused.returncode != 0  # a member may not change quotas


def test_admin_quota_update_then_create_over_the_limit_is_413(
    keystone_served: LiveServer, keystone_server: KeystoneServer, keystone_admin: Any
) -> None:
    """An admin of the cloud sets a project's limit through the API; the project's member
    is then refused (413) over it."""
    from keystoneauth1 import session
    from keystoneauth1.identity import v3

    project = create_project(keystone_admin)
    user, password = create_user(keystone_admin, project.id, ("member",))

    def token(username: str, secret: str, **scope: str) -> str:
        auth = v3.Password(
            auth_url=keystone_server.auth_url,
            username=username,
            password=secret,
            user_domain_name="Default",
            **scope,
        )
        value: str = session.Session(auth=auth).get_token()
        return value

    admin = token(
        keystone_server.admin_user,
        keystone_server.admin_password,
        project_name=keystone_server.admin_project,
        project_domain_name="Default",
    )
    member = token(user.name, password, project_id=project.id)
    admin_project = keystone_admin.projects.find(name=keystone_server.admin_project).id
    import httpx

    base = keystone_served.url + "/v1.0"
    put = httpx.put(
        f"{base}/{admin_project}/mgmt/quotas/{project.id}",
        json={"quotas": {"instances": 0}},
        headers={"X-Auth-Token": admin},
    )
    assert put.status_code == 200, put.text
    body = {"instance": {"name": "x", "flavorRef": "1", "datastore": {"type": "sqlite"}}}
    refused = httpx.post(
        f"{base}/{project.id}/instances", json=body, headers={"X-Auth-Token": member}
    )
    assert refused.status_code == 413, refused.text
    assert refused.json()["overLimit"]["code"] == 413
