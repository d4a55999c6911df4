"""Full and incremental backups with ``mariabackup --backup --stream=xbstream``.

mariabackup writes the backup to stdout, which is copied into the sink as it comes (no
copy of the data on disk; ``--target-dir`` is an empty scratch directory). It copies the
InnoDB files while tailing the redo log and takes ``BACKUP STAGE`` locks only for the final,
short phase, so the backup is consistent under concurrent writes. ``--extra-lsndir`` makes
it also write ``xtrabackup_checkpoints`` and ``xtrabackup_info`` (the same files that travel
in the stream) into a private scratch directory: after a successful run they give
``from_lsn``, ``to_lsn``, ``last_lsn`` and the binary log file, position and GTID recorded
under the backup lock, with the ``MySQL binlog position`` line of the tool's stderr as a
fallback. An incremental backup passes ``--incremental-lsn=<parent to_lsn>``: only pages
changed since then travel, as ``.delta`` files, plus the redo log written during the backup.

Every backup starts with an InnoDB checkpoint. mariabackup copies the redo log from the
server's last checkpoint: left alone, a backup carries up to the whole log, and its
``to_lsn`` lags behind, so the next incremental also holds every page changed since that
older checkpoint.

mariabackup never runs as root on a data directory someone else owns: a managed instance's
tool runs as its OS user, any other server's (an external one, an instance from before OS
users) as the data directory's owner, so a link or an ``.isl`` file planted there leads it
only to what that owner can read. It reads its password from an option file it inherits as
a descriptor (:func:`.tools.option_file`), never from its command line or a file its user
could open by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import pymysql

from strongroom.engines import process
from strongroom.engines.base import BackupResult, ByteSink, Connection, Metadata
from strongroom.engines.errors import BackupError
from strongroom.engines.identity import InstanceIdentity
from strongroom.engines.mariadb import config, external, metadata
from strongroom.engines.mariadb.sessions import managed_session, session, sql_error
from strongroom.engines.mariadb.tools import (
    Tools,
    defaults_file,
    failure_reason,
    option_file,
    read_tool_file,
    scrub,
)


def backup(
    tools: Tools,
    connection: Connection,
    sink: ByteSink,
    *,
    parent: Metadata | None,
    timeout: float,
) -> BackupResult:
    if connection.get("managed"):
        user, password = str(connection["backup_user"]), str(connection["backup_password"])
    else:
        user, password = str(connection["user"]), str(connection.get("password", ""))
    source_id = str(connection.get("instance_uid", ""))
    incremental_lsn = metadata.check_parent(parent, tools.series, source_id) if parent else None
    server_version, page_size = _probe(connection, user, password, tools)
    if connection.get("managed"):
        _checkpoint(connection, timeout)
    identity = _backup_identity(connection)
    options = config.render({"client": config.client_options(connection, user, password)})
    with config.private_dir() as scratch, option_file(options, owner=identity.owner) as defaults:
        # The scratch directory stays the service's (that user may only pass through):
        # what is made in it by name cannot be renamed or replaced by a link meanwhile.
        if identity.owner is not None:
            os.chmod(scratch, 0o711)
        target = scratch / "target"
        lsndir = scratch / "lsn"
        identity.private_dir(target)
        identity.private_dir(lsndir)
        argv: list[str | os.PathLike[str]] = [
            tools.mariabackup,
            defaults_file(defaults),
            "--backup",
            "--stream=xbstream",
            f"--target-dir={target}",
            f"--extra-lsndir={lsndir}",
            f"--datadir={connection['datadir']}",
        ]
        if not connection.get("managed"):
            # The same checkpoint, asked by mariabackup: it takes effect when the account
            # may SET GLOBAL (SUPER), else mariabackup goes on without it.
            argv.append("--innodb-log-checkpoint-now")
        if incremental_lsn is not None:
            argv.append(f"--incremental-lsn={incremental_lsn}")
        try:
            stderr = process.stream_out(
                identity.argv(argv), sink, pass_fds=(defaults,), cwd=scratch, timeout=timeout
            )
        except process.ProcessError as exc:
            reason = scrub(failure_reason(exc, tools.mariabackup), [password])
            raise BackupError(f"the backup failed: {reason}") from None
        try:
            checkpoints = metadata.parse_checkpoints(
                read_tool_file(lsndir, "xtrabackup_checkpoints")
            )
            info_text = read_tool_file(lsndir, "xtrabackup_info")
        except (OSError, ValueError) as exc:
            raise BackupError(f"mariabackup did not record the backup's LSNs: {exc}") from None
    expected = "incremental" if incremental_lsn is not None else "full-backuped"
    if checkpoints.backup_type != expected:
        raise BackupError(f"mariabackup made a {checkpoints.backup_type} backup")
    if incremental_lsn is not None and checkpoints.from_lsn != incremental_lsn:
        raise BackupError("mariabackup's incremental backup starts at another LSN")
    info = metadata.parse_key_values(info_text)
    binlog = metadata.parse_binlog_position(
        info.get("binlog_pos", "")
    ) or metadata.parse_binlog_position(stderr)
    result = metadata.build_metadata(
        checkpoints=checkpoints,
        info=info,
        binlog=binlog,
        server_series=tools.series,
        server_version=info.get("server_version", server_version),
        source_id=source_id,
        parent=parent,
        page_size=page_size,
    )
    return BackupResult(metadata=result, incremental=parent is not None)


def _probe(
    connection: Connection, user: str, password: str, tools: Tools
) -> tuple[str, int | None]:
    """Reach the server before streaming: a clear reason when it is down or another
    release series than this host's mariabackup."""
    try:
        with session(connection, user, password) as cursor:
            cursor.execute("SELECT VERSION(), @@innodb_page_size")
            version, page_size = cursor.fetchone()
    except pymysql.MySQLError as exc:
        raise BackupError(
            f"cannot connect to the MariaDB server: {sql_error(exc, [password])}"
        ) from None
    if metadata.series(str(version)) != tools.series:
        raise BackupError(
            f"the server runs MariaDB {metadata.series(str(version))}; this host's "
            f"mariabackup backs up MariaDB {tools.series} only"
        )
    return str(version), int(page_size) if page_size is not None else None


def _checkpoint(connection: Connection, timeout: float) -> None:
    """Flush every dirty page and write an InnoDB checkpoint (the statement returns once it
    is written: with a large buffer pool that takes a while), as the service's admin
    account: the backup account stays without SUPER."""
    try:
        with managed_session(connection, read_timeout=timeout) as cursor:
            cursor.execute("SET GLOBAL innodb_log_checkpoint_now = ON")
    except pymysql.MySQLError as exc:
        reason = sql_error(exc, [str(connection.get("admin_password", ""))])
        raise BackupError(f"the server could not write a checkpoint: {reason}") from None


def _backup_identity(connection: Connection) -> InstanceIdentity:
    """Who runs mariabackup: a managed instance's OS user; for any other server (an
    external one, an instance made before instances had OS users) the owner of its data
    directory. The service's own user when it is not root."""
    if os.geteuid() != 0:
        return InstanceIdentity.current()
    name = connection.get("os_user")
    if connection.get("managed") and isinstance(name, str):
        found = InstanceIdentity.lookup(name)
        if found is None:
            raise BackupError(f"the instance's OS user {name} is missing: restart the instance")
        return found
    datadir = connection.get("datadir")
    if not isinstance(datadir, str) or not datadir:
        raise BackupError("the connection names no data directory")
    return external.datadir_owner(Path(datadir), BackupError)
