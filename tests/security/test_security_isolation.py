"""Tenant isolation: a member of project A against every endpoint holding project B's data.

Resources by id answer 404 (never 403, never the data), admin-only filters answer 403, and B's
listings, objects and stored files are byte-for-byte unchanged afterwards. Admin-only
behaviour is checked with and without the admin role.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import pytest

from fixtures.service import Caller, Harness, make_harness
from security.wire import assert_fault, assert_sees_by_id, send


@dataclass
class Tenants:
    """The in-process service, and for projects A and B an instance and a backup each."""

    h: Harness
    a_instance: dict[str, Any]
    a_backup: dict[str, Any]
    b_instance: dict[str, Any]
    b_backup: dict[str, Any]

    @property
    def a(self) -> Caller:
        return self.h.a

    @property
    def b(self) -> Caller:
        return self.h.b

    @property
    def admin(self) -> Caller:
        return self.h.admin


def _seed(caller: Caller, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    instance = caller.create_instance(f"{key}-db")
    caller.wait_instance(instance["id"])
    backup = caller.wait_backup(caller.create_backup(instance["id"], f"{key}-full")["id"])
    for spec in (
        {"swift_container": f"{key}-project"},
        {"swift_container": f"{key}-instance", "instance_id": instance["id"]},
    ):
        assert caller.post("/backup_strategies", {"backup_strategy": spec}).status_code == 202
    return instance, backup


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    h = make_harness(tmp_path_factory.mktemp("isolation"))
    try:
        yield Tenants(h, *_seed(h.a, "a"), *_seed(h.b, "b"))
    finally:
        h.container.close()


def _files(location: str) -> dict[str, str]:
    directory = Path(url2pathname(urlsplit(location).path)).parent
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def snapshot_b(t: Tenants) -> dict[str, Any]:
    """Everything B can see of its own data, plus the bytes of its stored backup."""
    b, instance, backup = t.b, t.b_instance, t.b_backup
    t.h.wait_idle()
    views = {
        path: b.get(path).json()
        for path in (
            "/backups",
            f"/backups/{backup['id']}",
            "/instances",
            f"/instances/{instance['id']}",
            f"/instances/{instance['id']}/backups",
            "/backup_strategies",
        )
    }
    return {"views": views, "files": _files(backup["locationRef"])}


def _restore_from_b(t: Tenants) -> dict[str, Any]:
    backup = t.b_backup
    return {
        "backup": {
            "name": "stolen",
            "restore_from": {
                "remote_location": backup["locationRef"],
                "local_datastore_version_id": backup["datastore"]["version_id"],
                "size": backup["size"],
            },
        }
    }


# (name, method, path, body, expected status); {bi} = B's instance id, {bb} = B's backup id,
# {ai} = A's instance id.
ATTACKS: list[tuple[str, str, str, Any, int]] = [
    ("show backup", "GET", "/backups/{bb}", None, 404),
    ("delete backup", "DELETE", "/backups/{bb}", None, 404),
    (
        "copy B's backup",
        "POST",
        "/backups/{bb}/copy",
        {"copy": {"storage_driver": "local", "swift_container": "stolen"}},
        404,
    ),
    ("show instance", "GET", "/instances/{bi}", None, 404),
    ("delete instance", "DELETE", "/instances/{bi}", None, 404),
    ("instance backups", "GET", "/instances/{bi}/backups", None, 404),
    (
        "back up B's instance",
        "POST",
        "/backups",
        {"backup": {"name": "x", "instance": "{bi}"}},
        404,
    ),
    (
        "incremental on B's parent",
        "POST",
        "/backups",
        {"backup": {"name": "x", "instance": "{ai}", "parent_id": "{bb}"}},
        404,
    ),
    (
        "restore B's backup into a new instance",
        "POST",
        "/instances",
        {
            "instance": {
                "name": "x",
                "flavorRef": "1",
                "datastore": {"type": "sqlite"},
                "restorePoint": {"backupRef": "{bb}"},
            }
        },
        404,
    ),
    (
        "place an instance on a chosen worker host",
        "POST",
        "/instances",
        {"instance": {"name": "x", "datastore": {"type": "sqlite"}, "host": "local"}},
        403,
    ),
    ("list B's backups by project_id", "GET", "/backups?project_id=projb", None, 403),
    ("list all projects' backups", "GET", "/backups?all_projects=true", None, 403),
    ("own project_id filter is admin-only too", "GET", "/backups?project_id=proja", None, 403),
    ("list B's strategies", "GET", "/backup_strategies?project_id=projb", None, 403),
    ("delete B's strategies", "DELETE", "/backup_strategies?project_id=projb", None, 403),
    (
        "delete B's instance strategy",
        "DELETE",
        "/backup_strategies?project_id=projb&instance_id={bi}",
        None,
        403,
    ),
]


def _fill(value: Any, t: Tenants) -> Any:
    ids = {"{bb}": t.b_backup["id"], "{bi}": t.b_instance["id"], "{ai}": t.a_instance["id"]}
    if isinstance(value, str):
        for marker, real in ids.items():
            value = value.replace(marker, real)
        return value
    if isinstance(value, dict):
        return {k: _fill(v, t) for k, v in value.items()}
    return value


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [a[1:] for a in ATTACKS],
    ids=[a[0] for a in ATTACKS],
)
def test_member_of_a_gets_the_contract_answer_and_b_is_unchanged(
    site: Tenants, method: str, path: str, body: Any, status: int
) -> None:
    before = snapshot_b(site)
    response = send(site.a, method, _fill(path, site), _fill(body, site))
    assert_fault(response, status)
    assert snapshot_b(site) == before


def test_a_filtering_by_b_instance_sees_nothing(site: Tenants) -> None:
    r = site.a.get(f"/backups?instance_id={site.b_instance['id']}")
    assert r.status_code == 200
    assert r.json() == {"backups": []}


def test_a_strategy_for_b_instance_stays_in_project_a(site: Tenants) -> None:
    before = snapshot_b(site)
    spec = {"instance_id": site.b_instance["id"], "swift_container": "a-over-b"}
    r = site.a.post("/backup_strategies", {"backup_strategy": spec})
    assert r.status_code == 202
    assert r.json()["backup_strategy"]["project_id"] == "proja"
    assert snapshot_b(site) == before
    site.a.delete(f"/backup_strategies?instance_id={spec['instance_id']}")


def test_every_path_under_b_project_is_403_for_a(site: Tenants) -> None:
    for method, path, body, _ in [a[1:] for a in ATTACKS]:
        url = f"/v1.0/projb{_fill(path, site)}"
        r = site.h.client.request(
            method, url, json=_fill(body, site), headers={"X-Auth-Token": site.a.token}
        )
        assert_fault(r, 403)


def test_restore_from_b_location_is_refused(site: Tenants) -> None:
    before = snapshot_b(site)
    response = site.a.post("/backups", _restore_from_b(site))
    assert_fault(response, 400)
    assert snapshot_b(site) == before


def test_restore_from_own_location_is_accepted(site: Tenants) -> None:
    """The refusal above is about the owner: registering one's own backup works."""
    a_backup = site.a_backup
    body = {
        "backup": {
            "name": "mine",
            "restore_from": {
                "remote_location": a_backup["locationRef"],
                "local_datastore_version_id": a_backup["datastore"]["version_id"],
                "size": a_backup["size"],
            },
        }
    }
    r = site.a.post("/backups", body)
    assert r.status_code == 202, r.text
    assert site.a.delete(f"/backups/{r.json()['backup']['id']}").status_code == 202


# -- admin-only behaviour, with and without the role --------------------------------------


def test_all_projects_listing_needs_admin(site: Tenants) -> None:
    b_id = site.b_backup["id"]
    admin = site.admin.get("/backups?all_projects=1")
    assert admin.status_code == 200
    assert b_id in [x["id"] for x in admin.json()["backups"]]
    only_b = site.admin.get("/backups?project_id=projb").json()["backups"]
    assert {x["project_id"] for x in only_b} == {"projb"}
    assert_fault(site.a.get("/backups?all_projects=1"), 403)


def test_admin_sees_b_by_id_and_member_does_not(site: Tenants) -> None:
    b_id, bi = site.b_backup["id"], site.b_instance["id"]
    assert_sees_by_id(site.admin, b_id, bi)
    assert_fault(site.a.get(f"/backups/{b_id}"), 404)


def test_admin_reads_b_strategies_and_member_cannot(site: Tenants) -> None:
    r = site.admin.get("/backup_strategies?project_id=projb")
    assert r.status_code == 200
    assert {s["swift_container"] for s in r.json()["backup_strategies"]} == {
        "b-project",
        "b-instance",
    }
    assert_fault(site.a.get("/backup_strategies?project_id=projb"), 403)
