"""GET /limits (Trove's ABSOLUTE entry) and GET/PUT /mgmt/quotas/{project}: per-project
limits an admin sets, which creates then obey (413 over the limit)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest

from fixtures.service import Caller, Harness


def put_quotas(caller: Caller, project: str, body: Any) -> Any:
    return caller.client.put(
        caller.url(f"/mgmt/quotas/{project}"), json=body, headers=caller._headers(None)
    )


def quotas_of(caller: Caller, project: str) -> dict[str, dict[str, int]]:
    r = caller.get(f"/mgmt/quotas/{project}")
    assert r.status_code == 200, r.text
    return {q["resource"]: q for q in r.json()["quotas"]}


def backup(harness: Harness, instance_id: str) -> Any:
    return harness.a.post("/backups", {"backup": {"name": "b", "instance": instance_id}})


def test_limits_show_the_absolute_entry_and_what_is_in_use(harness: Harness) -> None:
    inst = harness.a.create_instance("src")
    harness.a.wait_instance(inst["id"])
    assert backup(harness, inst["id"]).status_code == 202
    harness.wait_idle()
    r = harness.a.get("/limits")
    assert r.status_code == 200
    absolute = r.json()["limits"][0]
    assert absolute["verb"] == "ABSOLUTE"
    assert absolute["max_backups"] == 50 and absolute["max_instances"] == 20
    assert absolute["max_volumes"] == -1
    assert absolute["backups_in_use"] == 1 and absolute["instances_in_use"] == 1
    other = harness.b.get("/limits").json()["limits"][0]
    assert other["backups_in_use"] == 0 and other["instances_in_use"] == 0


def test_limits_list_trove_rate_entries_that_are_not_enforced(harness: Harness) -> None:
    """Trove's default rate entries, as `openstack database limit list` prints them; no
    rate is enforced, so each has all its requests remaining, even after many calls."""
    for _ in range(3):
        assert harness.a.get("/limits").status_code == 200
    _, *rates = harness.a.get("/limits").json()["limits"]
    assert [(r["verb"], r["uri"], r["regex"]) for r in rates] == [
        ("POST", "*", ".*"),
        ("PUT", "*", ".*"),
        ("DELETE", "*", ".*"),
        ("GET", "*", ".*"),
        ("POST", "*/mgmt", "^/mgmt"),
    ]
    for rate in rates:
        assert rate["value"] == rate["remaining"] == 200 and rate["unit"] == "MINUTE"
        assert datetime.strptime(rate["nextAvailable"], "%Y-%m-%dT%H:%M:%SZ")


def test_a_member_sees_its_own_quotas_not_another_projects(harness: Harness) -> None:
    mine = quotas_of(harness.a, harness.a.project)
    assert set(mine) == {"backups", "instances"}
    assert mine["backups"] == {"resource": "backups", "in_use": 0, "reserved": 0, "limit": 50}
    assert harness.a.get(f"/mgmt/quotas/{harness.b.project}").status_code == 403


def test_only_an_admin_updates_quotas_and_creates_obey_the_new_limit(harness: Harness) -> None:
    inst = harness.a.create_instance("src")
    harness.a.wait_instance(inst["id"])
    refused = put_quotas(harness.a, harness.a.project, {"quotas": {"backups": 100}})
    assert refused.status_code == 403
    assert quotas_of(harness.admin, harness.a.project)["backups"]["limit"] == 50

    assert backup(harness, inst["id"]).status_code == 202
    harness.wait_idle()
    r = put_quotas(harness.admin, harness.a.project, {"quotas": {"backups": 1}})
    assert r.status_code == 200, r.text
    assert r.json() == {"quotas": {"backups": 1}}
    over = backup(harness, inst["id"])
    assert over.status_code == 413
    assert over.json()["overLimit"]["code"] == 413
    seen = quotas_of(harness.a, harness.a.project)["backups"]
    assert seen["in_use"] == 1 and seen["limit"] == 1
    # Another project keeps the default.
    assert quotas_of(harness.b, harness.b.project)["backups"]["limit"] == 50

    put_quotas(harness.admin, harness.a.project, {"quotas": {"instances": 1}})
    body = {"instance": {"name": "second", "flavorRef": "1", "datastore": {"type": "sqlite"}}}
    assert harness.a.post("/instances", body).status_code == 413


def test_unlimited_quota_lets_creates_through(harness: Harness) -> None:
    inst = harness.a.create_instance("src")
    harness.a.wait_instance(inst["id"])
    put_quotas(harness.admin, harness.a.project, {"quotas": {"backups": 0}})
    assert backup(harness, inst["id"]).status_code == 413
    put_quotas(harness.admin, harness.a.project, {"quotas": {"backups": -1}})
    assert backup(harness, inst["id"]).status_code == 202
    harness.wait_idle()


@pytest.mark.parametrize(
    "body",
    [
        {"quotas": {"volumes": 3}},
        {"quotas": {"backups": "3"}},
        {"quotas": {"backups": True}},
        {"quotas": {"backups": -2}},
        {"quotas": {"backups": 2**31}},
        {"quotas": {}},
        {"quotas": [1]},
        {"quota": {"backups": 1}},
        [],
    ],
)
def test_bad_quota_updates_are_400(harness: Harness, body: Any) -> None:
    r = put_quotas(harness.admin, harness.a.project, body)
    assert r.status_code == 400, r.text
    assert r.json()["badRequest"]["code"] == 400
    assert quotas_of(harness.admin, harness.a.project)["backups"]["limit"] == 50
