"""Users, databases and root calls where no database server is needed: a SQLite instance
answers 501 with Trove's wording, another project's or an unknown instance 404 (before
any 501), malformed bodies 400."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fixtures.service import Caller, Harness, make_harness

USER = {"users": [{"name": "u", "password": "secret-1"}]}


def calls(caller: Caller, instance_id: str) -> list[Any]:
    base = f"/instances/{instance_id}"
    put = caller.client.put
    headers = caller._headers(None)
    return [
        caller.get(f"{base}/users"),
        caller.post(f"{base}/users", USER),
        put(caller.url(f"{base}/users"), json=USER, headers=headers),
        caller.get(f"{base}/users/u"),
        caller.delete(f"{base}/users/u"),
        caller.get(f"{base}/users/u/databases"),
        put(
            caller.url(f"{base}/users/u/databases"),
            json={"databases": [{"name": "d"}]},
            headers=headers,
        ),
        caller.delete(f"{base}/users/u/databases/d"),
        caller.get(f"{base}/databases"),
        caller.post(f"{base}/databases", {"databases": [{"name": "d"}]}),
        caller.delete(f"{base}/databases/d"),
        caller.post(f"{base}/root"),
        caller.get(f"{base}/root"),
        caller.delete(f"{base}/root"),
    ]


def test_sqlite_instance_answers_not_implemented_on_every_path(harness: Harness) -> None:
    lite = harness.a.create_instance("lite")
    harness.a.wait_instance(lite["id"])
    answers = calls(harness.a, lite["id"])
    assert [r.status_code for r in answers] == [501] * len(answers)
    for r in answers:
        fault = r.json()["notImplemented"]
        assert fault["code"] == 501
        assert fault["message"].endswith("operation is not supported for the 'sqlite' datastore.")


def test_another_project_and_unknown_instances_are_404(harness: Harness) -> None:
    lite = harness.a.create_instance("lite")
    harness.a.wait_instance(lite["id"])
    for caller, instance_id in (
        (harness.b, lite["id"]),
        (harness.a, "00000000-0000-0000-0000-000000000000"),
    ):
        answers = calls(caller, instance_id)
        assert [r.status_code for r in answers] == [404] * len(answers)
        assert all("itemNotFound" in r.json() for r in answers)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("users", {}),
        ("users", {"users": []}),
        ("users", {"users": [{"name": "u"}]}),
        ("users", {"users": [{"name": "u", "password": ""}]}),
        ("users", {"users": [{"name": "u", "password": "p", "host": "a b"}]}),
        ("users", {"users": [{"name": "u\x01", "password": "p"}]}),
        ("databases", {"databases": "d"}),
        ("databases", {"databases": [{}]}),
    ],
)
def test_malformed_bodies_are_400(harness: Harness, path: str, body: Any) -> None:
    lite = harness.a.create_instance("lite")
    r = harness.a.post(f"/instances/{lite['id']}/{path}", body)
    assert r.status_code == 400, r.text
    assert r.json()["badRequest"]["message"].startswith("Validation error")


def test_root_enable_with_a_malformed_password_is_400(harness: Harness) -> None:
    lite = harness.a.create_instance("lite")
    r = harness.a.post(f"/instances/{lite['id']}/root", {"password": ""})
    assert r.status_code == 400, r.text


def test_policy_rules_carry_trove_names(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        '"instance:extension:user:create": "role:admin"\n'
        '"instance:extension:root:index": "role:admin"\n'
    )
    h = make_harness(tmp_path, policy_file=policy)
    try:
        lite = h.a.create_instance("lite")
        base = f"/instances/{lite['id']}"
        r = h.a.post(f"{base}/users", USER)
        assert r.status_code == 403
        assert r.json()["forbidden"]["message"] == (
            "Policy doesn't allow instance:extension:user:create to be performed."
        )
        assert h.a.get(f"{base}/root").status_code == 403
        assert h.a.get(f"{base}/users").status_code == 501  # not denied: answered
        assert h.b.post(f"{base}/users", USER).status_code == 404  # still invisible first
    finally:
        h.container.close()
