"""A project names only the containers the operator allows (``allowed_containers``).

Each store creates a container on its first write, in the service's own account, and
nothing removes it: a project naming a new container per backup would exhaust the
account's container limit, and could write into any container the service's credentials
reach. By default a request may name only the default container; every place a request
names one is held to that (backups, strategies, schedules and their copy_to, copies),
before anything is written. Real SQLite instances, two real local stores."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import swiftclient  # type: ignore[import-untyped]
from swiftclient.exceptions import ClientException  # type: ignore[import-untyped]

from fixtures.service import Caller, Harness, make_harness
from fixtures.swift import SwiftServer, unique_container
from strongroom.config import Settings
from strongroom.domain.model import BackupStrategy, ProjectId
from strongroom.storage.config import S3StoreConfig, SwiftStoreConfig
from strongroom.storage.s3 import S3Backend
from strongroom.storage.swift import SwiftBackend

ENV = "STRONGROOM_ALLOWED_CONTAINERS"
DEFAULT = "database-backups"


def _harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, allowed: str | None) -> Harness:
    # The suites' conftest allows any name; these tests set the rule themselves.
    if allowed is None:
        monkeypatch.delenv(ENV, raising=False)
    else:
        monkeypatch.setenv(ENV, allowed)
    return make_harness(
        tmp_path,
        stores=[
            {"name": "local", "kind": "local", "root": str(tmp_path / "primary")},
            {"name": "offsite", "kind": "local", "root": str(tmp_path / "offsite")},
        ],
        default_store="local",
    )


@pytest.fixture
def h(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = _harness(tmp_path, monkeypatch, None)
    try:
        yield harness
    finally:
        harness.container.close()


@pytest.fixture
def nightly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    harness = _harness(tmp_path, monkeypatch, '["nightly-*"]')
    try:
        yield harness
    finally:
        harness.container.close()


def containers(root: Path) -> set[str]:
    """The containers a local store holds (its top-level directories)."""
    return {p.name for p in root.iterdir() if p.is_dir()} if root.exists() else set()


def assert_refused(r: Any, container: str) -> None:
    assert r.status_code == 400, r.text
    fault = r.json()["badRequest"]
    assert fault["code"] == 400
    assert container in fault["message"]
    assert "allowed_containers" in fault["message"]


def backup(caller: Caller, instance_id: str, container: str) -> Any:
    body = {"backup": {"name": "b", "instance": instance_id, "swift_container": container}}
    return caller.post("/backups", body)


def active_instance(caller: Caller) -> str:
    return str(caller.wait_instance(caller.create_instance()["id"])["id"])


def schedule(caller: Caller, instance_id: str, **extra: Any) -> Any:
    body = {"instance_id": instance_id, "name": "nightly", "cron": "0 3 * * *", **extra}
    return caller.post("/backup_schedules", {"backup_schedule": body})


def test_the_default_setting_allows_only_the_default_container(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert Settings(data_dir=tmp_path).allowed_containers == []
    monkeypatch.setenv(ENV, '["nightly-*", "offsite"]')
    assert Settings(data_dir=tmp_path).allowed_containers == ["nightly-*", "offsite"]


def test_each_stores_own_default_container_is_allowed_too(tmp_path: Path) -> None:
    from strongroom.bootstrap import allowed_containers

    swift = SwiftStoreConfig(
        name="swift",
        auth_url="http://127.0.0.1:9/auth/v1.0",
        user="a:b",
        key="k",
        default_container="swift-home",
    )
    s3 = S3StoreConfig(name="s3", default_bucket="s3-home")
    settings = Settings(
        data_dir=tmp_path, stores=[swift, s3], default_container="main", allowed_containers=[]
    )
    allowed = allowed_containers(settings)
    for name in ("main", "swift-home", "s3-home"):
        assert allowed.admits(name)
    for name in ("other", "Main", "swift-home2", "*"):
        assert not allowed.admits(name)


def test_a_backup_naming_another_container_is_refused_before_anything_is_written(
    h: Harness, tmp_path: Path
) -> None:
    inst = active_instance(h.a)
    for container in ("other", "other_app", "metadata-backups", "c1"):
        assert_refused(backup(h.a, inst, container), container)
    assert h.a.get("/backups").json()["backups"] == []
    assert containers(tmp_path / "primary") == set()
    # The default container, left out or named, still takes backups.
    done = h.a.wait_backup(h.a.create_backup(inst)["id"])
    h.a.wait_backup(h.a.create_backup(inst, "named", swift_container=DEFAULT)["id"])
    assert DEFAULT in done["locationRef"]
    assert containers(tmp_path / "primary") == {DEFAULT}


def test_a_strategy_naming_another_container_is_refused(h: Harness, tmp_path: Path) -> None:
    inst = active_instance(h.a)
    body = {"backup_strategy": {"instance_id": inst, "swift_container": "other"}}
    assert_refused(h.a.post("/backup_strategies", body), "other")
    # A strategy stored while any name was allowed no longer sends backups there.
    with h.container.uow(write=True) as uow:
        uow.strategies.upsert(BackupStrategy(ProjectId(h.a.project), "", "legacy"))
        uow.commit()
    r = h.a.post("/backups", {"backup": {"name": "b", "instance": inst}})
    assert_refused(r, "legacy")
    assert containers(tmp_path / "primary") == set()


def test_a_schedule_naming_another_container_is_refused(h: Harness) -> None:
    inst = active_instance(h.a)
    assert_refused(schedule(h.a, inst, swift_container="other"), "other")
    copy_to = {"storage_driver": "offsite", "swift_container": "far"}
    assert_refused(schedule(h.a, inst, copy_to=copy_to), "far")
    assert h.a.get("/backup_schedules").json()["backup_schedules"] == []
    # The default container is still a schedule's to name, in either store.
    r = schedule(
        h.a,
        inst,
        swift_container=DEFAULT,
        copy_to={"storage_driver": "offsite", "swift_container": DEFAULT},
    )
    assert r.status_code == 200, r.text


def test_a_copy_naming_another_container_is_refused(h: Harness, tmp_path: Path) -> None:
    inst = active_instance(h.a)
    done = h.a.wait_backup(h.a.create_backup(inst)["id"])
    spec = {"storage_driver": "offsite", "swift_container": "offsite-c"}
    assert_refused(h.a.post(f"/backups/{done['id']}/copy", {"copy": spec}), "offsite-c")
    h.wait_idle()
    assert containers(tmp_path / "offsite") == set()
    assert h.a.get(f"/backups/{done['id']}").json()["backup"]["copies"] == []


def test_a_pattern_admits_its_names_and_nothing_else(nightly: Harness, tmp_path: Path) -> None:
    h = nightly
    inst = active_instance(h.a)
    h.a.wait_backup(h.a.create_backup(inst, swift_container="nightly-x")["id"])
    refused = [
        "other",
        "nightly",  # the pattern needs the dash
        "Nightly-x",
        "NIGHTLY-X",
        "xnightly-x",
        "nightly\u2010x",  # a Unicode hyphen
        "n\u0456ghtly-x",  # a Cyrillic i
        "\uff4eightly-x",  # a fullwidth n
        "nightly-x/../other",
    ]
    for container in refused:
        r = backup(h.a, inst, container)
        assert r.status_code == 400, (container, r.text)
    assert containers(tmp_path / "primary") == {"nightly-x"}
    # Case is never folded, on any platform: not even for the default container.
    assert_refused(backup(h.a, inst, DEFAULT.upper()), DEFAULT.upper())


def test_a_real_swift_account_gets_no_container_a_request_names(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    swift_server: SwiftServer,
    swift_store_config: SwiftStoreConfig,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    home = swift_store_config.default_container
    h = make_harness(tmp_path, stores=[swift_store_config], default_container=home)
    account = swiftclient.Connection(
        authurl=swift_server.auth_url, user=swift_server.user, key=swift_server.key, retries=0
    )
    try:
        inst = active_instance(h.a)
        other = unique_container()
        assert_refused(backup(h.a, inst, other), other)
        h.a.wait_backup(h.a.create_backup(inst)["id"])
        h.wait_idle()
        with pytest.raises(ClientException) as missing:
            account.head_container(other)
        assert missing.value.http_status == 404
        account.head_container(home)  # the default container took the backup
    finally:
        account.close()
        h.container.close()


def test_an_s3_store_remembers_a_bounded_number_of_buckets() -> None:
    store = S3Backend(
        S3StoreConfig(
            name="s3",
            endpoint_url="http://127.0.0.1:9",
            access_key="a",
            secret_key="s",
        )
    )
    calls: list[str] = []

    class Client:
        def head_bucket(self, Bucket: str) -> None:
            calls.append(Bucket)

        def put_object(self, **_kw: Any) -> None:
            pass

    store._client = Client()
    for i in range(2000):
        store.put(f"bucket-{i:05d}/object", b"x")
    assert len(store._buckets) <= 1000
    calls.clear()
    store.put("bucket-01999/object", b"x")
    assert calls == []  # a recent bucket is not asked for again


def test_a_swift_store_remembers_a_bounded_number_of_containers() -> None:
    store = SwiftBackend(
        SwiftStoreConfig(name="swift", auth_url="http://127.0.0.1:9/auth/v1.0", user="a:b", key="k")
    )
    created: list[str] = []

    def call(op: str, key: str, fn: Any) -> None:
        if op == "create container":
            created.append(key)

    store._call = call  # type: ignore[method-assign]
    for i in range(2000):
        store.put(f"c-{i:05d}/object", b"x")
    assert len(store._containers) <= 1000
    created.clear()
    store.put("c-01999/object", b"x")
    assert created == []  # a recent container is not created again
