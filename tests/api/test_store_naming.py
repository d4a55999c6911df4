"""Containers a request names are checked against the store the backup goes to (400), and
the service refuses to start with a default container a store cannot hold."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from fixtures.service import Harness, make_harness
from strongroom.bootstrap import StartupError

# Nothing listens there: the S3 store is only named, never reached, by these requests.
UNREACHABLE_S3 = {
    "name": "s3",
    "kind": "s3",
    "endpoint_url": "http://127.0.0.1:9",
    "access_key": "k",
    "secret_key": "s",
}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = make_harness(
        tmp_path_factory.mktemp("naming"),
        stores=[{"name": "local", "kind": "local"}, UNREACHABLE_S3],
    )
    try:
        yield h
    finally:
        h.container.close()


def _backup(harness: Harness, container: str, driver: str) -> object:
    instance = "00000000-0000-0000-0000-000000000000"
    body = {"name": "b", "instance": instance, "swift_container": container}
    return harness.a.post("/backups", {"backup": {**body, "storage_driver": driver}})


@pytest.mark.parametrize("container", ["database_backups", "Upper", "ab", "a..b"])
def test_a_container_s3_cannot_hold_is_400_for_the_s3_store(
    harness: Harness, container: str
) -> None:
    r = _backup(harness, container, "s3")
    assert r.status_code == 400, r.text
    message = r.json()["badRequest"]["message"]
    assert container in message and "'s3'" in message and "S3 bucket name" in message


def test_the_same_container_is_fine_for_the_local_store(harness: Harness) -> None:
    r = _backup(harness, "database_backups", "local")
    assert r.status_code == 404, r.text  # past the name check: the instance is unknown


def test_a_strategy_is_checked_against_the_default_store(tmp_path: Path) -> None:
    h = make_harness(
        tmp_path, stores=[UNREACHABLE_S3, {"name": "local", "kind": "local"}], default_store="s3"
    )
    try:
        r = h.a.post("/backup_strategies", {"backup_strategy": {"swift_container": "My_Backups"}})
        assert r.status_code == 400, r.text
        ok = h.a.post("/backup_strategies", {"backup_strategy": {"swift_container": "my-backups"}})
        assert ok.status_code == 202, ok.text
    finally:
        h.container.close()


def test_a_default_container_an_s3_store_cannot_hold_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(StartupError, match=r"default_container .* store 's3'"):
        make_harness(tmp_path, stores=[UNREACHABLE_S3], default_container="database_backups")
