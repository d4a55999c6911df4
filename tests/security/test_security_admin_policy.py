"""An operator policy file that narrows ``admin`` narrows who sees other projects.

With ``"admin": "role:admin and project_id:cloudadmin"``, a caller holding the admin role in
project A is no admin: another project's backups and instances are "not found" to it, as to
a plain member of A, in the API and in the dashboard. A caller of the cloudadmin project still
sees and acts on every project.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import PROJECT_A, Caller, Harness, make_harness
from security.wire import assert_fault, assert_sees_by_id, send
from support.dashboard import browser, sign_in

CLOUD_ADMIN = "cloudadmin"
NARROWED = f'"admin": "role:admin and project_id:{CLOUD_ADMIN}"\n'


@dataclass
class Site:
    h: Harness
    a_admin: Caller  # roles admin and member in project A: no admin under the policy
    cloud: Caller  # the admin role in the cloudadmin project: the policy's admin
    a_instance: dict[str, Any]
    a_backup: dict[str, Any]
    b_instance: dict[str, Any]
    b_backup: dict[str, Any]


def _caller(h: Harness, project: str, roles: tuple[str, ...]) -> Caller:
    issued = h.container.services.tokens.create(
        project_id=project, user_id=f"ops-{project}", roles=roles
    )
    return Caller(h.client, project, issued.token)


def _seed(caller: Caller, key: str) -> tuple[dict[str, Any], dict[str, Any]]:
    instance = caller.wait_instance(caller.create_instance(f"{key}-db")["id"])
    backup = caller.wait_backup(caller.create_backup(instance["id"], f"{key}-full")["id"])
    return instance, backup


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("narrowed-admin")
    policy = base / "policy.yaml"
    policy.write_text(NARROWED)
    h = make_harness(base, policy_file=policy)
    try:
        yield Site(
            h,
            _caller(h, PROJECT_A, ("admin", "member")),
            _caller(h, CLOUD_ADMIN, ("admin",)),
            *_seed(h.a, "a"),
            *_seed(h.b, "b"),
        )
    finally:
        h.container.close()


def _restore(point: dict[str, Any]) -> dict[str, Any]:
    instance = {"name": "x", "flavorRef": "1", "datastore": {"type": "sqlite"}}
    return {"instance": {**instance, "restorePoint": point}}


def _attacks(s: Site) -> dict[str, tuple[str, str, Any, int]]:
    """What reaches project B's data from another project: (method, path, body, the status
    a member of A gets): by id "not found", the admin-only listing filters "forbidden"."""
    bb, bi = s.b_backup["id"], s.b_instance["id"]
    now = datetime.now(UTC).isoformat()
    return {
        "show B's backup": ("GET", f"/backups/{bb}", None, 404),
        "show B's instance": ("GET", f"/instances/{bi}", None, 404),
        "list B's instance's backups": ("GET", f"/instances/{bi}/backups", None, 404),
        "back up B's instance": (
            "POST",
            "/backups",
            {"backup": {"name": "x", "instance": bi}},
            404,
        ),
        "incremental on B's parent": (
            "POST",
            "/backups",
            {"backup": {"name": "x", "instance": s.a_instance["id"], "parent_id": bb}},
            404,
        ),
        "restore B's backup": ("POST", "/instances", _restore({"backupRef": bb}), 404),
        "restore B's instance to a time": (
            "POST",
            "/instances",
            _restore({"instanceRef": bi, "restoreTime": now}),
            404,
        ),
        "restore B's backup to a time": (
            "POST",
            "/instances",
            _restore({"backupRef": bb, "restoreTime": now}),
            404,
        ),
        "delete B's backup": ("DELETE", f"/backups/{bb}", None, 404),
        "list all projects' backups": ("GET", "/backups?all_projects=1", None, 403),
        "list B's backups by project_id": ("GET", "/backups?project_id=projb", None, 403),
    }


def _b_as_b_sees_it(s: Site) -> dict[str, Any]:
    s.h.wait_idle()
    bb, bi = s.b_backup["id"], s.b_instance["id"]
    paths = ("/backups", f"/backups/{bb}", "/instances", f"/instances/{bi}/backups")
    return {path: s.h.b.get(path).json() for path in paths}


def test_an_admin_role_outside_the_admin_project_gets_what_a_member_gets(site: Site) -> None:
    before = _b_as_b_sees_it(site)
    answers, wanted = {}, {}
    for name, (method, path, body, status) in _attacks(site).items():
        member = send(site.h.a, method, path, body)
        narrowed = send(site.a_admin, method, path, body)
        answers[name] = (member.status_code, narrowed.status_code)
        wanted[name] = (status, status)
        if narrowed.status_code == status:
            assert_fault(narrowed, status)
    assert answers == wanted
    assert _b_as_b_sees_it(site) == before


def test_an_admin_role_outside_the_admin_project_lists_its_own_project_only(site: Site) -> None:
    backups = site.a_admin.get("/backups").json()["backups"]
    assert {b["id"] for b in backups} == {site.a_backup["id"]}
    instances = site.a_admin.get("/instances").json()["instances"]
    assert [i["id"] for i in instances] == [site.a_instance["id"]]
    page = sign_in(browser(site.h), site.a_admin.token).get("/dashboard").text
    assert 'id="project-proja"' in page and site.a_backup["id"] in page
    for other in ('id="project-projb"', site.b_instance["id"], site.b_backup["id"], "b-db"):
        assert other not in page
    assert "admin: every project" not in page


def test_the_admin_project_still_sees_every_project(site: Site) -> None:
    bb, bi = site.b_backup["id"], site.b_instance["id"]
    assert_sees_by_id(site.cloud, bb, bi)
    every = site.cloud.get("/backups?all_projects=1").json()["backups"]
    assert {site.a_backup["id"], bb} <= {b["id"] for b in every}
    page = sign_in(browser(site.h), site.cloud.token).get("/dashboard").text
    assert 'id="project-proja"' in page and 'id="project-projb"' in page
    assert bb in page and bi in page and "admin: every project" in page


def test_the_admin_project_restores_and_backs_up_another_projects_data(site: Site) -> None:
    bb, bi = site.b_backup["id"], site.b_instance["id"]
    restored = site.cloud.post("/instances", _restore({"backupRef": bb}))
    assert restored.status_code == 200, restored.text
    assert restored.json()["instance"]["id"] != bi
    # Seen, so judged: a SQLite instance has no restorable window (400, not 404).
    now = datetime.now(UTC).isoformat()
    to_time = site.cloud.post("/instances", _restore({"instanceRef": bi, "restoreTime": now}))
    assert_fault(to_time, 400)
    backed_up = site.cloud.post("/backups", {"backup": {"name": "ops", "instance": bi}})
    assert backed_up.status_code == 202, backed_up.text
    site.h.wait_idle()


def test_the_default_policy_keeps_the_admin_role_an_admin(tmp_path: Path) -> None:
    h = make_harness(tmp_path)
    try:
        a_admin = _caller(h, PROJECT_A, ("admin", "member"))
        b_instance = h.b.wait_instance(h.b.create_instance("b-db")["id"])
        assert a_admin.get(f"/instances/{b_instance['id']}").status_code == 200
        assert a_admin.get("/backups?all_projects=1").status_code == 200
        page = sign_in(browser(h), a_admin.token).get("/dashboard").text
        assert 'id="project-projb"' in page and b_instance["id"] in page
    finally:
        h.container.close()
