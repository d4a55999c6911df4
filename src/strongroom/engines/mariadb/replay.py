"""Replaying archived binary log batches into a restored server, up to a time.

The restored backup is consistent at the binary log position it recorded (``binlog`` in
the newest link's metadata). The batches must join each other (each starts where the
previous stopped) and cover that position, else the restore is refused as a gap. Their
events after that position go, as one binary log stream (``\\xfebin``, then each file's
format description and its events), into ``mariadb-binlog -`` on a pipe, whose SQL goes
straight into the ``mariadb`` client connected to the restored server: nothing of the
archive is written to disk, one event is in the service's memory at a time.

Where it stops: MariaDB stamps a transaction's events with the whole second (UTC epoch)
its committing statement began, and keeps no finer commit time. A restore to ``T`` replays
the log up to, not including, the first transaction stamped at or after ``T``'s whole
second: the state as of ``T`` rounded down to the second (as ``mariadb-binlog
--stop-datetime`` does, but cut on whole transactions by the service, on the epoch
seconds of the events' headers, so neither the server's ``time_zone`` nor the tools'
``TZ`` plays a part). A transaction committed in the same second before ``T`` is therefore
not replayed; one still committing across the second is. Except at the archive's marks
(the server's clock, then its log position, read before each batch): a restore to a time
at or after a batch's mark replays at least up to it (every transaction committed before
the mark's clock reading), so a restore to the end of the window has every transaction
committed by then; and a restore to a time before a mark's clock replays nothing after
its position (written after that reading), so a long statement begun before the time
and committed after such a mark is not replayed, whatever its stamp.

A ``LOAD DATA`` logged as a statement (a tenant may set ``binlog_format=STATEMENT``)
cannot be replayed (the client has no ``LOCAL INFILE``): the replay refuses it, naming its
position, before the decoder sees it, and the decoder's ``--local-load`` points at the
replay's private directory, so it writes nothing elsewhere.

The client runs as the instance's OS user with ``--binary-mode`` (no client commands such
as ``\\!`` in what the log holds: a tenant writes the statements in it) and
``--sandbox`` (no client command that touches files), and without ``LOCAL INFILE``. It
reads the admin password from an option file it inherits as a descriptor
(:func:`.tools.option_file`). Both tools run as that user, who may stop them, or hold their
pipes open through ``/proc/PID/fd``: the service writes into the decoder without ever
blocking, up to one deadline for the whole replay, and keeps of their stderr a bounded tail.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pymysql

from strongroom.engines import process
from strongroom.engines.base import Connection, RestoreInput
from strongroom.engines.errors import RestoreError
from strongroom.engines.identity import InstanceIdentity
from strongroom.engines.mariadb import archiver, binlog, config
from strongroom.engines.mariadb.sessions import managed_session, sql_error
from strongroom.engines.mariadb.tools import SEARCH_PATH, defaults_file, option_file, scrub

MAX_PACKET = "1G"
# Events that describe a file rather than change data: a rotate ends a file, a GTID list
# and a binlog checkpoint open one. Left in, the decoder checks the GTID list against what
# it saw before, which a stream starting at a backup's position never satisfies.
SKIPPED = frozenset({binlog.ROTATE_EVENT, binlog.BINLOG_CHECKPOINT_EVENT, binlog.GTID_LIST_EVENT})


def stop_second(when: datetime | None) -> int | None:
    """The epoch second a restore to ``when`` (naive UTC) stops before."""
    if when is None:
        return None
    aware = when.replace(tzinfo=UTC) if when.tzinfo is None else when
    return int(aware.timestamp() // 1)


def backup_position(chain_metadata: Sequence[dict[str, object]]) -> tuple[str, int]:
    """``(base name, position)`` the newest link of the chain is consistent at."""
    recorded = chain_metadata[-1].get("binlog") if chain_metadata else None
    if not isinstance(recorded, dict) or not recorded.get("file"):
        raise RestoreError("the backup recorded no binary log position to replay from")
    name = str(recorded["file"]).rsplit("/", 1)[-1]
    try:
        index = binlog.file_index(name)
        return name.rsplit(".", 1)[0], binlog.encode(index, int(str(recorded["position"])))
    except (binlog.BinlogError, ValueError):
        raise RestoreError("the backup's binary log position is not valid") from None


def check_batches(archive: Sequence[RestoreInput], base: str, position: int) -> None:
    """The batches are the archive's, join one another and cover ``position``."""
    previous: int | None = None
    for batch in archive:
        meta = batch.metadata
        if meta.get("method") != archiver.ARCHIVE_METHOD:
            raise RestoreError("an archived batch is not a MariaDB binary log batch")
        if meta.get("format") != binlog.FORMAT_VERSION:
            raise RestoreError(f"archived batch format {meta.get('format')} is not supported")
        if str(meta.get("start_file", "")).rsplit(".", 1)[0] != base:
            raise RestoreError("the archived batches are of another server's binary log")
        if previous is not None and int(meta["start"]) != previous:
            raise RestoreError(
                f"the archive has a gap between {binlog.format_position(previous)} and "
                f"{binlog.format_position(int(meta['start']))}"
            )
        previous = int(meta["stop"])
    if not archive:
        raise RestoreError("no archived batch was given")
    first = int(archive[0].metadata["start"])
    if not first <= position <= int(archive[-1].metadata["stop"]):
        raise RestoreError(
            f"the archive has a gap: the backup is at {binlog.format_position(position)}, "
            f"the batches cover {binlog.format_position(first)} to "
            f"{binlog.format_position(int(archive[-1].metadata['stop']))}"
        )


def reached(archive: Sequence[RestoreInput], position: int, when: datetime | None) -> int:
    """The position a restore to ``when`` replays to whatever the stamps say: the
    newest mark (see :mod:`.archiver`) at or before ``when``, or ``position``."""
    if when is None:
        return position
    for batch in archive:
        marked_at, marked = batch.metadata.get("mark_time"), batch.metadata.get("mark_position")
        if marked_at and marked is not None and datetime.fromisoformat(str(marked_at)) <= when:
            position = max(position, int(str(marked)))
    return position


def written_after(archive: Sequence[RestoreInput], when: datetime | None) -> int | None:
    """The position a restore to ``when`` replays nothing after: the oldest mark whose
    clock reading is after ``when`` (what follows it was written later), if any."""
    if when is None:
        return None
    marks = [
        int(str(batch.metadata["mark_position"]))
        for batch in archive
        if batch.metadata.get("mark_time")
        and batch.metadata.get("mark_position") is not None
        and datetime.fromisoformat(str(batch.metadata["mark_time"])) > when
    ]
    return min(marks, default=None)


def check_reaches(archive: Sequence[RestoreInput], when: datetime) -> None:
    """The archive covers ``when`` (naive UTC): a restore to a time never stops short of
    it without saying so."""
    if not archive:
        raise RestoreError("no archived binary log covers the time asked for")
    try:
        through = max(datetime.fromisoformat(str(b.metadata["archived_through"])) for b in archive)
    except (KeyError, ValueError):
        raise RestoreError("an archived batch records no valid archived_through") from None
    target = when.astimezone(UTC).replace(tzinfo=None) if when.tzinfo else when
    if through < target:
        raise RestoreError(
            f"the archived binary log reaches {through.isoformat()} only, not the time "
            f"asked for ({target.isoformat()})"
        )


def events_after(
    archive: Sequence[RestoreInput],
    position: int,
    stop_at: int | None,
    *,
    through: int = 0,
    before: int | None = None,
) -> Iterator[bytes]:
    """A binary log stream of the events after ``position``, each file's format
    description first: every one up to ``through``, then up to the first transaction
    stamped at or after ``stop_at``; none that begins at or after ``before``."""
    yield binlog.BINLOG_MAGIC
    for batch in archive:
        reader = binlog.EventReader(batch.stream, start=int(batch.metadata["start"]))
        for event in reader:
            if event.type == binlog.FORMAT_DESCRIPTION_EVENT:
                yield event.raw
                continue
            if event.fake or event.type in SKIPPED or event.end <= position:
                continue
            if event.type == binlog.GTID_EVENT:
                if before is not None and event.end > before:
                    return
                if stop_at is not None and event.end > through and event.timestamp >= stop_at:
                    return
            if event.type in binlog.LOAD_EVENTS:
                raise RestoreError(
                    "the binary log holds a LOAD DATA logged as a statement (before "
                    f"{binlog.format_position(event.end)}), which cannot be replayed: "
                    "restore to a time before it"
                )
            yield event.raw


def _which(*names: str) -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SEARCH_PATH])
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    raise RestoreError(f"{names[0]} is not installed on this host")


def replay(
    connection: Connection,
    archive: Sequence[RestoreInput],
    chain_metadata: Sequence[dict[str, object]],
    *,
    target_time: datetime | None,
    timeout: float,
) -> None:
    """Replay ``archive`` into the restored, running server of ``connection``."""
    base, position = backup_position(chain_metadata)
    check_batches(archive, base, position)
    decoder = _which("mariadb-binlog", "mysqlbinlog")
    client = _which("mariadb", "mysql")
    identity = _identity(connection)
    password = str(connection["admin_password"])
    with config.private_dir() as scratch, _unsynced(connection):
        # The service's directory, which the instance's user may only pass through: what
        # is made in it by name cannot be renamed or replaced by a link meanwhile. The
        # decoder (that user) writes into a directory of its own inside.
        if identity.owner is not None:
            os.chmod(scratch, 0o711)
        loads = scratch / "load"
        identity.private_dir(loads)
        options = config.client_options(connection, str(connection["admin_user"]), password)
        with option_file(config.render({"client": options}), owner=identity.owner) as defaults:
            _pipeline(
                identity.argv(decoder_argv(decoder, loads)),
                identity.argv(
                    [
                        client,
                        defaults_file(defaults),
                        "--binary-mode",
                        "--sandbox",
                        "--batch",
                        "--skip-local-infile",
                        f"--max-allowed-packet={MAX_PACKET}",
                    ]
                ),
                events_after(
                    archive,
                    position,
                    stop_second(target_time),
                    through=reached(archive, position, target_time),
                    before=written_after(archive, target_time),
                ),
                cwd=scratch,
                timeout=timeout,
                secrets=[password],
                client_fds=(defaults,),
            )


def decoder_argv(decoder: str, scratch: Path) -> list[str]:
    """``mariadb-binlog`` reading the stream on stdin; any file it would prepare for a
    ``LOAD DATA`` goes into ``scratch`` (the replay's private directory), not ``/tmp``."""
    return [decoder, "--no-defaults", "--skip-gtid-strict-mode", f"--local-load={scratch}", "-"]


@contextlib.contextmanager
def _unsynced(connection: Connection) -> Iterator[None]:
    """Commits of the replay are not flushed one by one (the restore is not in use yet,
    and a crash fails it anyway: three times faster here) and statements may be as large
    as the client's; the server's own settings are back afterwards, and a checkpoint makes
    the replayed state durable."""
    password = str(connection.get("admin_password", ""))
    try:
        with managed_session(connection) as cursor:
            cursor.execute(
                "SELECT @@GLOBAL.innodb_flush_log_at_trx_commit, @@GLOBAL.max_allowed_packet"
            )
            flush, packet = cursor.fetchone()
            cursor.execute("SET GLOBAL innodb_flush_log_at_trx_commit = 2")
            # A row event holding a large value becomes one BINLOG statement, in base64.
            cursor.execute("SET GLOBAL max_allowed_packet = 1073741824")
        try:
            yield
        finally:
            with managed_session(connection, read_timeout=3600) as cursor:
                cursor.execute("SET GLOBAL innodb_flush_log_at_trx_commit = %s", (int(flush),))
                cursor.execute("SET GLOBAL max_allowed_packet = %s", (int(packet),))
                cursor.execute("SET GLOBAL innodb_log_checkpoint_now = ON")
    except pymysql.MySQLError as exc:
        reason = sql_error(exc, [password])
        raise RestoreError(f"the restored server refused a replay setting: {reason}") from None


def _identity(connection: Connection) -> InstanceIdentity:
    name = connection.get("os_user")
    if os.geteuid() != 0 or not isinstance(name, str):
        return InstanceIdentity.current()
    found = InstanceIdentity.lookup(name)
    if found is None:
        raise RestoreError(f"the instance's OS user {name} is missing")
    return found


def _pipeline(
    decoder_argv: list[str],
    client_argv: list[str],
    chunks: Iterable[bytes],
    *,
    cwd: Path,
    timeout: float,
    secrets: Sequence[str],
    client_fds: Sequence[int] = (),
) -> None:
    """``chunks`` → decoder → client, both with the minimal environment (UTC), within
    ``timeout`` seconds in all. ``client_fds``: descriptors the client inherits."""
    deadline = time.monotonic() + timeout
    env = process.minimal_env({"TZ": "UTC"})
    decoder = _spawn(decoder_argv, subprocess.PIPE, subprocess.PIPE, env=env, cwd=cwd)
    assert decoder.stdin is not None and decoder.stdout is not None
    try:
        client = _spawn(
            client_argv, decoder.stdout, subprocess.DEVNULL, env=env, cwd=cwd, pass_fds=client_fds
        )
    except BaseException:
        _kill_all(decoder)
        decoder.stdin.close()
        raise
    decoder.stdout.close()  # the client holds the read end now
    errors = {
        name: process.StderrCollector(p.stderr)
        for name, p in (("decoder", decoder), ("client", client))
    }
    for collector in errors.values():
        collector.start()
    try:
        try:
            _feed(decoder.stdin.fileno(), chunks, deadline)
        finally:
            decoder.stdin.close()
        codes = _wait(decoder, deadline), _wait(client, deadline)
    except _Expired:
        _kill_all(decoder, client)
        raise RestoreError(
            f"replaying the binary log did not finish within {timeout:.0f} s"
        ) from None
    except binlog.BinlogError as exc:
        _kill_all(decoder, client)
        raise RestoreError(f"an archived batch is damaged: {exc}") from None
    except BaseException:
        _kill_all(decoder, client)
        raise
    finally:
        drained_by = time.monotonic() + process.DRAIN_WAIT  # a pipe may be held elsewhere
        for collector in errors.values():
            collector.join(max(0.0, drained_by - time.monotonic()))
    for (name, collector), code in zip(errors.items(), codes, strict=True):
        if code != 0:
            tool = "mariadb-binlog" if name == "decoder" else "mariadb"
            reason = scrub(_reason(collector.lines), secrets)
            raise RestoreError(f"replaying the binary log failed: {tool} exited {code}: {reason}")


class _Expired(Exception):
    """The replay's deadline passed."""


def _feed(fd: int, chunks: Iterable[bytes], deadline: float) -> None:
    """Write ``chunks`` into the pipe ``fd`` without blocking, waiting for room in it
    until ``deadline`` at most (a reader that stopped, or a copy of the read end held
    elsewhere, would otherwise keep a write waiting for ever). A reader gone ends it."""
    os.set_blocking(fd, False)
    room = select.poll()
    room.register(fd, select.POLLOUT)
    for chunk in chunks:
        view = memoryview(chunk)
        while view:
            try:
                view = view[os.write(fd, view) :]
                continue
            except BlockingIOError:
                pass
            except BrokenPipeError:
                return  # a tool stopped reading: its status and stderr say why
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Expired
            room.poll(max(1, int(left * 1000)))
        if time.monotonic() > deadline:
            raise _Expired


def _wait(proc: subprocess.Popen[bytes], deadline: float) -> int:
    try:
        return proc.wait(max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise _Expired from None


def _spawn(
    argv: list[str],
    stdin: Any,
    stdout: Any,
    *,
    env: dict[str, str],
    cwd: Path,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen[bytes]:
    """A tool in a session of its own (so a kill reaches it and what runuser started for
    it, and nothing else), stderr collected."""
    return subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env=env,
        cwd=cwd,
        pass_fds=tuple(pass_fds),
        start_new_session=True,
    )


def _kill_all(*procs: subprocess.Popen[bytes]) -> None:
    for proc in procs:
        process.kill_group(proc)


def _reason(lines: Iterable[str]) -> str:
    """The tool's error lines (else its last lines), each cut short: around an error the
    client prints the statement, which is the tenant's data."""
    kept = list(lines)
    errors = [line for line in kept if line.startswith(("ERROR", "error"))]
    return "\n".join(line[:300] for line in (errors or kept)[-4:])
