"""The service's MariaDB sessions against a stand-in on an instance's socket, for real.

A tenant is superuser of its managed instance and can run programs as the instance's OS
user (a UDF, or by stopping the server): it can put a listener of its own on
``home/mysqld.sock``, or a link there. Whatever that listener does, no session of the
service, wait for a starting server or archiver pass may outlast its deadline (two job
workers and one archiver serve every tenant of the host), take in a reply without bound,
or hand over the instance's admin password; a link is not followed. Each test fails if
the attack works.
"""

from __future__ import annotations

import contextlib
import io
import os
import threading
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pymysql
import pytest

from strongroom.engines.base import InstanceRequest
from strongroom.engines.errors import BackupError, InstanceError
from strongroom.engines.mariadb import MariaDbEngine, archiver, binlog, server, sessions
from strongroom.engines.mariadb.server import Layout
from support.mariadb import require_mariadb, scratch_root
from support.mariadb_standin import (
    DATETIME,
    LONGLONG,
    MORE_RESULTS,
    TRICKLE,
    VAR_STRING,
    Reply,
    Result,
    StandIn,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]
WAIT = 20.0  # far past every deadline the tests lower; a call still waiting then is held
START = binlog.encode(1, binlog.FIRST_OFFSET)
MEMORY = 16 << 20  # what a cut reply may have cost, at most


@pytest.fixture(scope="module")
def instance() -> Iterator[tuple[Path, dict[str, Any]]]:
    engine = require_mariadb()
    with scratch_root("sr-mdb-standin-") as base:
        home = base / "tenant"
        conn = engine.create_instance(home, InstanceRequest("tenant"))
        try:
            yield home, conn
        finally:
            engine.destroy_instance(home, conn)


@contextlib.contextmanager
def stand_in_on(home: Path, **behaviour: Any) -> Iterator[StandIn]:
    """The server's socket moved aside and a stand-in listening in its place, as the
    instance's OS user may do; the server's socket is back afterwards."""
    sock = home / server.SOCKET_NAME
    aside = home / "mysqld.sock.server"
    os.rename(sock, aside)
    try:
        stand_in = StandIn(sock, **behaviour)
        try:
            yield stand_in
        finally:
            stand_in.close()
    finally:
        os.rename(aside, sock)


def outcome(call: Callable[[], object]) -> BaseException | None:
    """What ``call`` raised (None if nothing), once it ends: the test fails if it is still
    waiting after :data:`WAIT` seconds (closing the stand-in then lets it go)."""
    result: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            call()
            result["error"] = None
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(WAIT)
    assert not thread.is_alive(), f"still held by the stand-in after {WAIT:.0f} s"
    return result["error"]


def select_one(open_session: Callable[[], Any]) -> Callable[[], None]:
    def run() -> None:
        with open_session() as cursor:
            cursor.execute("SELECT 1")

    return run


def by_managed_session(home: Path, conn: dict[str, Any]) -> Any:
    return sessions.managed_session(conn)


def by_server_session(home: Path, conn: dict[str, Any]) -> Any:
    return server.session(Layout(home), conn["admin_user"], conn["admin_password"])


ENTRY_POINTS = pytest.mark.parametrize(
    "opener", [by_managed_session, by_server_session], ids=["managed_session", "server.session"]
)


# -- trickling ---------------------------------------------------------------------------------
@ENTRY_POINTS
def test_a_greeting_that_trickles_ends_the_session_at_its_deadline(
    instance: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, opener: Any
) -> None:
    home, conn = instance
    monkeypatch.setattr(sessions, "HANDSHAKE_DEADLINE", 1.0)
    with stand_in_on(home, trickle_greeting=True) as stand_in:
        error = outcome(select_one(lambda: opener(home, conn)))
    assert stand_in.connections == 1
    assert isinstance(error, pymysql.err.OperationalError), error
    assert "the server did not answer within 1 s" in str(error)


@ENTRY_POINTS
def test_a_reply_that_trickles_ends_the_statement_at_its_deadline(
    instance: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, opener: Any
) -> None:
    home, conn = instance
    monkeypatch.setattr(sessions, "STATEMENT_DEADLINE", 1.0)

    def answer(sql: str) -> Reply:
        return TRICKLE if sql == "SELECT 1" else None

    with stand_in_on(home, answer=answer) as stand_in:
        error = outcome(select_one(lambda: opener(home, conn)))
    assert "SELECT 1" in stand_in.statements
    assert isinstance(error, pymysql.err.OperationalError), error
    assert "the server did not answer within 1 s" in str(error)


@ENTRY_POINTS
def test_results_chained_without_end_end_the_statement_at_its_deadline(
    instance: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch, opener: Any
) -> None:
    """Each reply comes in time, but each says another follows: the statement's deadline,
    not each reply's, ends it."""
    home, conn = instance
    monkeypatch.setattr(sessions, "STATEMENT_DEADLINE", 1.0)

    def answer(sql: str) -> Reply:
        return MORE_RESULTS if sql == "SELECT 1" else None

    with stand_in_on(home, answer=answer, interval=0.2) as stand_in:
        error = outcome(select_one(lambda: opener(home, conn)))
    assert "SELECT 1" in stand_in.statements
    assert isinstance(error, pymysql.err.OperationalError), error
    assert "the server did not answer within 1 s" in str(error)


def test_waiting_for_the_server_ends_though_a_stand_in_trickles(
    instance: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, conn = instance
    monkeypatch.setattr(server, "PROBE_DEADLINE", 1.0)
    with stand_in_on(home, trickle_greeting=True) as stand_in:
        error = outcome(
            lambda: server.wait_ready(
                Layout(home), conn["admin_user"], conn["admin_password"], timeout=2.0
            )
        )
    assert stand_in.connections >= 1
    assert isinstance(error, InstanceError), error
    assert "did not accept connections within 2 s" in str(error)


def test_a_malformed_greeting_is_an_error_a_start_handles(
    instance: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version that is no number made pymysql raise ValueError, which escaped the
    start's handling (its server then left running, unreaped)."""
    home, conn = instance
    monkeypatch.setattr(server, "PROBE_DEADLINE", 1.0)
    with stand_in_on(home, version=b"x.y-garbage") as stand_in:
        error = outcome(
            lambda: server.wait_ready(
                Layout(home), conn["admin_user"], conn["admin_password"], timeout=1.0
            )
        )
    assert stand_in.connections >= 1
    assert isinstance(error, InstanceError), error
    assert "did not accept connections within 1 s" in str(error)


def test_an_archiver_pass_ends_though_a_stand_in_trickles_its_greeting(
    instance: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    home, conn = instance
    monkeypatch.setattr(archiver, "SESSION_DEADLINE", 1.0)
    engine = MariaDbEngine()
    with stand_in_on(home, trickle_greeting=True) as stand_in:
        error = outcome(lambda: engine.archive_batch(conn, io.BytesIO(), start=START))
    assert stand_in.connections == 1
    assert isinstance(error, BackupError), error
    assert "the server did not answer within 1 s" in str(error)


def answers_before_the_dump(sql: str) -> Reply:
    """What the archiver asks before its dump, answered as the instance's server would."""
    if sql.startswith("SELECT UTC_TIMESTAMP(6)"):
        return Result(
            [("now", DATETIME), ("oldest", VAR_STRING)], [(b"2024-05-01 12:00:00.000000", b"0")]
        )
    if sql == "SELECT @@log_bin, @@log_bin_basename":
        return Result([("on", LONGLONG), ("base", VAR_STRING)], [(b"1", b"/d/mariadb-bin")])
    if sql == "SHOW MASTER STATUS":
        columns = [("File", VAR_STRING), ("Position", LONGLONG), ("Do", VAR_STRING)]
        return Result(columns, [(b"mariadb-bin.000001", b"4", b"")])
    return None


def test_an_archiver_pass_ends_though_a_stand_in_trickles_the_binary_log(
    instance: tuple[Path, dict[str, Any]],
) -> None:
    home, conn = instance
    # Each read may wait 60 s; the stand-in sends a byte every 0.05 s.
    limits = archiver.Limits(batch_seconds=1.0, hard_seconds=2.0, read_seconds=60.0)
    with stand_in_on(home, answer=answers_before_the_dump, trickle_dump=True) as stand_in:
        error = outcome(
            lambda: archiver.archive_batch(conn, io.BytesIO(), start=START, limits=limits)
        )
    assert any(s.startswith("SET @mariadb_slave_capability") for s in stand_in.statements)
    assert isinstance(error, BackupError), error
    assert "the dump did not end within its time limit" in str(error)


# -- replies without end -------------------------------------------------------------------------
def rows(value: bytes, count: int) -> Iterator[tuple[bytes]]:
    for _ in range(count):
        yield (value,)


@pytest.mark.parametrize(
    ("cap", "lowered", "value", "count", "message"),
    [
        # Tiny rows, far more of them than the cap lets in.
        ("MAX_REPLY_VALUES", 20_000, b"v", 400_000, "holds more than 20000 values"),
        # Large ones, 40 MiB of them.
        ("MAX_REPLY_BYTES", 4 << 20, b"x" * (64 << 10), 640, "larger than 4194304 bytes"),
    ],
    ids=["values", "bytes"],
)
def test_a_reply_without_end_is_cut_at_its_cap(
    instance: tuple[Path, dict[str, Any]],
    monkeypatch: pytest.MonkeyPatch,
    cap: str,
    lowered: int,
    value: bytes,
    count: int,
    message: str,
) -> None:
    home, conn = instance
    monkeypatch.setattr(sessions, cap, lowered)

    def answer(sql: str) -> Reply:
        # Without end as far as a client with a cap can tell; a client without one ends.
        return Result([("v", VAR_STRING)], rows(value, count)) if sql == "SELECT v" else None

    def run() -> None:
        with sessions.managed_session(conn) as cursor:
            cursor.execute("SELECT v")
            cursor.fetchall()

    tracemalloc.start()
    try:
        with stand_in_on(home, answer=answer) as stand_in:
            error = outcome(run)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, pymysql.err.OperationalError), error
    assert message in str(error)
    assert stand_in.hung_up, "the client took the whole reply"
    assert peak < MEMORY, f"the reply cost {peak} bytes"


# -- the password --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("greeting_plugin", "switch_to"),
    [
        ("mysql_native_password", "mysql_clear_password"),
        ("mysql_native_password", "dialog"),
        ("caching_sha2_password", None),
        ("sha256_password", None),
    ],
    ids=["switch-clear-password", "switch-dialog", "caching-sha2-full", "sha256"],
)
def test_a_stand_in_never_receives_the_admin_password(
    instance: tuple[Path, dict[str, Any]], greeting_plugin: str, switch_to: str | None
) -> None:
    home, conn = instance
    with stand_in_on(home, greeting_plugin=greeting_plugin, switch_to=switch_to) as stand_in:
        error = outcome(select_one(lambda: sessions.managed_session(conn)))
    assert stand_in.connections == 1
    assert conn["admin_password"].encode() not in bytes(stand_in.received)
    assert isinstance(error, pymysql.err.OperationalError), error
    assert "could give the password away: refused" in str(error)


# -- a link in the socket's place ----------------------------------------------------------------
@ENTRY_POINTS
def test_a_link_in_place_of_the_socket_is_not_followed(
    instance: tuple[Path, dict[str, Any]], opener: Any
) -> None:
    home, conn = instance
    sock = home / server.SOCKET_NAME
    aside = home / "mysqld.sock.server"
    # Another listener, one the tenant could not reach itself (it answers every session).
    elsewhere = StandIn(home.parent / "elsewhere.sock")
    os.rename(sock, aside)
    try:
        os.symlink(elsewhere.path, sock)
        try:
            error = outcome(select_one(lambda: opener(home, conn)))
        finally:
            sock.unlink()
    finally:
        os.rename(aside, sock)
        elsewhere.close()
    assert elsewhere.connections == 0, "the session went where the link led"
    assert isinstance(error, pymysql.err.OperationalError), error
    assert "is a link or not a socket" in str(error)
