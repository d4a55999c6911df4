"""PostgreSQL through python-troveclient against a live ``strongroom serve``: the Trove
calls a client makes, real servers behind them, and a service restart."""

from __future__ import annotations

import secrets
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from keystoneauth1 import session
from keystoneauth1.token_endpoint import Token
from troveclient import exceptions
from troveclient.v1 import client

from fixtures.live import LiveServer, start_server
from fixtures.service import wait_for
from support.postgresql import stop_server
from support.postgresql_service import PG_MAJOR, WAIT, connect, reachable_dir, server_processes, tcp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.compat,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]

PROJECT = "pglive"
APP_PASSWORD = "app-" + secrets.token_hex(8)


class Live:
    """The running server; a test may restart it on the same data dir and port."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.port = int(server.url.rsplit(":", 1)[1])


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    with reachable_dir("strongroom-pglive-") as base, pytest.MonkeyPatch.context() as mp:
        mp.setenv("STRONGROOM_DATASTORES", '["sqlite","postgresql"]')
        mp.setenv("STRONGROOM_ENGINE_TIMEOUT", "120")
        holder = Live(start_server(base / "data"))
        LOGS.append(holder.server.log_path)
        try:
            yield holder
        finally:
            holder.server.stop()


@pytest.fixture(scope="module")
def trove(live: Live) -> client.Client:
    token = live.server.token(PROJECT)
    sess = session.Session(auth=Token(live.server.endpoint(PROJECT), token))
    return client.Client(session=sess)


LOGS: list[Path] = []


def log_tail() -> str:
    return "\n".join(path.read_text()[-3000:] for path in LOGS if path.exists())


def wait_status(get: Callable[[], Any], wanted: str) -> Any:
    def check() -> Any:
        obj = get()
        assert obj.status not in ("ERROR", "FAILED"), getattr(obj, "fault", None) or getattr(
            obj, "fail_reason", None
        )
        return obj if obj.status == wanted else None

    try:
        return wait_for(check, timeout=WAIT, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; service log:\n{log_tail()}") from None


def gone(get: Callable[[], Any]) -> bool:
    try:
        get()
    except exceptions.NotFound:
        return True
    return False


def create_pg(trove: client.Client, name: str, **kwargs: Any) -> Any:
    return trove.instances.create(
        name, "1", datastore="postgresql", datastore_version=PG_MAJOR, **kwargs
    )


def app(inst: Any) -> dict[str, Any]:
    return tcp(inst.connection, "app", APP_PASSWORD, "shop")


def items(inst: Any) -> list[tuple[Any, ...]]:
    with connect(app(inst)) as c:
        return list(c.execute("SELECT id, name, qty FROM items ORDER BY id"))


APP_USER = [{"name": "app", "password": APP_PASSWORD, "databases": [{"name": "shop"}]}]


def test_troveclient_full_incremental_restore(trove: client.Client) -> None:
    inst = create_pg(trove, "pg-source", databases=[{"name": "shop"}], users=APP_USER)
    assert inst.status == "BUILD"
    inst = wait_status(lambda: trove.instances.get(inst.id), "ACTIVE")
    assert inst.connection["users"] == ["app"] and "password" not in inst.connection
    with connect(app(inst)) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int)")
        c.execute(
            "INSERT INTO items SELECT g, 'item ' || g, g % 17 FROM generate_series(1, 5000) g"
        )
    at_full = items(inst)
    full = trove.backups.create("pg-full", inst.id, description="full")
    full = wait_status(lambda: trove.backups.get(full.id), "COMPLETED")
    with connect(app(inst)) as c:
        c.execute("INSERT INTO items SELECT g, 'new ' || g, 1 FROM generate_series(5001, 5500) g")
        c.execute("UPDATE items SET qty = qty + 100 WHERE id % 10 = 0")
        c.execute("DELETE FROM items WHERE id % 97 = 0")
    at_incr = items(inst)
    assert at_incr != at_full
    incr = trove.backups.create("pg-incr", inst.id, incremental=True)
    assert incr.parent_id == full.id
    incr = wait_status(lambda: trove.backups.get(incr.id), "COMPLETED")
    print(f"\ntroveclient: full stored_bytes {full.stored_bytes}, incr {incr.stored_bytes}")
    assert full.datastore["type"] == "postgresql"
    assert {b.id for b in trove.backups.list(datastore="postgresql")} >= {full.id, incr.id}
    assert {b.name for b in trove.instances.backups(inst.id)} == {"pg-full", "pg-incr"}

    restored = {
        b.id: create_pg(trove, f"from-{b.name}", restorePoint={"backupRef": b.id})
        for b in (full, incr)
    }
    for (backup_id, r), expected in zip(restored.items(), (at_full, at_incr), strict=True):
        got = wait_status(lambda r=r: trove.instances.get(r.id), "ACTIVE")
        assert got.connection["port"] != inst.connection["port"]
        assert items(got) == expected, f"restore of {backup_id} differs"
    for r in restored.values():
        trove.instances.delete(r.id)
    for r in restored.values():
        wait_for(lambda r=r: gone(lambda: trove.instances.get(r.id)), timeout=WAIT)


def test_managed_server_returns_after_restart_and_delete_removes_it(
    trove: client.Client, live: Live
) -> None:
    inst = create_pg(trove, "durable", databases=[{"name": "shop"}], users=APP_USER)
    inst = wait_status(lambda: trove.instances.get(inst.id), "ACTIVE")
    with connect(app(inst)) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, qty int)")
        c.execute("INSERT INTO items VALUES (1, 'kept', 3)")
    home = live.server.data_dir / "instances" / inst.id
    assert (home / "data" / "PG_VERSION").exists()

    assert live.server.stop(signal.SIGTERM) == 0
    # The host goes down with the service: the server stops too.
    stop_server(home / "data", "fast")
    assert not (home / "data" / "postmaster.pid").exists()
    live.server = start_server(live.server.data_dir, port=live.port)

    back = trove.instances.get(inst.id)
    assert back.status == "ACTIVE", getattr(back, "fault", None)
    assert (home / "data" / "postmaster.pid").exists()
    assert items(back) == [(1, "kept", 3)]

    trove.instances.delete(inst.id)
    wait_for(lambda: gone(lambda: trove.instances.get(inst.id)), timeout=WAIT)
    assert not home.exists()
    assert server_processes(home) == []
    with pytest.raises(psycopg.OperationalError):
        connect(app(back)).close()
