"""Continuous binary log archiving for point-in-time restore of managed MariaDB servers.

How the log is read: over the server's own replication protocol (``COM_BINLOG_DUMP`` in
non-blocking mode, as ``mariadb-binlog --read-from-remote-server`` does), as the service's
admin account through the instance's socket. The events come over the connection exactly
as the server wrote them and go straight into the batch's sink, one event in memory at a
time; no file of the server is opened by the service. The server reads its own files by
the names it keeps (``log_bin_basename`` is fixed in the service's option file), so a
tenant, even one that is SUPER on its own server, cannot steer the service to a file of
its choosing: every file name the dump sends back is checked to be ``<base>.<digits>``.

Why not copy the closed binlog files or ``FLUSH BINARY LOGS`` each batch: reading files
means trusting a directory the tenant's server user controls, and a flush every few
seconds would leave the server with thousands of small files; the dump cuts a batch at
any byte the server has committed, so RPO is the archiver's interval (10 s by default).

What a batch covers (``archived_through``): each transaction's events are stamped with the
whole second its committing statement began (``GTID`` event header; MariaDB 10.11 keeps no
finer commit time). Before the dump the archiver reads the server's clock ``C`` and how
long the oldest statement still running has run (``information_schema.PROCESSLIST``).
Everything the server binlogged before the dump started is in the batch; a transaction
written later either started after ``C`` or was running at ``C``, so it is stamped at or
after ``C - <oldest running statement>``, which the batch records as ``archived_through``.
A long statement therefore holds the window's end back (never the archiving itself).
A batch cut short by :class:`Limits` (so that one busy or hostile instance cannot hold
up the others of its host) holds only part of what was written before the dump started:
it records :data:`NOT_COVERED`, and the next batch carries the coverage on.

Each batch also records a *mark*: the server's clock ``C`` (read first) and then its
binary log position. Every transaction whose commit returned before ``C`` had been written
before the position was read, so a restore to a time at or after ``C`` replays at least
up to the mark: exact at the mark, where the events' whole-second stamps alone are not.

Gaps: the server keeps its binary logs for ``binlog_expire_logs_seconds`` (7 days); if the
file at the stored position is gone (purged, or the server was rebuilt), the dump fails
with the server's "could not find first log file" and the batch reports a gap, so the
service starts a new run and the window shows it.

External servers are not archived (the service would need REPLICATION SLAVE and BINLOG
MONITOR there and a server it cannot stop from purging); the API refuses them.
"""

from __future__ import annotations

import dataclasses
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pymysql

from strongroom.engines.base import NOT_COVERED, ArchivedWal, ByteSink, Connection, Metadata
from strongroom.engines.errors import BackupError
from strongroom.engines.mariadb import binlog, sessions
from strongroom.engines.mariadb.sessions import managed_session, sql_error

ARCHIVE_METHOD = "mariadb_binlog_archive"
COM_BINLOG_DUMP = 0x12
BINLOG_DUMP_NON_BLOCK = 1
# The replica id the archive's dump uses: far above any id an operator gives a real
# replica (a second dump with the same id would end the first).
DUMP_SERVER_ID = 0xFFFFFF00
MARIA_SLAVE_CAPABILITY_GTID = 4
GAP = "the archive has a gap"
MAX_PACKET = 0xFFFFFF  # a protocol packet's largest payload: a longer one continues
# The archiver visits every instance in turn: a server (or a stand-in its owner put on the
# socket) that stops answering holds it up this long at most in a session's handshake or
# statement (they take milliseconds); the dump itself ends within ``Limits.hard_seconds``.
SESSION_DEADLINE = 30.0


@dataclass(frozen=True)
class ArchiveBatch:
    """One stored batch: binlog ``[start, stop)``, every transaction stamped before
    ``archived_through`` (naive UTC)."""

    base: str
    start: int
    stop: int
    archived_through: datetime
    first_gtid: str | None
    last_gtid: str | None
    newest_event: datetime | None
    events: int
    mark_time: datetime | None = None
    mark_position: int | None = None

    def archived(self) -> ArchivedWal:
        return ArchivedWal(self.start, self.stop, self.archived_through, self.metadata())

    def metadata(self) -> Metadata:
        start_index, start_offset = binlog.decode(self.start)
        stop_index, stop_offset = binlog.decode(self.stop)
        return {
            "method": ARCHIVE_METHOD,
            "format": binlog.FORMAT_VERSION,
            "position_encoding": "file_index << 32 | offset",
            "start": self.start,
            "stop": self.stop,
            "start_file": binlog.file_name(self.base, start_index),
            "start_offset": start_offset,
            "stop_file": binlog.file_name(self.base, stop_index),
            "stop_offset": stop_offset,
            "first_gtid": self.first_gtid,
            "last_gtid": self.last_gtid,
            "newest_event": _iso(self.newest_event) if self.newest_event else None,
            "events": self.events,
            "archived_through": _iso(self.archived_through),
            "mark_time": _iso(self.mark_time) if self.mark_time else None,
            "mark_position": self.mark_position,
        }


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="microseconds")


def _require_managed(connection: Connection) -> None:
    if not connection.get("managed"):
        raise BackupError("binary log archiving is available for managed MariaDB servers only")


def _base_and_status(cursor: Any) -> tuple[str, int]:
    cursor.execute("SELECT @@log_bin, @@log_bin_basename")
    enabled, basename = cursor.fetchone()
    if not enabled or not basename:
        raise BackupError("the server does not write a binary log")
    cursor.execute("SHOW MASTER STATUS")
    row = cursor.fetchone()
    if row is None:
        raise BackupError("the server does not write a binary log")
    base = str(basename).rsplit("/", 1)[-1]
    name = str(row[0])
    if not name.startswith(base + "."):
        raise BackupError(f"unexpected binary log name {name[:80]!r}")
    return base, binlog.encode(binlog.file_index(name), int(row[1]))


def start_archiving(connection: Connection) -> int:
    """The server's current binary log position: archiving starts there (the server keeps
    its logs for ``binlog_expire_logs_seconds``, nothing needs reserving)."""
    _require_managed(connection)
    with managed_session(connection, deadline=SESSION_DEADLINE) as cursor:
        return _base_and_status(cursor)[1]


def stop_archiving(connection: Connection) -> None:
    """Nothing is held on the server for the archive."""


def _coverage(cursor: Any) -> tuple[datetime, datetime]:
    """``C``, and ``C`` minus the run time of the oldest statement still running (see
    the module documentation), naive UTC."""
    cursor.execute(
        "SELECT UTC_TIMESTAMP(6), COALESCE(MAX(TIME_MS), 0) FROM information_schema.PROCESSLIST "
        "WHERE COMMAND IN ('Query', 'Execute') AND ID <> CONNECTION_ID()"
    )
    now, oldest_ms = cursor.fetchone()
    return now, now - timedelta(milliseconds=float(oldest_ms))


def archive_batch(
    connection: Connection, sink: ByteSink, *, start: int, limits: Limits | None = None
) -> ArchiveBatch:
    """Stream the binary log from ``start`` to the end the server has written (or as far
    as ``limits`` let one batch go) into ``sink`` (:data:`binlog.MAGIC`, then the events
    as the server sent them)."""
    _require_managed(connection)
    password = str(connection.get("admin_password", ""))
    try:
        with managed_session(connection, deadline=SESSION_DEADLINE) as cursor:
            marked_at, through = _coverage(cursor)
            base, marked = _base_and_status(cursor)
        batch = _dump(
            connection, sink, base=base, start=start, through=through, limits=limits or Limits()
        )
        if start <= marked <= batch.stop:
            batch = dataclasses.replace(batch, mark_time=marked_at, mark_position=marked)
        return batch
    except pymysql.MySQLError as exc:
        reason = sql_error(exc, [password])
        if exc.args and exc.args[0] == 1236:  # ER_MASTER_FATAL_ERROR_READING_BINLOG
            where = binlog.format_position(start)
            raise BackupError(f"the binary log from {where} is gone: {reason}: {GAP}") from None
        raise BackupError(f"archiving the binary log failed: {reason}") from None
    except binlog.BinlogError as exc:
        raise BackupError(f"archiving the binary log failed: {exc}") from None


@dataclass(frozen=True)
class Limits:
    """How much one batch may take, so that one instance cannot hold up the archiving of
    every other on its host (they are archived one after another). A batch ends at the
    first group boundary after ``batch_bytes`` of events (heartbeats and every other event
    counted) or ``batch_seconds``; the rest of the log comes in the next batch. A group
    still open then may run on to its end up to ``hard_bytes`` / ``hard_seconds`` (the
    dump's overall deadline), else the pass fails for this instance alone. No read waits
    longer than ``read_seconds``."""

    batch_bytes: int = 256 << 20
    batch_seconds: float = 30.0
    hard_bytes: int = 1 << 30
    hard_seconds: float = 120.0
    read_seconds: float = 60.0


def _overran(message: str) -> Exception:
    return binlog.BinlogError("the dump did not end within its time limit")


@dataclass
class _Taken:
    """What one dump wrote into the sink: the log up to ``stop``; ``complete`` when it
    reached the end the server had written (not cut short by :class:`Limits`)."""

    stop: int
    first_gtid: str | None = None
    last_gtid: str | None = None
    newest: int | None = None
    count: int = 0
    complete: bool = True


def _dump(
    connection: Connection,
    sink: ByteSink,
    *,
    base: str,
    start: int,
    through: datetime,
    limits: Limits,
) -> ArchiveBatch:
    index, offset = binlog.decode(start)
    if offset < binlog.FIRST_OFFSET:
        raise binlog.BinlogError(f"position {binlog.format_position(start)} is not in a file")
    conn = sessions.connect(
        str(connection["admin_user"]),
        str(connection["admin_password"]),
        unix_socket=str(connection["socket"]),
        read_timeout=limits.read_seconds,
        deadline=SESSION_DEADLINE,
    )
    try:
        with conn.cursor() as cursor:
            cursor.execute("SET @master_binlog_checksum = @@global.binlog_checksum")
            cursor.execute(f"SET @mariadb_slave_capability = {MARIA_SLAVE_CAPABILITY_GTID}")
        name = binlog.file_name(base, index).encode("ascii")
        payload = struct.pack("<IHI", offset, BINLOG_DUMP_NON_BLOCK, DUMP_SERVER_ID) + name
        # The dump's events are bounded one by one (see _events), not as one reply.
        conn.max_reply_bytes = None
        deadline = time.monotonic() + limits.hard_seconds
        # By the clock: each read waits read_seconds at most, but a server that sends a
        # byte now and then would keep every read going.
        with conn.answered_within(limits.hard_seconds, error=_overran):
            # pymysql has no public call for a binlog dump: its own command writer sends it.
            conn._execute_command(COM_BINLOG_DUMP, payload)
            sink.write(binlog.MAGIC)
            events = _events(conn, deadline, limits.read_seconds)
            taken = take(events, sink, start=start, limits=limits)
    finally:
        conn.close()
    return ArchiveBatch(
        base,
        start,
        taken.stop,
        through if taken.complete else NOT_COVERED,
        taken.first_gtid,
        taken.last_gtid,
        datetime.fromtimestamp(taken.newest, UTC).replace(tzinfo=None) if taken.newest else None,
        taken.count,
    )


def _events(conn: Any, deadline: float, read_seconds: float) -> Iterator[bytes]:
    """The dump's events as the server sends them, until its end (an EOF packet).

    Read packet by packet (pymysql's own reader would join an event of any size): an
    event the header of which says it is larger than :data:`binlog.MAX_EVENT` is refused
    before its body is read, and no read waits past ``deadline``."""
    while True:
        parts: list[bytes] = []
        wanted = -1
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise binlog.BinlogError("the dump did not end within its time limit")
            conn._sock.settimeout(min(read_seconds, remaining))
            try:
                header = conn._read_bytes(4)
                length = int.from_bytes(header[:3], "little")
                if header[3] != conn._next_seq_id:
                    raise binlog.BinlogError("the server's packets are out of sequence")
                conn._next_seq_id = (conn._next_seq_id + 1) % 256
                data = conn._read_bytes(length)
            except pymysql.err.OperationalError as exc:
                if isinstance(exc.__context__, TimeoutError):
                    raise binlog.BinlogError(
                        f"the server sent nothing for {min(read_seconds, remaining):.0f} s"
                    ) from None
                raise
            if not parts:
                if data[:1] == b"\xff":
                    pymysql.err.raise_mysql_exception(data)
                if data[:1] == b"\xfe" and length < 9:
                    return
                if data[:1] != b"\0":
                    raise binlog.BinlogError("the server sent a packet that is not an event")
                data = data[1:]
                wanted = binlog.event_size(data)
            parts.append(data)
            if length < MAX_PACKET:
                break
            if sum(map(len, parts)) > wanted:
                raise binlog.BinlogError("a binary log event is longer than its header says")
        yield parts[0] if len(parts) == 1 else b"".join(parts)


def take(
    events: Iterable[bytes],
    sink: ByteSink,
    *,
    start: int,
    limits: Limits,
    clock: Callable[[], float] = time.monotonic,
) -> _Taken:
    """Write ``events`` (as the dump sends them, from ``start``) into ``sink`` until they
    end or :class:`Limits` cut the batch at a group boundary; anything malformed is a
    :class:`binlog.BinlogError`."""
    tracker = binlog.Tracker(binlog.decode(start)[0])
    taken = _Taken(start)
    group: str | None = None  # the kind of the group not yet ended
    size = 0
    began = clock()
    try:
        for raw in events:
            event = tracker.event(raw)
            sink.write(event.raw)
            size += len(event.raw)
            if not event.fake:
                taken.count += 1
                taken.stop = event.end
                if event.type == binlog.GTID_EVENT:
                    taken.last_gtid = event.gtid()
                    taken.first_gtid = taken.first_gtid or taken.last_gtid
                    taken.newest = max(taken.newest or 0, event.timestamp)
                    group = "standalone" if event.standalone() else "transaction"
                elif group is not None and _ends_group(event, group):
                    group = None
            elapsed = clock() - began
            if size >= limits.batch_bytes or elapsed >= limits.batch_seconds:
                if group is None:
                    taken.complete = False
                    return taken
                if size >= limits.hard_bytes or elapsed >= limits.hard_seconds:
                    raise binlog.BinlogError(
                        f"a transaction runs past {size} bytes and {elapsed:.0f} s of the "
                        "binary log without ending: the batch cannot end at its boundary"
                    )
    except binlog.BinlogError:
        raise
    except (struct.error, IndexError, ValueError, UnicodeError, RuntimeError) as exc:
        raise binlog.BinlogError(f"the server sent a malformed event ({exc})") from None
    if group is not None:
        raise binlog.BinlogError("the dump ended inside a transaction")
    return taken


def _ends_group(event: binlog.Event, group: str) -> bool:
    """The last event of a group: XID, XA PREPARE, the one statement of a standalone group
    (DDL), or a COMMIT/ROLLBACK (or XA COMMIT/ROLLBACK) query."""
    if event.type in (binlog.XID_EVENT, binlog.XA_PREPARE_EVENT):
        return True
    if event.type != binlog.QUERY_EVENT:
        return False
    if group == "standalone":
        return True
    text = binlog.body_without_checksum(event.raw).rstrip().upper()
    return text.endswith((b"COMMIT", b"ROLLBACK")) or b"XA COMMIT" in text or b"XA ROLLBACK" in text
