"""The service's sessions on a server a tenant administers, attacked for real.

A tenant that is superuser of its instance can put functions of its own ahead of the
catalog's, name a synchronous standby that never comes, or put a stand-in on the socket
that accepts a session and never answers. None of it may hold a job (the workers serve
every tenant on the host) for good, or make the service call the tenant's code.
Each test fails if the attack works.
"""

from __future__ import annotations

import secrets
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from strongroom.engines.base import DatabaseSpec, InstanceRequest, RestoreInput, UserSpec
from strongroom.engines.postgresql import PostgresEngine, models, session
from strongroom.engines.postgresql.file_method import FileMethod
from strongroom.engines.postgresql.users import PostgresAccounts
from support.postgresql import FileSink, OffsetFileSource, homes_dir, snapshot

_probe = PostgresEngine()
SERVER_TOOLS = pytest.mark.skipif(
    _probe.detect() is None, reason="PostgreSQL server tools not installed"
)


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    with homes_dir("strongroom-pgsess-") as path:
        yield path


def _superuser(conn: dict[str, Any], dbname: str) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=conn["socket_dir"],
        port=int(conn["port"]),
        user=conn["superuser"],
        password=conn["password"],
        dbname=dbname,
        autocommit=True,
    )


@pytest.mark.integration
@SERVER_TOOLS
def test_functions_put_ahead_of_the_catalog_are_never_called(base: Path) -> None:
    engine = PostgresEngine(timeout=120)
    home = base / "shadowed"
    conn = engine.create_instance(home, InstanceRequest("s", (DatabaseSpec("app"),)))
    restored: dict[str, Any] | None = None
    try:
        with _superuser(conn, "app") as c:
            c.execute(
                "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 500) g"
            )
        with _superuser(conn, "postgres") as c:
            for signature in (
                "pg_backup_start(text, boolean) RETURNS pg_lsn",
                "current_setting(text) RETURNS text",
                "pg_is_in_recovery() RETURNS boolean",
            ):
                c.execute(
                    f"CREATE FUNCTION public.{signature} LANGUAGE plpgsql AS "
                    "$$BEGIN RAISE EXCEPTION 'the tenant''s function was called'; END$$"
                )
            c.execute(f'ALTER ROLE "{conn["superuser"]}" SET search_path = public, pg_catalog')
            c.execute("ALTER DATABASE postgres SET search_path = public, pg_catalog")
        before = snapshot(conn, "app")
        stream = base / "shadowed.stream"
        sink = FileSink(stream)
        try:
            meta = engine.backup(conn, sink, parent=None).metadata
        finally:
            sink.close()
        source = OffsetFileSource(stream)
        try:
            restored = engine.restore_instance(
                base / "shadowed-r", [RestoreInput(meta, source)], InstanceRequest("r")
            )
        finally:
            source.close()
        assert snapshot(restored, "app") == before
    finally:
        engine.destroy_instance(home, conn)
        if restored is not None:
            engine.destroy_instance(base / "shadowed-r", restored)


@pytest.mark.integration
@SERVER_TOOLS
def test_a_synchronous_standby_the_tenant_names_holds_no_change_of_the_service(
    base: Path,
) -> None:
    engine = PostgresEngine(timeout=120)
    home = base / "syncstandby"
    conn = engine.create_instance(home, InstanceRequest("y", (DatabaseSpec("app"),)))
    try:
        with _superuser(conn, "postgres") as c:
            c.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
            c.execute("SELECT pg_reload_conf()")
        _until_commits_wait_for_a_standby(conn)
        outcome: dict[str, Any] = {}

        def create_user() -> None:
            try:
                PostgresAccounts().create_users(
                    conn, [UserSpec("reader", "reader-" + secrets.token_hex(8), ("app",))]
                )
                outcome["done"] = True
            except Exception as exc:
                outcome["error"] = exc

        runner = threading.Thread(target=create_user, daemon=True)
        runner.start()
        runner.join(60)
        assert not runner.is_alive(), "the service's change waits for the tenant's standby"
        assert outcome == {"done": True}, outcome
        with _superuser(conn, "postgres") as c:
            assert c.execute("SELECT 1 FROM pg_roles WHERE rolname = 'reader'").fetchone()
    finally:
        engine.destroy_instance(home, conn)


def _until_commits_wait_for_a_standby(conn: dict[str, Any]) -> None:
    """Wait until a commit waits for the standby (the server takes the setting on in its
    own time): a probe's commit is seen waiting, then let go (it then commits locally)."""
    deadline = time.monotonic() + 30
    attempt = 0
    while True:
        attempt += 1
        with _superuser(conn, "postgres") as probe, _superuser(conn, "postgres") as watcher:
            pid = probe.info.backend_pid
            committer = threading.Thread(
                target=probe.execute, args=(f"CREATE TABLE probe_{attempt} ()",), daemon=True
            )
            committer.start()
            waiting = False
            until = time.monotonic() + 2
            while committer.is_alive() and not waiting and time.monotonic() < until:
                row = watcher.execute(
                    "SELECT wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchone()
                waiting = row is not None and row[0] == "SyncRep"
                time.sleep(0.02)
            if waiting:
                watcher.execute("SELECT pg_cancel_backend(%s)", (pid,))
            committer.join(30)
            assert not committer.is_alive()
        if waiting:
            return
        assert time.monotonic() < deadline, "commits do not wait for the standby"


class SilentServer(threading.Thread):
    """A stand-in on a socket: it accepts a session (no password asked) and then never
    answers a statement."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.clients: list[socket.socket] = []

    def run(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.clients.append(client)
            client.settimeout(10)
            while True:
                (length,) = struct.unpack("!I", _exactly(client, 4))
                body = _exactly(client, length - 4)
                code = struct.unpack("!I", body[:4])[0]
                if code in (80877103, 80877104):  # SSL or GSS encryption asked: no
                    client.sendall(b"N")
                    continue
                break
            client.sendall(b"R" + struct.pack("!II", 8, 0))  # authenticated
            client.sendall(b"Z" + struct.pack("!I", 5) + b"I")  # ready for a query

    def close(self) -> None:
        self.stop.set()
        self.join(5)
        for client in self.clients:
            client.close()
        self.listener.close()


def _exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        piece = sock.recv(size - len(data))
        if not piece:
            raise ConnectionError("closed")
        data += piece
    return data


def test_a_server_that_never_answers_a_statement_holds_it_only_until_its_deadline() -> None:
    stand_in = SilentServer()
    stand_in.start()
    try:
        conn = {
            "managed": False,
            "host": "127.0.0.1",
            "port": stand_in.port,
            "user": "u",
            "password": "",
            "database": "postgres",
        }
        with session.connect(conn, deadline=2.0, sslmode="disable") as c:
            started = time.monotonic()
            with pytest.raises(psycopg.OperationalError, match="did not answer within 2 s"):
                c.execute("SELECT 1")
            assert time.monotonic() - started < 10
    finally:
        stand_in.close()


def test_impossible_block_and_segment_sizes_are_refused() -> None:
    facts = {
        "method": "pgdata-files",
        "start_lsn": "0/2000028",
        "stop_lsn": "0/2000100",
        "timeline": 1,
        "system_identifier": "1",
        "server_major": "15",
        "wal_segment_size": 16 << 20,
        "block_size": 8192,
    }
    assert models.FilesMetadata.model_validate(facts).block_size == 8192
    for wrong in ({"block_size": 1 << 31}, {"block_size": 8000}, {"wal_segment_size": 1 << 40}):
        with pytest.raises(ValidationError):
            models.FilesMetadata.model_validate({**facts, **wrong})


def test_a_managed_server_is_always_read_by_its_files() -> None:
    # Without PG_VERSION (its owner removed it), not handed to pg_basebackup, whose libpq
    # may send the password in clear text to whatever answers on the owner's socket.
    missing = Path(tempfile.gettempdir()) / f"strongroom-none-{secrets.token_hex(4)}"
    assert FileMethod.applies({"managed": True, "data_dir": str(missing)})
    assert not FileMethod.applies({"managed": False, "data_dir": str(missing)})
