"""PostgreSQL through the API: the real service in-process (FastAPI TestClient), managed
and external PostgreSQL servers it runs or reaches, backups into its local store,
restores into new managed instances."""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from fixtures.service import Caller, Harness, make_harness, wait_for
from strongroom.engines.postgresql import filestream
from support.postgresql import PlainServer, pgbench_init, snapshot, stop_server
from support.postgresql_service import (
    LEDGER_DDL,
    PG_MAJOR,
    WAIT,
    LedgerState,
    LedgerWriter,
    as_plain,
    connect,
    fault_message,
    reachable_dir,
    rows,
    server_processes,
    tables,
    tcp,
    wait_status,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]

SCALE = 2
APP_PASSWORD = "app-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with reachable_dir("strongroom-pgapi-") as path:
        yield path


@pytest.fixture(scope="module", autouse=True)
def small_segments() -> Iterator[None]:
    """Backup streams cut into 1 MiB segments: restores here read each link from several
    offsets at once through the pipeline's verified reader, as large backups do."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(filestream, "SEGMENT_BYTES", 1024 * 1024)
        yield


@pytest.fixture(scope="module")
def h(base: Path) -> Iterator[Harness]:
    root = base / "service"
    root.mkdir(mode=0o711)
    harness = make_harness(
        root,
        datastores=["sqlite", "postgresql"],
        postgresql_allowed_hosts=["127.0.0.1"],
        engine_timeout=120,
        # incrementals read their parent chain and store page deltas (as by default into
        # a local store; tests/integration/stores/test_stores_page_deltas.py: the default)
        postgresql_page_deltas=True,
    )
    try:
        yield harness
    finally:
        harness.container.close()


def show(caller: Caller, kind: str, ident: str) -> dict[str, Any]:
    r = caller.get(f"/{kind}s/{ident}")
    assert r.status_code == 200, r.text
    view: dict[str, Any] = r.json()[kind]
    return view


def create_pg(caller: Caller, name: str, **extra: Any) -> dict[str, Any]:
    return caller.create_instance(name, datastore={"type": "postgresql"}, **extra)


def wait_active(caller: Caller, instance_id: str) -> dict[str, Any]:
    view: dict[str, Any] = wait_status(lambda: show(caller, "instance", instance_id), "ACTIVE")
    return view


def backup(caller: Caller, instance_id: str, name: str, **extra: Any) -> dict[str, Any]:
    created = caller.create_backup(instance_id, name, **extra)
    view: dict[str, Any] = wait_status(lambda: show(caller, "backup", created["id"]), "COMPLETED")
    return view


def restore(caller: Caller, backup_id: str, name: str, **extra: Any) -> str:
    created = create_pg(caller, name, restorePoint={"backupRef": backup_id}, **extra)
    assert created["status"] == "BUILD"
    return str(created["id"])


def delete_instance(h: Harness, caller: Caller, instance_id: str) -> None:
    """Delete through the API; the server must stop and its home go away."""
    home = h.container.handlers.home_of(instance_id)
    assert home.is_dir()
    r = caller.delete(f"/instances/{instance_id}")
    assert r.status_code == 202, r.text
    wait_for(lambda: caller.get(f"/instances/{instance_id}").status_code == 404, timeout=WAIT)
    assert not home.exists()
    assert server_processes(home) == []


@contextmanager
def held_store(h: Harness) -> Iterator[tuple[threading.Event, threading.Event]]:
    """Hold every chunk written to the store until ``release`` is set (or the block
    ends): the pipeline fills up and the engine's tool blocks on its output, mid-stream.
    ``entered`` is set when the first chunk arrives."""
    store = h.container.stores.backend(h.settings.default_store or "local")
    entered, release = threading.Event(), threading.Event()
    original_put = store.put
    had_own = "put" in vars(store)

    def held_put(key: str, data: bytes) -> None:
        if "/chunk-" in key:
            entered.set()
            release.wait(WAIT)
        original_put(key, data)

    store.put = held_put  # type: ignore[method-assign]
    try:
        yield entered, release
    finally:
        release.set()
        if had_own:
            store.put = original_put  # type: ignore[method-assign]
        else:
            del store.put  # the class's method again


def app_params(view: dict[str, Any], dbname: str = "bench") -> dict[str, Any]:
    return tcp(view["connection"], "app", APP_PASSWORD, dbname)


@pytest.fixture(scope="module")
def source(h: Harness) -> dict[str, Any]:
    """A managed instance made with the contract's databases and users, filled with
    pgbench tables (scale 2) and a ledger by the created user, over TCP."""
    created = create_pg(
        h.a,
        "source",
        databases=[{"name": "bench"}],
        users=[{"name": "app", "password": APP_PASSWORD, "databases": [{"name": "bench"}]}],
    )
    assert created["status"] == "BUILD"
    view = wait_active(h.a, created["id"])
    params = app_params(view)
    pgbench_init(as_plain(params), SCALE)
    with connect(params) as c:
        c.execute(LEDGER_DDL)
    return {"id": created["id"], "created": created, "view": view, "params": params}


def test_datastores_list_postgresql_with_installed_major(h: Harness) -> None:
    body = h.a.get("/datastores").json()
    (ds,) = [d for d in body["datastores"] if d["name"] == "postgresql"]
    names = [v["name"] for v in ds["versions"]]
    assert names == [PG_MAJOR]
    assert ds["default_version"] == ds["versions"][0]["id"]
    r = h.a.get(f"/datastores/postgresql/versions/{PG_MAJOR}")
    assert r.status_code == 200, r.text
    assert r.json()["version"]["name"] == PG_MAJOR


def test_managed_instance_build_active_and_connection(h: Harness, source: dict[str, Any]) -> None:
    view = source["view"]
    assert view["datastore"] == {
        "type": "postgresql",
        "version": PG_MAJOR,
        "version_number": PG_MAJOR,
    }
    conn = view["connection"]
    assert conn["managed"] is True
    assert conn["host"] == "127.0.0.1" and isinstance(conn["port"], int)
    assert conn["users"] == ["app"] and conn["databases"] == ["bench"]
    text = json.dumps(view)
    assert "password" not in text and APP_PASSWORD not in text
    assert APP_PASSWORD not in json.dumps(source["created"])
    with connect(source["params"]) as c:
        assert c.execute("SELECT current_user").fetchone() == ("app",)
        assert c.execute("SELECT count(*) FROM pgbench_branches").fetchone() == (SCALE,)
    listed = h.a.get("/instances").json()["instances"]
    assert APP_PASSWORD not in json.dumps(listed)
    # another project sees nothing of it
    assert h.b.get(f"/instances/{source['id']}").status_code == 404


def test_full_under_writes_then_incrementals_restore_exactly(
    h: Harness, source: dict[str, Any]
) -> None:
    params = source["params"]
    writer = LedgerWriter(params, SCALE)
    writer.start()
    try:
        writer.wait_for(20)
        before = writer.commits
        with held_store(h) as (entered, release):
            created = h.a.create_backup(source["id"], "full")
            assert entered.wait(WAIT), "the backup never wrote a chunk"
            # mid-stream now: the backup started and cannot have ended
            assert show(h.a, "backup", created["id"])["status"] == "BUILDING"
            at_hold = writer.commits
            during = writer.wait_for(at_hold + 100)
            # stopped before the stream ends, so the next incremental holds only its own
            # changes (the check below does not depend on it)
            total = writer.stop()
            release.set()
        full = wait_status(lambda: show(h.a, "backup", created["id"]), "COMPLETED")
    finally:
        writer.stop()
    assert during >= at_hold + 100 and at_hold >= before
    as_of_full = LedgerState(params)
    assert len(as_of_full.ledger) == total

    # 1% of the accounts, spread over every page of the table
    with connect(params) as c:
        updated = c.execute(
            "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 100 = 0"
        ).rowcount
    assert updated == SCALE * 1000
    at_inc1 = snapshot(as_plain(params))
    inc1 = backup(h.a, source["id"], "inc1", incremental=1)
    with connect(params) as c:
        c.execute(
            "CREATE TABLE extra AS SELECT g AS id, md5(g::text) AS v "
            "FROM generate_series(1, 20000) g"
        )
        c.execute("DELETE FROM ledger WHERE id % 3 = 0")
        c.execute("UPDATE pgbench_branches SET filler = 'changed'")
        c.execute("TRUNCATE pgbench_history")
    at_inc2 = snapshot(as_plain(params))
    inc2 = backup(h.a, source["id"], "inc2", incremental=1)

    assert full["parent_id"] is None
    assert inc1["parent_id"] == full["id"] and inc2["parent_id"] == inc1["id"]
    (manifest,) = (h.settings.data_dir / "objects").rglob(f"{full['id']}/manifest.json")
    assert len(json.loads(manifest.read_bytes())["engine"]["segment_offsets"]) > 2
    for b in (full, inc1, inc2):
        assert b["datastore"]["type"] == "postgresql"
        assert b["datastore"]["version"] == PG_MAJOR
    print(
        f"\nPostgreSQL {PG_MAJOR}, pgbench scale {SCALE} ({SCALE * 100000} accounts) plus a "
        f"ledger of {total} rows:\n"
        f"  full backup (writer running):      stored_bytes {full['stored_bytes']}\n"
        f"  incremental after updating {updated} accounts (1%, every 100th row): "
        f"stored_bytes {inc1['stored_bytes']} "
        f"({100 * inc1['stored_bytes'] / full['stored_bytes']:.1f}% of the full)\n"
        f"  second incremental (new 20000-row table, deletes, truncate): "
        f"stored_bytes {inc2['stored_bytes']}"
    )
    assert inc1["stored_bytes"] < full["stored_bytes"]

    # every link restores into a new server; the restores run side by side
    restored = {
        link["name"]: restore(h.a, link["id"], f"from-{link['name']}")
        for link in (full, inc1, inc2)
    }
    views = {name: wait_active(h.a, ident) for name, ident in restored.items()}
    for name, view in views.items():
        assert view["restore_point"] == {
            "backupRef": {"full": full, "inc1": inc1, "inc2": inc2}[name]["id"]
        }
        assert view["connection"]["port"] != source["view"]["connection"]["port"]
        assert "app" in view["connection"]["users"]

    # the full: exactly the source as of one commit the writer made, and that commit is
    # at least every one made before the backup was requested
    got = app_params(views["full"])
    restored_ledger = rows(got, "ledger", "id")
    n = len(restored_ledger)
    assert [entry[0] for entry in restored_ledger] == list(range(1, n + 1))
    assert n >= during, f"restored {n} commits, {during} were made before the backup ended"
    expected = as_of_full.as_of(n)
    assert tables(got) == sorted([*expected, "pgbench_history"])
    for table, order in (
        ("pgbench_accounts", "aid"),
        ("pgbench_tellers", "tid"),
        ("pgbench_branches", "bid"),
        ("ledger", "id"),
    ):
        assert rows(got, table, order) == expected[table], f"{table} differs"
    assert rows(got, "pgbench_history", "tid") == []
    print(
        f"  full restored at writer commit {n}: requested after commit {before}, "
        f"{during - at_hold} commits made while its stream was held"
    )

    assert snapshot(as_plain(app_params(views["inc1"]))) == at_inc1
    assert snapshot(as_plain(app_params(views["inc2"]))) == at_inc2
    assert at_inc2 != at_inc1

    # restored servers are writable, and deleting one stops it and removes its files
    with connect(app_params(views["inc2"])) as c:
        c.execute("INSERT INTO extra VALUES (0, 'after restore')")
    for ident in restored.values():
        delete_instance(h, h.a, ident)


@pytest.fixture(scope="module")
def sqlite_backup(h: Harness) -> dict[str, Any]:
    inst = h.a.create_instance("lite")
    h.a.wait_instance(inst["id"])
    return backup(h.a, inst["id"], "lite-full")


@pytest.fixture(scope="module")
def small(h: Harness) -> dict[str, Any]:
    """A managed instance with ~80 MB of table data (so a backup of it streams for a
    while) and no other user."""
    created = create_pg(
        h.a,
        "small",
        users=[{"name": "app", "password": APP_PASSWORD, "databases": [{"name": "d"}]}],
    )
    view = wait_active(h.a, created["id"])
    assert view["connection"]["databases"] == ["d"]
    home = h.container.handlers.home_of(created["id"])
    with connect(app_params(view, "d")) as c:
        c.execute(
            "CREATE TABLE filler AS SELECT g AS id, repeat(md5(g::text), 6) AS v "
            "FROM generate_series(1, 300000) g"
        )
    return {"id": created["id"], "view": view, "home": home}


def test_sqlite_backup_into_postgresql_is_refused(
    h: Harness, sqlite_backup: dict[str, Any]
) -> None:
    r = h.a.post(
        "/instances",
        {
            "instance": {
                "name": "wrong",
                "flavorRef": "1",
                "datastore": {"type": "postgresql"},
                "restorePoint": {"backupRef": sqlite_backup["id"]},
            }
        },
    )
    assert r.status_code == 400, r.text
    assert fault_message(r) == (
        "The datastore from which the backup was taken, sqlite, does not match the "
        "destination datastore of postgresql."
    )


def test_backups_filter_by_datastore(
    h: Harness, sqlite_backup: dict[str, Any], small: dict[str, Any]
) -> None:
    pg = backup(h.a, small["id"], "small-full")
    pg_ids = {b["id"] for b in h.a.get("/backups?datastore=postgresql").json()["backups"]}
    lite_ids = {b["id"] for b in h.a.get("/backups?datastore=sqlite").json()["backups"]}
    assert pg["id"] in pg_ids and sqlite_backup["id"] not in pg_ids
    assert sqlite_backup["id"] in lite_ids and pg["id"] not in lite_ids
    for b in h.a.get("/backups?datastore=postgresql").json()["backups"]:
        assert b["datastore"]["type"] == "postgresql"
    listed = h.a.get(f"/instances/{small['id']}/backups").json()["backups"]
    assert [b["id"] for b in listed] == [pg["id"]]


def test_corrupted_chunk_refuses_restore(h: Harness, small: dict[str, Any]) -> None:
    full = backup(h.a, small["id"], "to-corrupt")
    objects = h.settings.data_dir / "objects"
    chunks = sorted(objects.glob(f"*/{full['id']}/chunk-*"))
    assert chunks, list(objects.rglob("*"))
    victim = chunks[len(chunks) // 2]
    blob = bytearray(victim.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 16] = bytes(b ^ 0xFF for b in blob[middle : middle + 16])
    victim.write_bytes(bytes(blob))

    ident = restore(h.a, full["id"], "from-corrupt")
    failed = wait_status(lambda: show(h.a, "instance", ident), "ERROR")
    message = failed["fault"]["message"]
    print(f"\ncorrupted chunk {victim.name} of {len(chunks)}: {message}")
    assert "chunk" in message.lower() or "integrity" in message.lower(), message
    home = h.container.handlers.home_of(ident)
    assert not home.exists()
    assert server_processes(home) == []
    r = h.a.delete(f"/instances/{ident}")
    assert r.status_code == 202, r.text
    wait_for(lambda: h.a.get(f"/instances/{ident}").status_code == 404, timeout=WAIT)


def test_an_incremental_over_a_damaged_parent_chain_fails_with_a_reason(
    h: Harness, small: dict[str, Any]
) -> None:
    """An incremental reads its parent's pages (for deltas): when the parent's stored
    data is gone, the incremental ends FAILED naming it, leaves no objects, and a new
    full backup of the instance still works."""
    full = backup(h.a, small["id"], "parent-to-damage")
    with connect(app_params(small["view"], "d")) as c:
        c.execute("UPDATE filler SET v = upper(v) WHERE id % 50 = 0")
    objects = h.settings.data_dir / "objects"
    chunks = sorted(objects.glob(f"*/{full['id']}/chunk-*"))
    assert len(chunks) > 2
    for chunk in chunks[1:]:
        chunk.unlink()
    created = h.a.create_backup(small["id"], "over-damaged", incremental=1)
    failed = wait_status(lambda: show(h.a, "backup", created["id"]), "FAILED")
    reason = str(failed.get("fail_reason") or failed)
    print(f"\nincremental over a parent missing {len(chunks) - 1} chunks: {reason}")
    assert "chunk" in reason.lower() and full["id"] in reason, reason
    assert not list(objects.glob(f"*/{created['id']}/*"))
    assert backup(h.a, small["id"], "full-after-damage")["status"] == "COMPLETED"


def test_server_stopped_mid_backup_fails_the_backup(h: Harness, small: dict[str, Any]) -> None:
    """The store is held at the first chunk, so the backup is mid-stream (BUILDING, the
    tool blocked on its output); the server is stopped then, and the store released."""
    with held_store(h) as (entered, _release):
        created = h.a.create_backup(small["id"], "interrupted")
        assert entered.wait(WAIT), "the backup never wrote a chunk"
        assert show(h.a, "backup", created["id"])["status"] == "BUILDING"
        stop_server(small["home"] / "data", "immediate")
        assert not (small["home"] / "data" / "postmaster.pid").exists()
    failed = wait_status(lambda: show(h.a, "backup", created["id"]), "FAILED")
    reason = failed["fail_reason"]
    print(f"\nserver stopped mid-backup: {reason}")
    assert "PostgreSQL backup failed" in reason or "streaming WAL failed" in reason
    assert any(
        words in reason
        for words in ("server closed the connection", "terminating connection", "could not")
    ), reason
    objects = h.settings.data_dir / "objects"
    assert list(objects.glob(f"*/{created['id']}/*")) == []
    # the stopped server's instance can still be deleted
    delete_instance(h, h.a, small["id"])


# -- external servers -------------------------------------------------------------------
EXT_PASSWORD = "repl-" + secrets.token_hex(8)
PLAIN_PASSWORD = "plain-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def external(base: Path) -> Iterator[PlainServer]:
    server = PlainServer(base / "external")
    server.start()
    try:
        with server.admin() as c:
            c.execute(f"CREATE ROLE backup_role LOGIN REPLICATION PASSWORD '{EXT_PASSWORD}'")
            c.execute(f"CREATE ROLE plain_role LOGIN PASSWORD '{PLAIN_PASSWORD}'")
            c.execute("CREATE DATABASE bench OWNER admin")
        yield server
    finally:
        server.stop()


def register(caller: Caller, port: int, **overrides: Any) -> Any:
    external = {
        "host": "127.0.0.1",
        "port": port,
        "user": "backup_role",
        "password": EXT_PASSWORD,
        "database": "bench",
        **overrides,
    }
    return caller.post(
        "/instances",
        {"instance": {"name": "ext", "datastore": {"type": "postgresql"}, "external": external}},
    )


def test_external_registration_refusals(h: Harness, external: PlainServer) -> None:
    not_allowed = register(h.a, external.port, host="localhost")
    assert not_allowed.status_code == 403, not_allowed.text
    assert "not in the operator's list" in fault_message(not_allowed)
    no_replication = register(h.a, external.port, user="plain_role", password=PLAIN_PASSWORD)
    assert no_replication.status_code == 400, no_replication.text
    assert fault_message(no_replication) == "role plain_role lacks the REPLICATION attribute"
    wrong = register(h.a, external.port, password="wrong-" + EXT_PASSWORD)
    assert wrong.status_code == 400, wrong.text
    assert "password authentication failed" in fault_message(wrong)
    for r in (not_allowed, no_replication, wrong):
        assert EXT_PASSWORD not in r.text and PLAIN_PASSWORD not in r.text
    names = [i["name"] for i in h.a.get("/instances?limit=100").json()["instances"]]
    assert "ext" not in names, "a refused registration left an instance behind"


def test_external_backup_restore_and_secrets(
    h: Harness, external: PlainServer, source: dict[str, Any]
) -> None:
    responses: list[str] = []
    r = register(h.a, external.port)
    responses.append(r.text)
    assert r.status_code == 200, r.text
    inst = r.json()["instance"]
    assert inst["status"] == "ACTIVE" and inst["kind"] == "external"
    assert inst["connection"] == {
        "managed": False,
        "host": "127.0.0.1",
        "port": external.port,
        "database": "bench",
        "user": "backup_role",
    }
    admin = {
        "host": "127.0.0.1",
        "port": external.port,
        "user": "admin",
        "password": external.superuser_password,
        "dbname": "bench",
    }
    pgbench_init(as_plain(admin), 1)
    at_full = snapshot(as_plain(admin))
    full = backup(h.a, inst["id"], "ext-full")
    with connect(admin) as c:
        c.execute("UPDATE pgbench_accounts SET abalance = 11 WHERE aid % 50 = 0")
        c.execute("INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 5)")
    at_inc = snapshot(as_plain(admin))
    inc = backup(h.a, inst["id"], "ext-inc", incremental=1)
    assert inc["parent_id"] == full["id"]
    print(f"\nexternal: full stored_bytes {full['stored_bytes']}, incr {inc['stored_bytes']}")

    reader = "reader-" + secrets.token_hex(8)
    ids = {
        name: restore(
            h.a,
            b["id"],
            f"ext-{name}",
            users=[{"name": "reader", "password": reader, "databases": [{"name": "bench"}]}],
        )
        for name, b in (("f", full), ("i", inc))
    }
    views = {name: wait_active(h.a, ident) for name, ident in ids.items()}
    home = h.container.handlers.home_of(ids["f"])
    for name, expected in (("f", at_full), ("i", at_inc)):
        view = views[name]
        assert view["connection"]["managed"] is True
        assert {"backup_role", "plain_role", "reader"} <= set(view["connection"]["users"])
        # a user the restore request created reads what the source held
        got = tcp(view["connection"], "reader", reader, "bench")
        assert snapshot(as_plain(got)) == expected
        # the source's roles come along, with their passwords
        with connect(tcp(view["connection"], "backup_role", EXT_PASSWORD, "bench")) as c:
            assert c.execute("SELECT current_user").fetchone() == ("backup_role",)
    assert at_inc != at_full

    for path in (
        f"/instances/{inst['id']}",
        "/instances",
        f"/instances/{inst['id']}/backups",
        "/backups",
        f"/backups/{full['id']}",
        f"/instances/{ids['i']}",
    ):
        r = h.a.get(path)
        assert r.status_code == 200, r.text
        responses.append(r.text)
    for text in responses:
        assert EXT_PASSWORD not in text
        assert APP_PASSWORD not in text
    db_files = sorted(h.settings.data_dir.glob("strongroom.db*"))
    assert db_files
    for path in db_files:
        data = path.read_bytes()
        assert EXT_PASSWORD.encode() not in data, path
        assert APP_PASSWORD.encode() not in data, path
    for ident in ids.values():
        delete_instance(h, h.a, ident)
    assert not home.exists()
    r = h.a.delete(f"/instances/{inst['id']}")
    assert r.status_code == 202, r.text
    wait_for(lambda: h.a.get(f"/instances/{inst['id']}").status_code == 404, timeout=WAIT)


def slots(server: PlainServer) -> list[str]:
    with server.admin() as c:
        return [r[0] for r in c.execute("SELECT slot_name FROM pg_replication_slots")]


def test_deleting_external_registration_drops_its_slot(h: Harness, external: PlainServer) -> None:
    r = register(h.a, external.port)
    assert r.status_code == 200, r.text
    inst = r.json()["instance"]
    before = set(slots(external))
    backup(h.a, inst["id"], "ext-slot")
    (slot,) = set(slots(external)) - before
    r = h.a.delete(f"/instances/{inst['id']}")
    assert r.status_code == 202, r.text
    wait_for(lambda: h.a.get(f"/instances/{inst['id']}").status_code == 404, timeout=WAIT)
    assert slot not in slots(external)
