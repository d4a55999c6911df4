"""MariaDB through the API: the real service in-process (FastAPI TestClient over the real
services, the real MariaDB engine and a local store), with managed servers run as ``mysql``
under a scratch directory that user can reach.

The source instance holds real InnoDB data written by the request's user over TCP. A
writer runs transfers while the full backup streams (the stream is held at its first bytes
until the writer has committed more, so the writes overlap the backup by construction);
the restore is compared table by table with the source as of the backup's last
transaction. The incremental chain is taken with the writer stopped, so each link is
compared with the source as it was when that link was taken.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import Caller, Harness, make_harness
from support.mariadb import (
    WAIT,
    ExternalServer,
    Login,
    Writer,
    force_checkpoint,
    hook_first_write,
    instance_pid,
    is_running,
    last_transaction,
    load_items,
    processes_mentioning,
    query,
    require_mariadb,
    scratch_root,
    snapshot,
    snapshot_as_of,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROWS = 100_000
APP_USER = "alice"
APP_PASSWORD = "alice-Secret-7"
OVERLAP_TRANSACTIONS = 30
MARIADB = {"type": "mariadb"}
EXT_PASSWORD = "Ext-backup-Pw-4f1c9e27"
EXT_WEAK_PASSWORD = "Ext-weak-Pw-9a0b3c5d"
EXT_APP_PASSWORD = "ext-app-Pw-1"


# -- API helpers --------------------------------------------------------------------------------
def wait_instance(caller: Caller, instance_id: str, status: str = "ACTIVE") -> dict[str, Any]:
    def ready() -> dict[str, Any] | None:
        r = caller.get(f"/instances/{instance_id}")
        assert r.status_code == 200, r.text
        inst: dict[str, Any] = r.json()["instance"]
        if inst["status"] == "ERROR" and status != "ERROR":
            raise AssertionError(f"instance failed: {inst.get('fault')}")
        return inst if inst["status"] == status else None

    result: dict[str, Any] = wait_until(ready, f"instance {instance_id} {status}")
    return result


def wait_backup(caller: Caller, backup_id: str, status: str = "COMPLETED") -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        b: dict[str, Any] = caller.get(f"/backups/{backup_id}").json()["backup"]
        if b["status"] == "FAILED" and status != "FAILED":
            raise AssertionError(f"backup failed: {b.get('fail_reason')}")
        return b if b["status"] == status else None

    result: dict[str, Any] = wait_until(done, f"backup {backup_id} {status}")
    return result


def backup(caller: Caller, instance_id: str, name: str, parent_id: str | None = None) -> Any:
    extra = {"parent_id": parent_id} if parent_id else {}
    created = caller.create_backup(instance_id, name, **extra)
    return wait_backup(caller, created["id"])


def restore(caller: Caller, backup_id: str, name: str) -> dict[str, Any]:
    inst = caller.create_instance(name, datastore=MARIADB, restorePoint={"backupRef": backup_id})
    assert inst["status"] == "BUILD"
    return wait_instance(caller, inst["id"])


def app_login(instance: dict[str, Any], database: str = "app") -> Login:
    return Login.from_view(instance["connection"], APP_USER, APP_PASSWORD, database)


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    require_mariadb()
    with scratch_root("sr-mdb-api-") as path:
        yield path


@pytest.fixture(scope="module")
def h(base: Path) -> Iterator[Harness]:
    harness = make_harness(
        base,
        datastores=["sqlite", "mariadb"],
        mariadb_allowed_hosts=["127.0.0.1"],
        mariadb_allowed_datadirs=[base / "ext"],
    )
    try:
        yield harness
    finally:
        harness.container.close()


@pytest.fixture(scope="module")
def mariadb_engine(h: Harness) -> Any:
    catalog = h.container.services.datastores
    version = catalog.version_by_id(catalog.get("mariadb").default_version_id or "")
    return catalog.engine_for(version)


def home_of(h: Harness, instance_id: str) -> Path:
    return h.settings.data_dir / "instances" / instance_id


@pytest.fixture(scope="module")
def source(h: Harness) -> dict[str, Any]:
    inst = h.a.create_instance(
        "source",
        datastore=MARIADB,
        databases=[{"name": "app"}, {"name": "empty_db"}],
        users=[{"name": APP_USER, "password": APP_PASSWORD, "databases": [{"name": "app"}]}],
    )
    assert inst["status"] == "BUILD"
    active = wait_instance(h.a, inst["id"])
    load_items(app_login(active), ROWS)
    return active


# -- tests ---------------------------------------------------------------------------------------
def test_datastores_list_mariadb_with_its_installed_version(h: Harness) -> None:
    out = subprocess.run(["mariadbd", "--version"], capture_output=True, text=True, check=True)
    match = re.search(r"Ver (\d+\.\d+)\.", out.stdout)
    assert match is not None
    r = h.a.get("/datastores")
    assert r.status_code == 200, r.text
    by_name = {d["name"]: d for d in r.json()["datastores"]}
    assert "mysql" not in by_name
    assert [v["name"] for v in by_name["mariadb"]["versions"]] == [match[1]]
    mariadb = by_name["mariadb"]
    assert mariadb["default_version"] == mariadb["versions"][0]["id"]
    r = h.a.get(f"/datastores/{mariadb['id']}/versions")
    assert r.status_code == 200, r.text
    assert [v["name"] for v in r.json()["versions"]] == [match[1]]


def test_managed_instance_is_built_with_the_requested_databases_and_users(
    h: Harness, source: dict[str, Any]
) -> None:
    assert source["datastore"]["type"] == "mariadb"
    connection = source["connection"]
    assert set(connection) == {"host", "port", "users", "databases"}
    assert connection["databases"] == ["app", "empty_db"]
    assert connection["host"] == "127.0.0.1"
    assert connection["users"] == [{"name": APP_USER, "host": "%", "databases": ["app"]}]
    body = h.a.get(f"/instances/{source['id']}").text
    assert "password" not in body.lower()
    assert APP_PASSWORD not in body
    listing = h.a.get("/instances").text
    assert APP_PASSWORD not in listing and "password" not in listing.lower()
    # The server runs as mysql from the instance's home, and the user reaches it over TCP.
    home = home_of(h, source["id"])
    pid = instance_pid(home)
    assert Path(f"/proc/{pid}").stat().st_uid == Path(home / "data").stat().st_uid != 0
    login = app_login(source)
    assert query(login, "SELECT COUNT(*) FROM items")[0][0] == ROWS
    assert (
        query(login, "SELECT engine FROM information_schema.TABLES WHERE table_name='items'")[0][0]
        == "InnoDB"
    )
    dbs = {row[0] for row in query(login, "SHOW DATABASES")}
    assert "app" in dbs and "empty_db" not in dbs  # alice was granted app only


def test_full_backup_under_writes_restores_the_source_as_of_the_backup(
    h: Harness, source: dict[str, Any], mariadb_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    login = app_login(source)
    writer = Writer(login)
    writer.start()
    seen: dict[str, int] = {}

    def overlap() -> None:
        # mariabackup has started streaming: let the writer commit more before it goes on.
        seen["at_start"] = writer.committed
        writer.wait_for(seen["at_start"] + OVERLAP_TRANSACTIONS)

    hook_first_write(monkeypatch, mariadb_engine, overlap)
    try:
        writer.wait_for(5)
        done = backup(h.a, source["id"], "busy-full")
    finally:
        total = writer.finish()
    assert done["parent_id"] is None and done["datastore"]["type"] == "mariadb"
    assert "at_start" in seen, "the backup never streamed"
    restored = restore(h.a, done["id"], "from-busy-full")
    restored_login = app_login(restored)
    last = last_transaction(restored_login)
    # The backup's point in time lies inside its window, after the overlapping writes.
    assert seen["at_start"] + OVERLAP_TRANSACTIONS <= last <= total
    assert snapshot(restored_login) == snapshot_as_of(login, last)
    assert restored["connection"]["port"] != source["connection"]["port"]
    assert restored["connection"]["users"] == source["connection"]["users"]


def test_incremental_chain_restores_each_link(h: Harness, source: dict[str, Any]) -> None:
    login = app_login(source)
    force_checkpoint(home_of(h, source["id"]))
    states = [snapshot(login)]
    full = backup(h.a, source["id"], "chain-full")
    chain = [full]
    max_id = int(query(login, "SELECT MAX(id) FROM items")[0][0])
    for step in (1, 2):
        # 1% of the rows, clustered as recent changes are, and a few new ones.
        low = max_id // 3 * step
        changed = query(
            login,
            "SELECT COUNT(*) FROM items WHERE id BETWEEN %s AND %s",
            (low, low + ROWS // 100 - 1),
        )[0][0]
        assert changed == ROWS // 100
        query(
            login,
            "UPDATE items SET n = n + %s, val = CONCAT('changed-', id) WHERE id BETWEEN %s AND %s",
            (step, low, low + ROWS // 100 - 1),
        )
        query(
            login, "INSERT INTO items (grp, val, n) SELECT seq, 'new', %s FROM seq_1_to_50", (step,)
        )
        states.append(snapshot(login))
        incr = backup(h.a, source["id"], f"chain-incr-{step}", parent_id=chain[-1]["id"])
        assert incr["parent_id"] == chain[-1]["id"]
        chain.append(incr)
    assert len({s["app.items"] for s in states}) == 3  # each link has something to show
    print(
        f"\nMariaDB stored_bytes ({ROWS} rows): full {chain[0]['stored_bytes']}, "
        f"incremental after 1% updated {chain[1]['stored_bytes']}, "
        f"second incremental {chain[2]['stored_bytes']}"
    )
    assert all(b["stored_bytes"] > 0 for b in chain)
    assert chain[1]["stored_bytes"] * 4 < chain[0]["stored_bytes"]
    for index, link in enumerate(chain):
        restored = restore(h.a, link["id"], f"chain-{index}")
        assert snapshot(app_login(restored)) == states[index], f"link {index}"


def test_server_killed_mid_backup_fails_the_backup_with_a_reason(
    h: Harness, mariadb_engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    inst = h.a.create_instance(
        "doomed",
        datastore=MARIADB,
        databases=[{"name": "app"}],
        users=[{"name": APP_USER, "password": APP_PASSWORD, "databases": [{"name": "app"}]}],
    )
    inst = wait_instance(h.a, inst["id"])
    load_items(app_login(inst), 20_000)
    home = home_of(h, inst["id"])
    pid = instance_pid(home)
    streaming = threading.Event()
    killed = threading.Event()

    def hold() -> None:
        # The stream has started; it goes on only once the server is gone.
        streaming.set()
        assert killed.wait(WAIT), "the test never killed the server"

    hook_first_write(monkeypatch, mariadb_engine, hold)
    created = h.a.create_backup(inst["id"], "doomed-full")
    try:
        assert streaming.wait(WAIT), "the backup never streamed"
        shown = h.a.get(f"/backups/{created['id']}").json()["backup"]
        assert shown["status"] == "BUILDING"
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not is_running(pid), "the killed server to exit")
    finally:
        killed.set()
    failed = wait_backup(h.a, created["id"], "FAILED")
    reason = failed["fail_reason"]
    print(f"\nbackup of a killed server: {reason}")
    assert re.search(r"gone away|Lost connection|connect", reason), reason
    assert "Traceback" not in reason and str(h.settings.data_dir / "master") not in reason
    assert "stored_bytes" not in failed and failed["locationRef"] is None
    # Nothing of it is left in the store.
    objects = h.settings.data_dir / "objects"
    assert not list(objects.rglob(f"*{created['id']}*"))
    # A second backup of the dead server is refused with a reason too.
    again = wait_backup(h.a, h.a.create_backup(inst["id"], "doomed-again")["id"], "FAILED")
    assert "cannot connect" in again["fail_reason"], again["fail_reason"]


def test_corrupted_chunk_refuses_the_restore(h: Harness, source: dict[str, Any]) -> None:
    done = backup(h.a, source["id"], "to-corrupt")
    directory = h.settings.data_dir / "objects" / "database-backups" / done["id"]
    chunks = sorted(directory.glob("chunk-*"))
    assert len(chunks) >= 3, chunks
    victim = chunks[len(chunks) // 2]
    data = bytearray(victim.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 32] = bytes(b ^ 0xA5 for b in data[middle : middle + 32])
    victim.write_bytes(bytes(data))
    inst = h.a.create_instance(
        "from-corrupted", datastore=MARIADB, restorePoint={"backupRef": done["id"]}
    )
    failed = wait_instance(h.a, inst["id"], "ERROR")
    fault = failed["fault"]["message"]
    print(f"\nrestore of a corrupted chunk: {fault}")
    index = int(victim.name.split("-")[1])
    assert fault.startswith("IntegrityError") and f"chunk {index}:" in fault, fault
    home = home_of(h, inst["id"])
    assert not home.exists()
    assert processes_mentioning(home) == []
    assert "connection" not in failed


def test_sqlite_backup_cannot_be_restored_into_mariadb(h: Harness) -> None:
    lite = h.a.create_instance("lite")
    wait_instance(h.a, lite["id"])
    done = backup(h.a, lite["id"], "lite-full")
    r = h.a.post(
        "/instances",
        {
            "instance": {
                "name": "mismatch",
                "flavorRef": "1",
                "datastore": MARIADB,
                "restorePoint": {"backupRef": done["id"]},
            }
        },
    )
    assert r.status_code == 400, r.text
    assert r.json() == {
        "badRequest": {
            "code": 400,
            "message": "The datastore from which the backup was taken, sqlite, does not match "
            "the destination datastore of mariadb.",
        }
    }


def test_backups_list_filters_by_datastore(h: Harness, source: dict[str, Any]) -> None:
    r = h.a.get("/backups?datastore=mariadb")
    assert r.status_code == 200, r.text
    mariadb = r.json()["backups"]
    assert mariadb and all(b["datastore"]["type"] == "mariadb" for b in mariadb)
    assert {"busy-full", "chain-full", "chain-incr-1"} <= {b["name"] for b in mariadb}
    lite = h.a.get("/backups?datastore=sqlite").json()["backups"]
    assert lite and all(b["datastore"]["type"] == "sqlite" for b in lite)
    everything = h.a.get("/backups?limit=1000").json()["backups"]
    assert {b["id"] for b in everything} == {b["id"] for b in mariadb + lite}
    # Another project sees none of them.
    assert h.b.get("/backups?datastore=mariadb").json()["backups"] == []


def test_external_server_on_this_host(h: Harness, base: Path) -> None:
    accounts = "\n".join(
        [
            f"CREATE USER 'ext_backup'@'%' IDENTIFIED BY '{EXT_PASSWORD}';",
            "GRANT RELOAD, PROCESS, LOCK TABLES, BINLOG MONITOR ON *.* TO 'ext_backup'@'%';",
            f"CREATE USER 'ext_weak'@'%' IDENTIFIED BY '{EXT_WEAK_PASSWORD}';",
            "GRANT RELOAD ON *.* TO 'ext_weak'@'%';",
            "CREATE DATABASE extdb;",
            f"CREATE USER 'ext_app'@'%' IDENTIFIED BY '{EXT_APP_PASSWORD}';",
            "GRANT ALL PRIVILEGES ON extdb.* TO 'ext_app'@'%';",
            "",
        ]
    )
    (base / "ext").mkdir(mode=0o711)
    server = ExternalServer(base / "ext" / "server", accounts)
    server.start()
    bodies: list[str] = []
    try:
        ext_login = Login("127.0.0.1", server.port, "ext_app", EXT_APP_PASSWORD, "extdb")
        load_items(ext_login, 20_000)
        query(ext_login, "UPDATE items SET n = id % 7 WHERE id % 3 = 0")
        params = {
            "host": "127.0.0.1",
            "port": server.port,
            "user": "ext_backup",
            "password": EXT_PASSWORD,
            "datadir": str(server.datadir),
        }

        def register(name: str, external: dict[str, Any]) -> Any:
            r = h.a.post(
                "/instances",
                {
                    "instance": {
                        "name": name,
                        "flavorRef": "1",
                        "datastore": MARIADB,
                        "external": external,
                    }
                },
            )
            bodies.append(r.text)
            return r

        # Refusals: not on the operator's lists → 403; a user without the privileges
        # mariabackup needs → 400.
        r = register("elsewhere", {**params, "host": "192.0.2.10"})
        assert r.status_code == 403, r.text
        assert "allowed" in r.json()["forbidden"]["message"]
        r = register("outside", {**params, "datadir": str(base / "data")})
        assert r.status_code == 403, r.text
        r = register("weak", {**params, "user": "ext_weak", "password": EXT_WEAK_PASSWORD})
        assert r.status_code == 400, r.text
        assert "LOCK TABLES" in r.json()["badRequest"]["message"]
        r = register("wrong-password", {**params, "password": EXT_PASSWORD + "x"})
        assert r.status_code == 400, r.text

        r = register("external", params)
        assert r.status_code == 200, r.text
        ext = r.json()["instance"]
        assert ext["status"] == "ACTIVE" and ext["kind"] == "external"
        assert ext["connection"] == {
            "host": "127.0.0.1",
            "port": server.port,
            "users": [{"name": "ext_backup"}],
        }
        expected = snapshot(ext_login)
        created = h.a.create_backup(ext["id"], "ext-full")
        done = wait_backup(h.a, created["id"])
        restored = h.a.create_instance(
            "from-external", datastore=MARIADB, restorePoint={"backupRef": done["id"]}
        )
        restored = wait_instance(h.a, restored["id"])
        restored_login = Login.from_view(
            restored["connection"], "ext_app", EXT_APP_PASSWORD, "extdb"
        )
        assert snapshot(restored_login) == expected
        for api_path in (
            f"/instances/{ext['id']}",
            "/instances",
            f"/backups/{done['id']}",
            "/backups",
            f"/instances/{ext['id']}/backups",
        ):
            bodies.append(h.a.get(api_path).text)
        bodies.append(h.admin.get("/instances").text)
    finally:
        server.stop()
    for body in bodies:
        assert EXT_PASSWORD not in body and EXT_WEAK_PASSWORD not in body
    # The metadata database holds the password sealed only.
    for suffix in ("", "-wal", "-shm"):
        path = h.settings.data_dir / f"strongroom.db{suffix}"
        if path.exists():
            stored = path.read_bytes()
            for secret in (EXT_PASSWORD, EXT_WEAK_PASSWORD, APP_PASSWORD):
                assert secret.encode() not in stored, path.name
