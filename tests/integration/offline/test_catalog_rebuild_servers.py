"""`strongroom catalog rebuild` with every datastore: managed PostgreSQL and MariaDB servers
and a SQLite instance, each backed up through the service (a full, then an incremental
after more writes), the metadata database deleted, the catalog rebuilt from the local
store; then every backup restores through the API into a new instance holding exactly
the rows it held, and deletes still work."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from recovery_support import (
    Taken,
    restore_and_read,
    run,
    stop_and_forget,
    take_sqlite_chain,
    write_config,
)

from fixtures.service import Caller, Harness, make_harness, wait_for
from support.mariadb import Login, query, remove_os_users_under, require_mariadb
from support.mariadb import stop_servers_under as stop_mariadb_under
from support.postgresql_service import PG_MAJOR, connect, reachable_dir, wait_status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(900),
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]

PASSWORD = "Rebuild-" + secrets.token_hex(6)
WAIT = 300


@pytest.fixture
def base() -> Iterator[Path]:
    require_mariadb()
    with reachable_dir("sr-rebuild-") as path:
        try:
            yield path
        finally:
            stop_mariadb_under(path)
            remove_os_users_under(path)


def harness(base: Path) -> Harness:
    return make_harness(
        base / "service",
        datastores=["sqlite", "postgresql", "mariadb"],
        postgresql_allowed_hosts=["127.0.0.1"],
        mariadb_allowed_hosts=["127.0.0.1"],
        engine_timeout=120,
        chunk_size=256 * 1024,
    )


def active(caller: Caller, instance_id: str) -> dict[str, Any]:
    return wait_status(
        lambda: caller.get(f"/instances/{instance_id}").json()["instance"], "ACTIVE", WAIT
    )


def completed(caller: Caller, backup_id: str) -> dict[str, Any]:
    return wait_status(
        lambda: caller.get(f"/backups/{backup_id}").json()["backup"], "COMPLETED", WAIT
    )


def create(caller: Caller, kind: str, **extra: Any) -> dict[str, Any]:
    return caller.create_instance(
        f"{kind}-src",
        datastore={"type": kind},
        databases=[{"name": "app"}],
        users=[{"name": "app", "password": PASSWORD, "databases": [{"name": "app"}]}],
        **extra,
    )


def pg_rows(view: dict[str, Any]) -> list[tuple[Any, ...]]:
    conn = view["connection"]
    params = {
        "host": conn["host"],
        "port": int(conn["port"]),
        "user": "app",
        "password": PASSWORD,
        "dbname": "app",
    }
    with connect(params) as c:
        return list(c.execute("SELECT id, body FROM t ORDER BY id"))


def pg_sql(view: dict[str, Any], sql: str) -> None:
    conn = view["connection"]
    with connect(
        {
            "host": conn["host"],
            "port": int(conn["port"]),
            "user": "app",
            "password": PASSWORD,
            "dbname": "app",
        }
    ) as c:
        c.execute(sql)


def mdb_login(view: dict[str, Any]) -> Login:
    return Login.from_view(view["connection"], "app", PASSWORD, "app")


def mdb_rows(view: dict[str, Any]) -> list[tuple[Any, ...]]:
    return query(mdb_login(view), "SELECT id, body FROM t ORDER BY id")


def take_server_chain(caller: Caller, kind: str, taken: Taken, reader: Any, sql: Any) -> None:
    view = active(caller, create(caller, kind)["id"])
    taken.instances[kind] = view["id"]
    sql(view, "CREATE TABLE t (id int PRIMARY KEY, body text)")
    sql(view, "INSERT INTO t VALUES " + ",".join(f"({i}, 'first {i}')" for i in range(300)))
    full = completed(caller, caller.create_backup(view["id"], f"{kind}-full")["id"])
    taken.backups[f"{kind}-0"] = full
    taken.expected[full["id"]] = reader(view)
    sql(view, "UPDATE t SET body = 'changed' WHERE id % 7 = 0")
    sql(view, "DELETE FROM t WHERE id >= 280")
    incr = caller.create_backup(view["id"], f"{kind}-incr", incremental=1)
    incr = completed(caller, incr["id"])
    taken.backups[f"{kind}-1"] = incr
    taken.expected[incr["id"]] = reader(view)
    for backup in (full, incr):
        taken.owner[backup["id"]] = "a"


def restore_server(caller: Caller, kind: str, backup_id: str) -> dict[str, Any]:
    inst = caller.create_instance(
        f"{kind}-restored", datastore={"type": kind}, restorePoint={"backupRef": backup_id}
    )
    return active(caller, inst["id"])


def test_catalog_rebuild_restores_every_datastore(base: Path) -> None:
    (base / "service").mkdir(mode=0o711)
    h = harness(base)
    taken = Taken()
    take_server_chain(h.a, "postgresql", taken, pg_rows, pg_sql)
    take_server_chain(
        h.a, "mariadb", taken, mdb_rows, lambda view, sql: query(mdb_login(view), sql)
    )
    take_sqlite_chain(h, "a", "sqlite", taken, links=2)
    before = {bid: h.a.get(f"/backups/{bid}").json()["backup"] for bid in taken.expected}
    data = h.settings.data_dir
    stop_and_forget(h)

    config = write_config(base / "strongroom.toml", data)
    rebuilt = run("catalog", "rebuild", "--store", "local", "--config", config)
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert "imported 6 backups and 3 detached instances" in rebuilt.stdout

    h2 = harness(base)
    try:
        listed = {b["id"]: b for b in h2.a.get("/backups").json()["backups"]}
        assert set(listed) == set(before)
        for bid, was in before.items():
            for name in ("parent_id", "instance_id", "datastore", "locationRef", "status"):
                assert listed[bid][name] == was[name], (bid, name)
        for kind in ("postgresql", "mariadb"):
            reader = pg_rows if kind == "postgresql" else mdb_rows
            for n in (0, 1):
                bid = taken.backups[f"{kind}-{n}"]["id"]
                assert reader(restore_server(h2.a, kind, bid)) == taken.expected[bid], bid
        for n in (0, 1):
            bid = taken.backups[f"sqlite-{n}"]["id"]
            assert restore_and_read(h2.a, bid) == taken.expected[bid]
        # A rebuilt chain deletes as before: the incremental first, then the full.
        for n in (1, 0):
            bid = taken.backups[f"postgresql-{n}"]["id"]
            assert h2.a.delete(f"/backups/{bid}").status_code == 202
            gone = data / "objects" / "database-backups" / bid
            wait_for(lambda gone=gone: not gone.exists(), timeout=60)
            assert h2.a.get(f"/backups/{bid}").status_code == 404
    finally:
        h2.container.close()
