"""Offline restore of PostgreSQL backups: a managed server backed up through the service
(full, then an incremental after more writes), the service stopped and its metadata
deleted, the chain rebuilt into a data directory with the store and the key alone, then
that directory started by a fresh OS user with plain ``pg_ctl``: it recovers, promotes,
and holds the source's rows."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from offline_support import lose_the_service, strongroom, tree

from fixtures.live import free_port
from fixtures.service import Harness, make_harness, wait_for
from strongroom.engines.identity import InstanceIdentity
from strongroom.pipeline.keys import MasterKey
from strongroom.pipeline.reader import open_manifest
from support.postgresql import PlainServer, bin_dir, pgbench_init, snapshot, stop_server
from support.postgresql_service import PG_MAJOR, as_plain, connect, reachable_dir, wait_status

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PG_MAJOR is None, reason="PostgreSQL server tools not installed"),
]

PASSWORD = "app-" + secrets.token_hex(8)


def show(h: Harness, kind: str, ident: str) -> dict[str, Any]:
    view: dict[str, Any] = h.a.get(f"/{kind}s/{ident}").json()[kind]
    return view


def contents(params: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    with connect(params) as c:
        return {
            "items": list(c.execute("SELECT * FROM items ORDER BY id")),
            "notes": list(c.execute("SELECT * FROM notes ORDER BY id")),
        }


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with reachable_dir("strongroom-offline-pg-") as path:
        yield path


@pytest.fixture(scope="module")
def backed_up(base: Path) -> dict[str, Any]:
    root = base / "service"
    root.mkdir(mode=0o711)
    h = make_harness(
        root,
        datastores=["sqlite", "postgresql"],
        postgresql_allowed_hosts=["127.0.0.1"],
        engine_timeout=120,
        postgresql_page_deltas=True,  # the offline restore reads deltas too
    )
    created = h.a.create_instance(
        "source",
        datastore={"type": "postgresql"},
        databases=[{"name": "app"}],
        users=[{"name": "app", "password": PASSWORD, "databases": [{"name": "app"}]}],
    )
    view = wait_status(lambda: show(h, "instance", created["id"]), "ACTIVE")
    conn = view["connection"]
    params = {
        "host": conn["host"],
        "port": int(conn["port"]),
        "user": "app",
        "password": PASSWORD,
        "dbname": "app",
    }
    with connect(params) as c:
        c.execute("CREATE TABLE items (id int PRIMARY KEY, payload text NOT NULL)")
        c.execute(
            "INSERT INTO items SELECT g, repeat(md5(g::text), 20) FROM generate_series(1, 20000) g"
        )
        c.execute("CREATE TABLE notes (id int PRIMARY KEY, body text)")
    full = h.a.create_backup(created["id"], "full")
    full = wait_status(lambda: show(h, "backup", full["id"]), "COMPLETED")
    with connect(params) as c:
        c.execute("UPDATE items SET payload = 'changed' WHERE id % 97 = 0")
        c.execute("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 500) g")
        c.execute("DELETE FROM items WHERE id > 19900")
    incr = h.a.create_backup(created["id"], "incr", incremental=1)
    incr = wait_status(lambda: show(h, "backup", incr["id"]), "COMPLETED")
    manifest = next((h.settings.data_dir / "objects").glob(f"*/{incr['id']}/manifest.json"))
    opened = open_manifest(manifest.read_bytes(), MasterKey.load_or_create(h.settings.key_file))
    engine = opened.manifest.engine
    assert engine.get("page_format") == "realigned-deltas" and engine["delta_pages"] > 0, engine
    expected = contents(params)
    key = lose_the_service(h)
    return {"full": full, "incr": incr, "key": key, "expected": expected, "params": params}


@pytest.fixture
def fresh_user(base: Path) -> Iterator[InstanceIdentity]:
    identity = InstanceIdentity.for_home(base / f"user-{secrets.token_hex(4)}")
    try:
        yield identity
    finally:
        if identity.name is not None:
            identity.remove()


def start(data: Path, identity: InstanceIdentity) -> int:
    port = free_port()
    argv = [
        str(bin_dir() / "pg_ctl"),
        "start",
        "-D",
        str(data),
        "-w",
        "-t",
        "120",
        "-l",
        str(data / "first-start.log"),
        "-o",
        f"-p {port}",
    ]
    if identity.name is not None:
        argv = ["runuser", "-u", identity.name, "--", *argv]
    subprocess.run(argv, check=True, capture_output=True, timeout=180)
    return port


def promoted(params: dict[str, Any]) -> bool:
    """Whether the server finished recovery and accepts connections (it refuses them
    while it recovers: hot standby is off)."""
    try:
        with connect(params) as c:
            row = c.execute("SELECT pg_is_in_recovery()").fetchone()
    except psycopg.OperationalError:
        return False
    return row == (False,)


def test_offline_restore_postgresql_chain_starts_and_equals_the_source(
    base: Path, backed_up: dict[str, Any], fresh_user: InstanceIdentity
) -> None:
    target = base / "restored"
    done = strongroom(
        "restore",
        "--from",
        backed_up["incr"]["locationRef"],
        "--key",
        backed_up["key"],
        "--to",
        target,
        "--owner",
        fresh_user.name or "root",
    )
    assert done.returncode == 0, done.stderr
    assert (target / "recovery.signal").exists() and (target / "postgresql.conf.source").exists()
    assert target.stat().st_uid == fresh_user.uid and target.stat().st_mode & 0o777 == 0o700
    port = start(target, fresh_user)
    try:
        params = {**backed_up["params"], "host": "127.0.0.1", "port": port}
        wait_for(lambda: promoted(params), timeout=120)
        assert contents(params) == backed_up["expected"]
        assert not (target / "recovery.signal").exists()  # promoted
    finally:
        stop_server(target)


def test_offline_restore_of_the_full_backup_alone_has_only_its_rows(
    base: Path, backed_up: dict[str, Any], fresh_user: InstanceIdentity
) -> None:
    target = base / "restored-full"
    target.mkdir()
    done = strongroom(
        "restore",
        "--from",
        backed_up["full"]["locationRef"],
        "--key",
        backed_up["key"],
        "--to",
        target,
        "--owner",
        fresh_user.name or "root",
        "--quiet",
    )
    assert done.returncode == 0, done.stderr
    port = start(target, fresh_user)
    try:
        params = {**backed_up["params"], "host": "127.0.0.1", "port": port}
        wait_for(lambda: promoted(params), timeout=120)
        got = contents(params)
        assert len(got["items"]) == 20000 and got["notes"] == []
    finally:
        stop_server(target)


def test_offline_restore_postgresql_tampered_chunk_leaves_the_target_empty(
    base: Path, backed_up: dict[str, Any]
) -> None:
    manifest = Path(backed_up["incr"]["locationRef"].removeprefix("file://"))
    chunk = manifest.parent / "chunk-00000000"
    original = chunk.read_bytes()
    blob = bytearray(original)
    blob[-20] ^= 0x80
    chunk.write_bytes(bytes(blob))
    try:
        target = base / "refused"
        target.mkdir()
        done = strongroom(
            "restore",
            "--from",
            backed_up["incr"]["locationRef"],
            "--key",
            backed_up["key"],
            "--to",
            target,
        )
        assert done.returncode == 1
        assert "restore refused" in done.stderr and "chunk 0" in done.stderr, done.stderr
        assert tree(target) == []
        assert [p.name for p in base.iterdir() if "strongroom-restore" in p.name] == []
    finally:
        chunk.write_bytes(original)


# -- a server on another host: pg_basebackup and WAL ranges ------------------------------
EXT_PASSWORD = "repl-" + secrets.token_hex(8)


@pytest.fixture(scope="module")
def external_backed_up(base: Path) -> Iterator[dict[str, Any]]:
    server = PlainServer(base / "external")
    server.start()
    try:
        with server.admin() as c:
            c.execute(f"CREATE ROLE backup_role LOGIN REPLICATION PASSWORD '{EXT_PASSWORD}'")
            c.execute("CREATE DATABASE bench OWNER admin")
        root = base / "service-ext"
        root.mkdir(mode=0o711)
        h = make_harness(
            root,
            datastores=["sqlite", "postgresql"],
            postgresql_allowed_hosts=["127.0.0.1"],
            engine_timeout=120,
        )
        external = {
            "host": "127.0.0.1",
            "port": server.port,
            "user": "backup_role",
            "password": EXT_PASSWORD,
            "database": "bench",
        }
        r = h.a.post(
            "/instances",
            {
                "instance": {
                    "name": "ext",
                    "datastore": {"type": "postgresql"},
                    "external": external,
                }
            },
        )
        assert r.status_code == 200, r.text
        inst = r.json()["instance"]
        admin = {
            "host": "127.0.0.1",
            "port": server.port,
            "user": "admin",
            "password": server.superuser_password,
            "dbname": "bench",
        }
        pgbench_init(as_plain(admin), 1)
        full = h.a.create_backup(inst["id"], "ext-full")
        full = wait_status(lambda: show(h, "backup", full["id"]), "COMPLETED")
        with connect(admin) as c:
            c.execute("UPDATE pgbench_accounts SET abalance = 11 WHERE aid % 50 = 0")
            c.execute("INSERT INTO pgbench_history (tid, bid, aid, delta) VALUES (1, 1, 1, 5)")
        incr = h.a.create_backup(inst["id"], "ext-incr", incremental=1)
        incr = wait_status(lambda: show(h, "backup", incr["id"]), "COMPLETED")
        assert full["id"] != incr["id"]
        expected = snapshot(as_plain(admin))
        key = lose_the_service(h)
        yield {"incr": incr, "key": key, "expected": expected, "admin": admin}
    finally:
        server.stop()


def test_offline_restore_of_an_external_servers_chain_starts_as_postgres(
    base: Path, external_backed_up: dict[str, Any]
) -> None:
    """pg_basebackup's tar and an incremental's WAL range, restored offline, started by
    the distribution's ``postgres`` user: the source's rows, the source's passwords."""
    target = base / "restored-external"
    done = strongroom(
        "restore",
        "--from",
        external_backed_up["incr"]["locationRef"],
        "--key",
        external_backed_up["key"],
        "--to",
        target,
        "--owner",
        "postgres",
    )
    assert done.returncode == 0, done.stderr
    postgres = InstanceIdentity.lookup("postgres")
    assert postgres is not None
    port = start(target, postgres)
    try:
        params = {**external_backed_up["admin"], "port": port}
        wait_for(lambda: promoted(params), timeout=120)
        assert snapshot(as_plain(params)) == external_backed_up["expected"]
    finally:
        stop_server(target)
