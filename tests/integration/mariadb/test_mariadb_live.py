"""MariaDB through python-troveclient against a live ``strongroom serve`` (a subprocess
with only the MariaDB engine enabled, its data dir under a directory ``mysql`` can reach):
create, write, full and incremental backups, a restore of each read back; then the
service is stopped and started again on the same data dir, and a deleted instance's
server and files are gone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from keystoneauth1 import session
from keystoneauth1.token_endpoint import Token
from troveclient import exceptions
from troveclient.v1 import client

from fixtures.live import LiveServer, start_server
from support.mariadb import (
    Login,
    instance_pid,
    is_running,
    processes_mentioning,
    query,
    require_mariadb,
    scratch_root,
    stop_pid,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.compat, pytest.mark.timeout(300)]

USER = "bob"
PASSWORD = "bob-Secret-3"


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    require_mariadb()
    with scratch_root("sr-mdb-live-") as path:
        yield path


@pytest.fixture(scope="module")
def server(base: Path) -> Iterator[dict[str, LiveServer]]:
    """The live server, in a box so a test can replace it with a restarted one."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("STRONGROOM_DATASTORES", '["mariadb"]')
        box = {"live": start_server(base / "data")}
        try:
            yield box
        finally:
            box["live"].stop()


@pytest.fixture(scope="module")
def project() -> str:
    return "p" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="module")
def token(server: dict[str, LiveServer], project: str) -> str:
    return server["live"].token(project)


def trove_for(live: LiveServer, project: str, token: str) -> Any:
    sess = session.Session(auth=Token(live.endpoint(project), token))
    return client.Client(session=sess)


def wait_status(get: Any, wanted: str) -> Any:
    def check() -> Any:
        obj = get()
        assert obj.status not in ("ERROR", "FAILED"), getattr(obj, "fault", None) or getattr(
            obj, "fail_reason", None
        )
        return obj if obj.status == wanted else None

    return wait_until(check, f"status {wanted}")


def login(instance: Any) -> Login:
    return Login.from_view(instance.connection, USER, PASSWORD, "shop")


def write(instance: Any, start: int, count: int) -> None:
    query(
        login(instance),
        "CREATE TABLE IF NOT EXISTS notes (id INT PRIMARY KEY, body TEXT NOT NULL) ENGINE=InnoDB",
    )
    query(
        login(instance),
        "INSERT INTO notes SELECT seq, CONCAT('note ', seq, ' ', REPEAT('x', 200)) "
        f"FROM seq_{start}_to_{start + count - 1}",
    )


def rows(instance: Any) -> list[tuple[Any, ...]]:
    return query(login(instance), "SELECT id, body FROM notes ORDER BY id")


@pytest.fixture(scope="module")
def source(server: dict[str, LiveServer], project: str, token: str) -> dict[str, Any]:
    trove = trove_for(server["live"], project, token)
    inst = trove.instances.create(
        "source",
        "1",
        volume={"size": 1},
        databases=[{"name": "shop"}],
        users=[{"name": USER, "password": PASSWORD, "databases": [{"name": "shop"}]}],
        datastore="mariadb",
    )
    inst = wait_status(lambda: trove.instances.get(inst.id), "ACTIVE")
    return {"id": inst.id, "at_full": None}


def test_troveclient_full_and_incremental_restore_read_back(
    server: dict[str, LiveServer], project: str, token: str, source: dict[str, Any]
) -> None:
    trove = trove_for(server["live"], project, token)
    inst = trove.instances.get(source["id"])
    assert inst.datastore["type"] == "mariadb"
    assert inst.connection["users"] == [{"name": USER, "host": "%", "databases": ["shop"]}]
    assert "password" not in str(inst.connection).lower()
    write(inst, 1, 2000)
    at_full = rows(inst)
    full = trove.backups.create("full", inst.id)
    full = wait_status(lambda: trove.backups.get(full.id), "COMPLETED")
    assert full.datastore["type"] == "mariadb"
    write(inst, 2001, 300)
    query(login(inst), "UPDATE notes SET body = CONCAT('edited ', id) WHERE id % 50 = 0")
    at_incr = rows(inst)
    assert at_incr != at_full
    incr = trove.backups.create("incr", inst.id, incremental=True)
    assert incr.parent_id == full.id
    incr = wait_status(lambda: trove.backups.get(incr.id), "COMPLETED")

    for backup, expected in ((full, at_full), (incr, at_incr)):
        restored = trove.instances.create(
            f"from-{backup.name}",
            "1",
            volume={"size": 1},
            restorePoint={"backupRef": backup.id},
            datastore="mariadb",
        )
        restored = wait_status(lambda r=restored: trove.instances.get(r.id), "ACTIVE")
        assert restored.connection["port"] != inst.connection["port"]
        assert rows(restored) == expected
    names = {b.name for b in trove.instances.backups(inst.id)}
    assert names == {"full", "incr"}
    assert {b.id for b in trove.backups.list(datastore="mariadb")} >= {full.id, incr.id}
    source["rows"] = at_incr


def test_managed_servers_come_back_after_a_service_restart(
    server: dict[str, LiveServer], project: str, token: str, source: dict[str, Any], base: Path
) -> None:
    home = base / "data" / "instances" / source["id"]
    data_dir = base / "data"
    # A plain restart: whatever the service does with its servers when it stops, the
    # instance is ACTIVE again afterwards and serves its data.
    assert server["live"].stop() == 0
    server["live"] = start_server(data_dir)
    trove = trove_for(server["live"], project, token)
    inst = wait_status(lambda: trove.instances.get(source["id"]), "ACTIVE")
    assert rows(inst) == source["rows"]
    # As after a host reboot: the server is down when the service comes back.
    before = instance_pid(home)
    assert server["live"].stop() == 0
    if is_running(before):
        stop_pid(before)
    assert processes_mentioning(home) == []
    server["live"] = start_server(data_dir)
    trove = trove_for(server["live"], project, token)
    inst = wait_status(lambda: trove.instances.get(source["id"]), "ACTIVE")
    after = instance_pid(home)
    assert after != before and is_running(after)
    assert rows(inst) == source["rows"]
    query(login(inst), "INSERT INTO notes VALUES (999999, 'after the restart')")
    source["rows"] = rows(inst)


def test_deleting_an_instance_stops_its_server_and_removes_its_files(
    server: dict[str, LiveServer], project: str, token: str, source: dict[str, Any], base: Path
) -> None:
    trove = trove_for(server["live"], project, token)
    home = base / "data" / "instances" / source["id"]
    pid = instance_pid(home)
    trove.instances.delete(source["id"])

    def gone() -> bool:
        try:
            trove.instances.get(source["id"])
        except exceptions.NotFound:
            return True
        return False

    wait_until(gone, "the instance deleted")
    assert not is_running(pid)
    assert not home.exists()
    assert processes_mentioning(home) == []
    # Its backups stay restorable.
    assert {b.name for b in trove.backups.list(datastore="mariadb")} >= {"full", "incr"}
