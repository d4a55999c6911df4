"""Reaching a PostgreSQL server: connection parameters from a stored connection, libpq
sessions (plain and replication), the environment of its client tools, the facts a
backup records, and failure reasons that hold no secret."""

from __future__ import annotations

import time
from typing import Any

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGconn

from strongroom.engines.base import ByteSink, Connection
from strongroom.engines.errors import BackupError
from strongroom.engines.postgresql import models, walstream
from strongroom.engines.postgresql.deadline import answered_within
from strongroom.engines.postgresql.lsn import parse_lsn

CONNECT_TIMEOUT = 10
# Every session the service opens on a server: names resolve in the catalog (a function of
# a tenant's own in ``public``, ahead of ``pg_catalog`` in a search_path it set for its
# roles, is never called), no statement or lock wait outlasts these, and a commit waits
# for no standby the server's owner named. Startup options outrank the roles' settings.
STATEMENT_TIMEOUT_S = 600
SESSION_OPTIONS = (
    "-c search_path=pg_catalog "
    f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000} "
    "-c lock_timeout=60000 "
    f"-c idle_in_transaction_session_timeout={STATEMENT_TIMEOUT_S * 1000} "
    "-c synchronous_commit=local"
)
# A server (or a stand-in on its socket) can ignore all of that and never answer: past
# this, the client cuts the connection itself.
STATEMENT_DEADLINE = STATEMENT_TIMEOUT_S + 60.0
SLOT_PREFIX = "strongroom_"
SLOT_BUSY_WAIT = 15.0  # a walsender that just ended may hold its slot this long


def scrub(text: str, *secrets_: str | None) -> str:
    for secret in secrets_:
        if secret:
            text = text.replace(secret, "***")
    return text


def pg_error(exc: BaseException) -> str:
    """A one-line reason from a psycopg error (its text never includes the password)."""
    text = str(exc).strip()
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    return " ".join((primary or text or type(exc).__name__).split())


class CountingSink:
    def __init__(self, sink: ByteSink) -> None:
        self._sink = sink
        self.count = 0
        self.started = False

    def write(self, data: bytes | bytearray | memoryview, /) -> int:
        self.started = True
        self._sink.write(data)
        self.count += len(data)
        return len(data)


def conn_kwargs(connection: Connection, *, database: str | None = None) -> dict[str, Any]:
    typed = models.CONNECTION.validate_python(connection)
    if isinstance(typed, models.ManagedConnection):
        password = typed.password or None
        return {
            "host": typed.socket_dir,
            "port": typed.port,
            "user": typed.superuser,
            "password": password,
            "dbname": database or typed.database,
            # The socket lies in the instance's home, which its OS user (a tenant that is
            # superuser there) can replace with a server of its own: SCRAM only, so the
            # password itself is never sent. (libpq 16+; psycopg's own is newer.)
            "require_auth": "scram-sha-256" if password else None,
            # And that same user may put a link to another server's socket in its place:
            # the server at the other end must run as the instance's own OS user.
            "requirepeer": typed.os_user,
            "options": SESSION_OPTIONS,
        }
    return {
        "host": typed.host,
        "port": typed.port,
        "user": typed.user,
        "password": typed.password or None,
        "dbname": database or typed.database or "postgres",
        "options": SESSION_OPTIONS,
    }


class BoundedConnection(psycopg.Connection[Any]):
    """A session whose statements and commits end within ``deadline`` seconds, whatever
    the other end does (see :func:`answered_within`)."""

    deadline: float = STATEMENT_DEADLINE

    def execute(
        self,
        query: Any,
        params: Any = None,
        *,
        prepare: bool | None = None,
        binary: bool = False,
    ) -> psycopg.Cursor[Any]:
        with answered_within(self.pgconn.socket, self.deadline):
            return super().execute(query, params, prepare=prepare, binary=binary)

    def commit(self) -> None:
        with answered_within(self.pgconn.socket, self.deadline):
            super().commit()


def connect(
    connection: Connection, *, deadline: float = STATEMENT_DEADLINE, **extra: Any
) -> BoundedConnection:
    """A session on the server; each statement ends within ``deadline`` seconds."""
    kwargs = conn_kwargs(connection)
    kwargs.update(extra)
    conn = BoundedConnection.connect(
        **{k: v for k, v in kwargs.items() if v is not None},
        connect_timeout=CONNECT_TIMEOUT,
        application_name="strongroom",
        autocommit=True,
    )
    conn.deadline = deadline
    return conn


def scalar(conn: psycopg.Connection[Any], sql: str) -> Any:
    """The first column of a query's one row (SHOW and SELECT of one value)."""
    row = conn.execute(sql).fetchone()
    if row is None:
        raise psycopg.ProgrammingError(f"{sql} returned no row")
    return row[0]


def replication_pgconn(connection: Connection) -> PGconn:
    kwargs = conn_kwargs(connection)
    kwargs.pop("options")  # a walsender's streaming is not a statement to time out
    kwargs.update(
        replication="true", connect_timeout=CONNECT_TIMEOUT, application_name="strongroom"
    )
    conninfo = psycopg.conninfo.make_conninfo(**{k: v for k, v in kwargs.items() if v is not None})
    pgconn = pq.PGconn.connect(conninfo.encode())
    if pgconn.status != pq.ConnStatus.OK:
        message = walstream._error_text(pgconn.error_message)
        pgconn.finish()
        raise BackupError(f"replication connection failed: {message}")
    return pgconn


def identify(pgconn: PGconn) -> tuple[str, int, int]:
    """``(system_identifier, timeline, flush_lsn)`` from IDENTIFY_SYSTEM."""
    with answered_within(pgconn.socket, CONNECT_TIMEOUT * 3):
        result = pgconn.exec_(b"IDENTIFY_SYSTEM")
    if result.status != pq.ExecStatus.TUPLES_OK:
        raise BackupError(f"IDENTIFY_SYSTEM failed: {walstream._error_text(result.error_message)}")
    values = [result.get_value(0, i) for i in range(3)]
    sysid, tli, xlogpos = (bytes(v or b"").decode() for v in values)
    return sysid, int(tli), parse_lsn(xlogpos)


def tool_env(connection: Connection) -> dict[str, str]:
    kwargs = conn_kwargs(connection)
    env = {
        "PGHOST": str(kwargs["host"]),
        "PGPORT": str(kwargs["port"]),
        "PGUSER": str(kwargs["user"]),
        "PGDATABASE": str(kwargs["dbname"]),
        "PGAPPNAME": "strongroom",
        "PGCONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
    }
    if kwargs.get("password"):
        env["PGPASSWORD"] = str(kwargs["password"])
    if kwargs.get("require_auth"):
        env["PGREQUIREAUTH"] = str(kwargs["require_auth"])  # tools on libpq 16+ honour it
    if kwargs.get("requirepeer"):
        env["PGREQUIREPEER"] = str(kwargs["requirepeer"])
    return env


def server_facts(conn: psycopg.Connection[Any]) -> dict[str, Any]:
    row = conn.execute(
        "SELECT pg_catalog.current_setting('server_version_num')::int, "
        "pg_catalog.current_setting('server_version'), "
        "(SELECT setting::bigint FROM pg_catalog.pg_settings WHERE name = 'wal_segment_size'), "
        "pg_catalog.current_setting('block_size')::int, "
        "pg_catalog.current_setting('data_checksums'), "
        "(SELECT rolname FROM pg_catalog.pg_roles WHERE oid = 10), "
        "pg_catalog.pg_is_in_recovery()"
    ).fetchone()
    assert row is not None
    if row[6]:
        raise BackupError("the server is a standby; back up its primary")
    try:
        models.check_sizes(int(row[3]), int(row[2]))
    except ValueError as exc:  # buffers and files are sized by these
        raise BackupError(f"the server reports an impossible setting: {exc}") from exc
    version_full = str(row[1]).split()[0]
    return {
        "server_version_num": int(row[0]),
        "server_version": version_full,
        "server_major": str(int(row[0]) // 10000),
        "wal_segment_size": int(row[2]),
        "block_size": int(row[3]),
        "data_checksums": row[4] == "on",
        "bootstrap_superuser": row[5],
    }


def slot_state(conn: psycopg.Connection[Any], slot: str) -> tuple[int | None, str] | None:
    row = conn.execute(
        "SELECT restart_lsn::text, coalesce(wal_status, '') FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (slot,),
    ).fetchone()
    if row is None:
        return None
    return (parse_lsn(row[0]) if row[0] else None), row[1]


def stream_wal_when_slot_free(
    pgconn: PGconn,
    slot: str,
    window: walstream.WalWindow,
    frames: walstream.FrameWriter,
    deadline: float,
) -> None:
    """Stream the window's WAL from ``slot``, waiting up to SLOT_BUSY_WAIT for the slot."""
    busy_until = time.monotonic() + SLOT_BUSY_WAIT
    while True:
        try:
            walstream.stream_wal_range(
                pgconn,
                slot=slot,
                timeline=window.timeline,
                start=window.start,
                stop=window.stop,
                frames=frames,
                deadline=deadline,
            )
            return
        except walstream.WalStreamError as exc:
            # The walsender of a previous backup or batch may hold the slot for a moment.
            if "is active for PID" not in str(exc) or time.monotonic() > busy_until:
                raise
            time.sleep(0.2)
