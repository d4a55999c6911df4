"""External servers: registering one (the operator's allow-lists, reachability, the
role's privileges, optionally its data directory on this host), what makes it *this*
server, and releasing what the service holds on it (its replication slot)."""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import psycopg

from strongroom.engines import beneath
from strongroom.engines.allowlist import AllowList
from strongroom.engines.base import Connection
from strongroom.engines.errors import BackupError, ExternalNotAllowedError, InvalidExternalError
from strongroom.engines.postgresql import datadir, session
from strongroom.engines.postgresql.models import ExternalRegistration
from strongroom.engines.registration import parse_registration


def register(
    params: Mapping[str, Any],
    *,
    project_id: str,
    allowed_hosts: AllowList,
    allowed_data_dirs: AllowList,
    major: str,
) -> Connection:
    given = parse_registration(ExternalRegistration, params)
    host, port, user = given.host, given.port, given.user
    if not allowed_hosts.allows_host(host, project_id):
        if not allowed_hosts.for_project(project_id):
            raise ExternalNotAllowedError(
                "external PostgreSQL servers are not allowed on this service "
                "(the operator's allowed hosts list is empty)"
            )
        raise ExternalNotAllowedError(
            f"host {host!r} is not in the operator's list of allowed PostgreSQL hosts"
        )
    connection: Connection = {
        "host": host,
        "port": port,
        "user": user,
        "password": given.password,
        "database": given.database,
        "managed": False,
        "slot": session.SLOT_PREFIX + secrets.token_hex(4),
    }
    where = f"{host}:{port}"
    try:
        with session.connect(connection) as conn:
            row = conn.execute(
                "SELECT rolreplication, rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            if row is None or not (row[0] or row[1]):
                raise InvalidExternalError(f"role {user} lacks the REPLICATION attribute")
            version_num = int(session.scalar(conn, "SHOW server_version_num"))
            wal_level = session.scalar(conn, "SHOW wal_level")
            senders = int(session.scalar(conn, "SHOW max_wal_senders"))
            keep = session.scalar(conn, "SHOW max_slot_wal_keep_size")
            in_recovery = session.scalar(conn, "SELECT pg_is_in_recovery()")
    except psycopg.Error as exc:
        raise InvalidExternalError(
            f"cannot connect to {where}: "
            f"{session.scrub(session.pg_error(exc), connection['password'])}"
        ) from exc
    theirs = str(version_num // 10000)
    if theirs != major:
        raise InvalidExternalError(
            f"server at {where} runs PostgreSQL {theirs}, this host runs {major}"
        )
    if wal_level not in ("replica", "logical"):
        raise InvalidExternalError(
            f"server at {where} has wal_level={wal_level}; physical backups need wal_level=replica"
        )
    if senders < 2:
        raise InvalidExternalError(f"server at {where} needs max_wal_senders of at least 2")
    if in_recovery:
        raise InvalidExternalError(f"server at {where} is a standby; register its primary")
    try:
        pgconn = session.replication_pgconn(connection)
        try:
            sysid, _tli, _pos = session.identify(pgconn)
        finally:
            pgconn.finish()
    except BackupError as exc:
        raise InvalidExternalError(
            f"server at {where} refuses replication connections for role {user}: "
            f"{session.scrub(str(exc), connection['password'])}"
        ) from exc
    connection["system_identifier"] = sysid
    connection["max_slot_wal_keep_size"] = keep
    if given.data_dir is not None:
        connection["data_dir"] = _check_data_dir(
            connection, given.data_dir, sysid, project_id, allowed_data_dirs
        )
    return connection


def identity(connection: Connection) -> str:
    sysid = connection.get("system_identifier")
    if connection.get("data_dir"):
        return f"postgresql:datadir:{connection['data_dir']}"
    return f"postgresql:{connection.get('host')}:{connection.get('port')}:{sysid}"


def _check_data_dir(
    connection: Connection,
    given: str,
    sysid: str,
    project_id: str,
    allowed_data_dirs: AllowList,
) -> str:
    """A server on this host may name its data directory: its backups then read the
    files (page incrementals) instead of ``pg_basebackup`` and retained WAL."""
    resolved = Path(given).resolve()
    if not allowed_data_dirs.allows_path(resolved, project_id):
        raise ExternalNotAllowedError(
            "the data directory is not inside a directory the operator allows "
            "external PostgreSQL servers to use"
        )
    try:
        with session.connect(connection) as conn:
            row = conn.execute(
                "SELECT (SELECT setting FROM pg_settings WHERE name = 'data_directory'), "
                "has_function_privilege('pg_backup_start(text, boolean)', 'EXECUTE') "
                "AND has_function_privilege('pg_backup_stop(boolean)', 'EXECUTE')"
            ).fetchone()
    except psycopg.Error as exc:
        raise InvalidExternalError(
            f"cannot read the server's settings: {session.pg_error(exc)}"
        ) from exc
    assert row is not None
    if not row[1]:
        raise InvalidExternalError("the role may not run pg_backup_start and pg_backup_stop")
    if not row[0] or Path(str(row[0])).resolve() != resolved:
        raise InvalidExternalError(
            "the data directory given is not the server's data directory (or the role "
            "cannot read the data_directory setting)"
        )
    try:
        with beneath.directory(resolved) as root_fd:
            found = datadir.system_identifier(root_fd)
    except datadir.DataDirError as exc:
        raise InvalidExternalError(f"the data directory cannot be read: {exc}") from exc
    except OSError as exc:
        raise InvalidExternalError(
            f"this host cannot read the server's data directory: {exc.strerror}"
        ) from exc
    if found != sysid:
        raise InvalidExternalError("the data directory belongs to another server")
    return str(resolved)


def forget(connection: Connection) -> None:
    """Drop the registration's slot, so the server stops keeping WAL for us. The
    walsender of a backup that just ended may hold it a moment."""
    with contextlib.suppress(Exception), session.connect(connection) as conn:
        busy_until = time.monotonic() + session.SLOT_BUSY_WAIT
        while True:
            row = conn.execute(
                "SELECT active FROM pg_replication_slots WHERE slot_name = %s",
                (connection.get("slot"),),
            ).fetchone()
            if row is None:
                break
            if not row[0]:
                conn.execute("SELECT pg_drop_replication_slot(%s)", (connection.get("slot"),))
                break
            if time.monotonic() > busy_until:
                break
            time.sleep(0.2)
