"""Input refused at the edge with a Trove fault, never a 500, whatever the metadata database:
NUL and control characters in names, URLs with NUL, JSON nested beyond reason; and links
that the Host header cannot redirect."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.metadata import mariadb_database, postgresql_database
from fixtures.service import Harness, make_harness
from security.wire import assert_fault


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mariadb"])
def harness(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Harness]:
    with contextlib.ExitStack() as stack:
        url = None
        if request.param == "postgresql":
            url = stack.enter_context(postgresql_database("strongroom_edge_"))
        elif request.param == "mariadb":
            url = stack.enter_context(mariadb_database("strongroom_edge_"))
        h = make_harness(tmp_path_factory.mktemp(request.param), database_url=url)
        stack.callback(h.container.close)
        yield h


BAD_NAMES = ["nul\x00name", "bell\x07", "del\x7f", "c1\x85"]
INSTANCE = "00000000-0000-0000-0000-000000000000"


SCHEDULE = {"instance_id": INSTANCE, "name": "nightly", "cron": "0 3 * * *"}


@pytest.mark.parametrize("name", BAD_NAMES, ids=["nul", "bell", "del", "c1"])
def test_control_characters_in_names_are_400(harness: Harness, name: str) -> None:
    bodies = [
        ("/backups", {"backup": {"name": name, "instance": INSTANCE}}),
        ("/backups", {"backup": {"name": "ok", "description": name, "instance": INSTANCE}}),
        ("/backups", {"backup": {"name": "ok", "swift_container": name, "instance": INSTANCE}}),
        ("/instances", {"instance": {"name": name, "datastore": {"type": "sqlite"}}}),
        ("/backup_strategies", {"backup_strategy": {"swift_container": name}}),
        # A schedule's name becomes its backups' names.
        ("/backup_schedules", {"backup_schedule": {**SCHEDULE, "name": name}}),
        ("/backup_schedules", {"backup_schedule": {**SCHEDULE, "swift_container": name}}),
    ]
    for path, body in bodies:
        fault = assert_fault(harness.a.post(path, body), 400)
        assert "control character" in fault["badRequest"]["message"] or "NUL" in str(fault)


def test_nul_anywhere_in_a_body_is_400(harness: Harness) -> None:
    body = {
        "backup": {
            "name": "ok",
            "restore_from": {
                "remote_location": "file:///x\x00y",
                "local_datastore_version_id": INSTANCE,
                "size": 1,
            },
        }
    }
    assert "NUL" in str(assert_fault(harness.a.post("/backups", body), 400))
    body = {"instance": {"name": "ok", "datastore": {"type": "sqlite"}, "external": {"p\x00": 1}}}
    assert "NUL" in str(assert_fault(harness.a.post("/instances", body), 400))


@pytest.mark.parametrize(
    "url",
    [
        "/backups?instance_id=%00",
        "/backups?datastore=a%00b",
        "/backups/%00",
        "/instances/x%00y",
        "/instances/x%00y/backups",
        "/backup_strategies?instance_id=%00",
    ],
)
def test_nul_in_a_url_is_400(harness: Harness, url: str) -> None:
    assert_fault(harness.a.get(url), 400)


def test_json_nested_very_deep_is_400(harness: Harness) -> None:
    for depth in (33, 5_000, 100_000):
        raw = b'{"backup": ' + b"[" * depth + b"]" * depth + b"}"
        r = harness.a.post("/backups", content=raw, headers={"Content-Type": "application/json"})
        fault = assert_fault(r, 400)
        assert "nested deeper" in fault["badRequest"]["message"]


def test_a_user_host_of_percent_is_accepted_as_trove_does(harness: Harness) -> None:
    for host in ("%", "%.example.com", "10.0.0.%"):
        body = {
            "instance": {
                "name": f"h{len(host)}",
                "datastore": {"type": "sqlite"},
                "users": [{"name": "app", "password": "pw", "host": host}],
            }
        }
        r = harness.a.post("/instances", body)
        assert r.status_code == 200, r.text
    bad = {"instance": {"name": "x", "users": [{"name": "a", "password": "p", "host": "a b"}]}}
    assert_fault(harness.a.post("/instances", bad), 400)


def test_links_ignore_the_host_header(harness: Harness) -> None:
    evil = {"Host": "evil.example"}
    flavors = harness.a.get("/flavors", headers=evil).json()["flavors"]
    versions = harness.a.client.get("/", headers=evil).json()["versions"]
    hrefs = [link["href"] for f in flavors for link in f["links"]]
    hrefs += [link["href"] for v in versions for link in v["links"]]
    assert hrefs
    for href in hrefs:
        assert href.startswith("http://127.0.0.1:8779/"), href


def test_links_use_the_public_endpoint_when_set(tmp_path: Path) -> None:
    h = make_harness(tmp_path, public_endpoint="https://backups.example.com/trove/")
    try:
        flavors = h.a.get("/flavors", headers={"Host": "evil.example"}).json()["flavors"]
        href = flavors[0]["links"][0]["href"]
        assert href == f"https://backups.example.com/trove/v1.0/{h.a.project}/flavors/1"
    finally:
        h.container.close()
