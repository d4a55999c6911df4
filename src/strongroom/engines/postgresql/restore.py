"""What every restore does once a method has laid out its chain: cut the WAL at the
backup's end, configure the server for archive recovery from ``pg_wal`` only, start it,
wait for promotion, check that recovery reached the end, give the bootstrap superuser a
new password, then make the requested databases and users (see the package text)."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql

from strongroom.engines import process
from strongroom.engines.base import Connection, InstanceRequest, RestoreInput
from strongroom.engines.deadline import seconds_left
from strongroom.engines.errors import RestoreError
from strongroom.engines.postgresql import accounts, recovery_target, session, walstream
from strongroom.engines.postgresql.lsn import (
    format_lsn,
    is_segment_name,
    parse_lsn,
    record_boundary,
    segment_number,
)
from strongroom.engines.postgresql.methods import Link, PgMetadata
from strongroom.engines.postgresql.server import INCLUDE_LINES, ManagedServer

PROMOTION_POLL = 0.02  # seconds between checks; recovery of a restore ends in tens of ms
CONTROLDATA_SETTINGS = {
    "max_connections setting": "max_connections",
    "max_worker_processes setting": "max_worker_processes",
    "max_wal_senders setting": "max_wal_senders",
    "max_prepared_xacts setting": "max_prepared_transactions",
    "max_locks_per_xact setting": "max_locks_per_transaction",
}
SETTING_FLOORS = {
    "max_connections": 100,
    "max_worker_processes": 8,
    "max_wal_senders": 10,
    "max_prepared_transactions": 0,
    "max_locks_per_transaction": 64,
}
LayOut = Callable[[ManagedServer, Sequence[Link]], walstream.SegmentWriter]


def restore(
    server: ManagedServer,
    chain: Sequence[Link],
    request: InstanceRequest,
    password: str,
    lay_out: LayOut,
    *,
    archive: Sequence[RestoreInput] = (),
    target_time: datetime | None = None,
    deadline: float | None = None,
) -> Connection:
    """A new server in ``server``'s home from ``chain``, laid out by the chain's method,
    then the archived WAL batches in ``archive`` replayed up to ``target_time``; returns
    its connection (the superuser's password is ``password``). The server's start and
    its recovery end by ``deadline`` (``time.monotonic()``; default: each within the
    server's timeout): recovery replays what the backup holds, however long that takes."""
    full = chain[0].meta
    server.prepare_home()
    data, run = server.data, server.run
    writer = lay_out(server, chain)
    timeline, segment_size = full.timeline, full.wal_segment_size
    end = parse_lsn(chain[-1].meta.stop_lsn)
    consistent = end
    if archive:
        end = apply_archive(writer, archive, full, end)
    end_wal_at(data / "pg_wal", writer, end, segment_size)
    superuser = full.bootstrap_superuser or "postgres"
    configure(server, superuser, target_time)
    server.chown_tree()
    port = server.start(
        None, timeout=seconds_left(deadline, server.timeout, RestoreError, "before the start")
    )
    connection: Connection = {
        "host": server.bind_address,
        "port": port,
        "socket_dir": str(run),
        "superuser": superuser,
        "password": password,
        "database": "postgres",
        "data_dir": str(data),
        "managed": True,
        "os_user": server.identity.name,
        "slot": session.SLOT_PREFIX + secrets.token_hex(4),
        "users": [],
        "databases": [],
    }
    wait_promoted(
        connection,
        server,
        seconds_left(deadline, server.timeout, RestoreError, "before recovery ended"),
    )
    # To a time, recovery stops before the end of the archive, never before the backup.
    check_recovery_end(server, timeline, end if target_time is None else consistent, segment_size)
    # Until the superuser has a new password, the peer map lets only this process in.
    with session.connect(connection, require_auth=PEER) as conn:
        dbs = [
            r[0]
            for r in conn.execute(
                "SELECT datname FROM pg_database WHERE NOT datistemplate "
                "AND datname <> 'postgres' ORDER BY datname"
            )
        ]
        roles = [
            r[0]
            for r in conn.execute(
                "SELECT rolname FROM pg_roles WHERE rolcanlogin AND oid >= 16384 ORDER BY rolname"
            )
        ]
        conn.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(superuser),
                sql.Literal(
                    conn.pgconn.encrypt_password(
                        password.encode(), superuser.encode(), b"scram-sha-256"
                    ).decode()
                ),
            )
        )
        server.remove_file("data/strongroom-recovery.conf")
        server.write_hba()  # the superuser has a password now: no more peer map
        conn.execute("SELECT pg_reload_conf()")
    connection["databases"] = dbs
    connection["users"] = roles
    accounts.apply_request(connection, request)
    return connection


def end_wal_at(wal_dir: Path, writer: walstream.SegmentWriter, end: int, segment_size: int) -> None:
    """Cut the WAL at the backup's end: recovery then stops exactly there."""
    last_segno = end // segment_size
    writer.end_at(end)
    for entry in wal_dir.iterdir():
        if is_segment_name(entry.name):
            _tli, segno = segment_number(entry.name, segment_size)
            if segno > last_segno:
                entry.unlink()
        elif entry.name.endswith(".partial"):
            entry.unlink()


def apply_archive(
    writer: walstream.SegmentWriter,
    archive: Sequence[RestoreInput],
    full: PgMetadata,
    end: int,
) -> int:
    """Lay the archived batches after the backup's end into ``pg_wal``; they must join
    it and each other with no hole. Returns the end of the archived WAL."""
    position = end
    for batch in archive:
        header = walstream.read_header(batch.stream)
        for key, value in (
            ("system_identifier", full.system_identifier),
            ("timeline", full.timeline),
        ):
            if str(header.get(key)) != str(value):
                raise RestoreError(f"the archived WAL belongs to another server ({key})")
        if int(header["segment_size"]) != full.wal_segment_size:
            raise RestoreError("the archived WAL has another segment size")
        start, stop = int(header["start"]), int(header["stop"])
        if (start, stop) != (
            parse_lsn(batch.metadata["start_lsn"]),
            parse_lsn(batch.metadata["stop_lsn"]),
        ):
            raise RestoreError("an archived WAL batch does not match its manifest")
        if start > position:
            raise RestoreError(
                f"the archived WAL has a gap from {format_lsn(position)} to {format_lsn(start)}"
            )
        walstream.apply_wal_stream(batch.stream, header, writer)
        position = max(position, stop)
    return position


def configure(server: ManagedServer, superuser: str, target_time: datetime | None = None) -> None:
    data = server.data
    for name in (
        "postmaster.pid",
        "postmaster.opts",
        "standby.signal",
        "recovery.signal",
        "strongroom-port.conf",
        "strongroom-recovery.conf",
    ):
        (data / name).unlink(missing_ok=True)
    extra: dict[str, str | int] = {}
    controldata = process.run([server.tool("pg_controldata"), "-D", data], timeout=60)
    for line in controldata.stdout.decode("utf-8", "replace").splitlines():
        key, _, value = line.partition(":")
        setting = CONTROLDATA_SETTINGS.get(key.strip())
        if setting and value.strip().isdigit():
            extra[setting] = max(int(value.strip()), SETTING_FLOORS[setting])
    source_conf = data / "postgresql.conf"
    if source_conf.exists():
        source_conf.rename(data / "postgresql.conf.source")
    server.write_file(
        "postgresql.conf",
        "# The source server's settings are kept in postgresql.conf.source.\n" + INCLUDE_LINES,
    )
    server.write_file(
        "postgresql.auto.conf",
        "# Do not edit this file manually!\n"
        "# It will be overwritten by the ALTER SYSTEM command.\n",
    )
    server.write_base_conf(extra, restoring_as=superuser)
    # Archive recovery from pg_wal only (restore_command finds nothing), to the end
    # of the WAL laid out above or to the target time, then promotion onto a new timeline.
    server.write_file("strongroom-recovery.conf", recovery_target.render(target_time))
    server.write_file("recovery.signal", "")


# libpq's name for "the server asks for no password" (peer authentication): nothing is sent.
PEER = "none"


def wait_promoted(
    connection: Connection, server: ManagedServer, timeout: float | None = None
) -> None:
    """Until recovery has ended, at most ``timeout`` seconds (default the server's)."""
    deadline = time.monotonic() + (server.timeout if timeout is None else timeout)
    last_error = ""
    while time.monotonic() < deadline:
        try:
            with session.connect(connection, require_auth=PEER) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
            if row is not None and not row[0]:
                return
        except psycopg.Error as exc:
            last_error = session.pg_error(exc)
        time.sleep(PROMOTION_POLL)
    raise RestoreError(
        "the restored server did not finish recovery in time: "
        f"{last_error or server.log_since(0, 5)}"
    )


def check_recovery_end(server: ManagedServer, timeline: int, end: int, segment_size: int) -> None:
    """The new timeline's history file records where recovery ended: it must be the
    backup's end, or the WAL laid out was not replayed completely."""
    histories = sorted(
        (int(name[:8], 16), name)
        for name in server.list_dir("data/pg_wal")
        if name.endswith(".history") and len(name) == 16
    )
    if not histories:
        raise RestoreError("the restored server did not switch to a new timeline")
    _tli, name = histories[-1]
    switch: int | None = None
    text = server.read_file(f"data/pg_wal/{name}", 1 << 20).decode("utf-8", "replace")
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].isdigit() and int(fields[0]) == timeline:
            switch = parse_lsn(fields[1])
    if switch is None:
        raise RestoreError("the restored server's timeline history is unexpected")
    if record_boundary(switch, segment_size) < record_boundary(end, segment_size):
        raise RestoreError(
            f"recovery stopped at {format_lsn(switch)} before the backup's end "
            f"{format_lsn(end)}: the WAL is incomplete or corrupted"
        )
