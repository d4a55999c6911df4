"""Registering an existing MariaDB server on this host ("external" instance).

Only where the operator allows it (hosts and data directories, per project), only a
MariaDB server of this host's mariabackup series, whose data directory is the one given,
reached by an account holding what mariabackup needs. The service never touches its data
outside backups, and mariabackup runs as the data directory's owner (never root): whoever
runs that server can plant links and ``.isl`` files there, which then lead only to what
that owner can read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import pwd
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pymysql

from strongroom.engines import beneath
from strongroom.engines.allowlist import AllowList
from strongroom.engines.base import Connection
from strongroom.engines.errors import EngineError, ExternalNotAllowedError, InvalidExternalError
from strongroom.engines.identity import InstanceIdentity
from strongroom.engines.mariadb import metadata
from strongroom.engines.mariadb.accounts import BACKUP_PRIVILEGES
from strongroom.engines.mariadb.models import ExternalRegistration
from strongroom.engines.mariadb.sessions import external_session, sql_error
from strongroom.engines.mariadb.tools import Tools
from strongroom.engines.registration import parse_registration


def register(
    tools: Tools,
    params: Mapping[str, Any],
    *,
    project_id: str,
    allowed_hosts: AllowList,
    allowed_datadirs: AllowList,
) -> Connection:
    given = parse_registration(ExternalRegistration, params)
    host, port, user, password = given.host, given.port, given.user, given.password
    if not allowed_hosts.for_project(project_id):
        raise ExternalNotAllowedError(
            "registering external MariaDB servers is not enabled on this service "
            "(the operator has allowed no hosts)"
        )
    if not allowed_hosts.allows_host(host, project_id):
        raise ExternalNotAllowedError(
            f"the host {host!r} is not in the operator's list of allowed MariaDB hosts "
            "(mariabackup must run on the server's own host)"
        )
    resolved = Path(given.datadir).resolve()
    if not allowed_datadirs.allows_path(resolved, project_id):
        raise ExternalNotAllowedError(
            "the data directory is not inside a directory the operator allows "
            "external MariaDB servers to use"
        )
    connection: Connection = {
        "host": host,
        "port": port,
        "user": user,
        "password": password,
        "datadir": str(resolved),
        "managed": False,
    }
    try:
        with external_session(connection) as cursor:
            cursor.execute("SELECT VERSION(), @@datadir, @@log_bin")
            version, server_datadir, log_bin = cursor.fetchone()
            cursor.execute("SELECT DISTINCT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES")
            granted = {str(row[0]).upper() for row in cursor.fetchall()}
    except pymysql.MySQLError as exc:
        raise InvalidExternalError(
            f"cannot connect to the MariaDB server: {sql_error(exc, [password])}"
        ) from None
    if "mariadb" not in str(version).lower():
        raise InvalidExternalError("the server is not MariaDB")
    server_series = metadata.series(str(version))
    if server_series != tools.series:
        raise InvalidExternalError(
            f"the server runs MariaDB {server_series}; this host's mariabackup backs "
            f"up MariaDB {tools.series} only"
        )
    if Path(str(server_datadir)).resolve() != resolved:
        raise InvalidExternalError("the data directory given is not the server's data directory")
    if os.geteuid() == 0:
        datadir_owner(resolved, InvalidExternalError)
    if "REPLICATION CLIENT" in granted:
        granted.add("BINLOG MONITOR")
    missing = [p for p in BACKUP_PRIVILEGES if p not in granted]
    if missing:
        raise InvalidExternalError(
            f"the user {user!r} lacks privileges mariabackup needs: "
            + ", ".join(missing)
            + f" (grant {', '.join(BACKUP_PRIVILEGES)} ON *.*)"
        )
    connection["server_version"] = str(version)
    connection["log_bin"] = bool(log_bin)
    where = f"{host}:{port}:{resolved}".encode()
    connection["instance_uid"] = hashlib.sha256(where).hexdigest()[:32]
    return connection


def identity(connection: Connection) -> str:
    """What makes a registration this server: its data directory on this host."""
    return f"mariadb:{connection.get('datadir')}"


def datadir_owner(datadir: Path, error: type[EngineError]) -> InstanceIdentity:
    """The OS user owning ``datadir``, who runs the tools on it. The directory is reached
    from ``/`` through no link at all (a link could name someone else's directory, and the
    tools would run as its owner); one owned by root is refused (they would read what root
    can). Failures raise ``error``."""
    try:
        with beneath.directory("/") as top:
            fd = beneath.open_beneath(
                top, str(datadir.absolute()).lstrip("/"), os.O_RDONLY | os.O_DIRECTORY
            )
            try:
                st = os.fstat(fd)
            finally:
                os.close(fd)
    except beneath.EscapeError:
        raise error(f"the data directory {datadir} is reached through a symbolic link") from None
    except OSError as exc:
        if exc.errno == errno.ENOTDIR:
            raise error(f"the data directory {datadir} is not a directory") from None
        raise error(f"the data directory {datadir} cannot be opened: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise error(f"the data directory {datadir} is not a directory")
    if st.st_uid == 0:
        raise error(
            f"the data directory {datadir} belongs to root: mariabackup runs as the data "
            "directory's owner, never as root (give it to the server's own OS user)"
        )
    try:
        name = pwd.getpwuid(st.st_uid).pw_name
        entry = pwd.getpwnam(name)  # what runuser will look up
    except KeyError:
        raise error(
            f"the data directory {datadir}'s owner (uid {st.st_uid}) has no OS user"
        ) from None
    if entry.pw_uid != st.st_uid:
        raise error(f"the OS user name of the data directory {datadir}'s owner is ambiguous")
    return InstanceIdentity(entry.pw_name, entry.pw_uid, entry.pw_gid)
