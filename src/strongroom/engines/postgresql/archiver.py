"""Continuous WAL archiving for point-in-time restore: one batch at a time over a
replication slot of the archive's own, in the WAL-range stream format of
:mod:`walstream` (the same one an incremental backup uses).

Why a slot and the service's own receiver rather than ``archive_command``: it works the
same for managed and external servers (a role with REPLICATION is all it needs), nothing
runs as the server's OS user (which a tenant may control), a batch can be cut at any
second (``archive_command`` only sees whole 16 MiB segments, so RPO would need
``archive_timeout`` and its padded segments), and the slot keeps every byte not yet
stored: a restart resumes from the last stored position with no gap.

A batch ends just after a *marker* transaction the archiver commits itself: its commit
record carries a server timestamp later than ``archived_through`` (the server's clock,
read before the marker commits). Every transaction whose commit returned before that
clock reading lies inside the batch, and a replay to any time up to ``archived_through``
finds a later commit (the marker) before the end of the archived WAL, so recovery stops
at its target instead of running out of WAL.

One batch takes at most :data:`BATCH_SPAN` bytes of WAL: when the server has more, the
batch ends at a segment's start before that (no marker there, so it records
:data:`NOT_COVERED`) and the rest comes in the next batches. The host has one archiver,
which visits its instances one after another: a batch, its sessions included, must be
done within :data:`BATCH_SECONDS`, else it fails, nothing of it is kept, and the next
pass tries again from the same start.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from strongroom.engines.base import NOT_COVERED, ArchivedWal, ByteSink, Connection, Metadata
from strongroom.engines.errors import BackupError
from strongroom.engines.postgresql import session, walstream
from strongroom.engines.postgresql.deadline import answered_within
from strongroom.engines.postgresql.lsn import format_lsn, parse_lsn

ARCHIVE_METHOD = "pg_wal_archive"
SLOT_SUFFIX = "_pitr"
# The archiver visits every instance in turn: a server that stops answering, or answers
# each statement just in time, holds it up this long at most in one session (all of its
# statements together take milliseconds).
SESSION_DEADLINE = 30.0
# A batch's whole time: sessions, then its WAL (the copy's end may take
# walstream.FINISH_SECONDS more). A tenant's server, or a stand-in in its place, that
# trickles its WAL holds every other instance of the host up this long, no longer.
BATCH_SECONDS = 90.0
# A batch's most WAL: 256 MiB in 90 s needs 2.9 MiB/s from the server and the store, far
# below what either does; it also bounds what a restore writes for one batch.
BATCH_SPAN = 256 << 20


@dataclass(frozen=True)
class ArchiveBatch:
    """What one stored batch covers: WAL ``[start, stop)`` and every commit up to
    ``archived_through`` (naive UTC)."""

    timeline: int
    segment_size: int
    start: int
    stop: int
    system_identifier: str
    archived_through: datetime

    def archived(self) -> ArchivedWal:
        return ArchivedWal(self.start, self.stop, self.archived_through, self.metadata())

    def metadata(self) -> Metadata:
        return {
            "method": ARCHIVE_METHOD,
            "format": walstream.FORMAT_VERSION,
            "timeline": self.timeline,
            "wal_segment_size": self.segment_size,
            "start_lsn": format_lsn(self.start),
            "stop_lsn": format_lsn(self.stop),
            "system_identifier": self.system_identifier,
            "archived_through": self.archived_through.isoformat(timespec="microseconds"),
        }


def archive_slot(connection: Connection) -> str:
    """The archive's slot: apart from the backups' slot, which a full backup moves on."""
    base = str(connection.get("slot") or session.SLOT_PREFIX + "default")
    return base[: 63 - len(SLOT_SUFFIX)] + SLOT_SUFFIX


@contextlib.contextmanager
def _session(
    connection: Connection, seconds: float | None = None
) -> Iterator[session.BoundedConnection]:
    """A session that ends, all its statements together, within ``seconds``
    (SESSION_DEADLINE by default)."""
    bound = SESSION_DEADLINE if seconds is None else seconds
    with (
        session.connect(connection, deadline=bound) as conn,
        answered_within(conn.pgconn.socket, bound),
    ):
        yield conn


def start_archiving(connection: Connection) -> int:
    """Create the archive slot (reserving WAL from now) if it does not exist; return the
    position archiving starts from: the slot's restart position."""
    slot = archive_slot(connection)
    with _session(connection) as conn:
        state = session.slot_state(conn, slot)
        if state is not None and (state[0] is None or state[1] == "lost"):
            conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
            state = None
        if state is None:
            conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
            state = session.slot_state(conn, slot)
    if state is None or state[0] is None:
        raise BackupError(f"replication slot {slot} did not reserve WAL")
    return state[0]


def stop_archiving(connection: Connection) -> None:
    """Drop the archive slot, so the server keeps no more WAL for it."""
    slot = archive_slot(connection)
    with _session(connection) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND NOT active",
            (slot,),
        )


def slot_position(connection: Connection) -> int | None:
    """Where the slot keeps WAL from (``None``: gone or lost: the archive has a gap)."""
    with _session(connection) as conn:
        state = session.slot_state(conn, archive_slot(connection))
    if state is None or state[0] is None or state[1] == "lost":
        return None
    return state[0]


def _cut(conn: psycopg.Connection[Any]) -> tuple[datetime, int]:
    """Commit the marker transaction; the server's clock before it, and a WAL position
    after its commit record."""
    conn.autocommit = False
    try:
        # No standby the server's owner names may hold the marker. (Its commit record is
        # the transaction's only WAL, so PostgreSQL waits for none today; the walwriter
        # flushes it, and the walsender sends it, within moments.)
        conn.execute("SET LOCAL synchronous_commit = local")
        row = conn.execute("SELECT clock_timestamp(), pg_current_xact_id()").fetchone()
        conn.commit()
    finally:
        conn.autocommit = True
    stop_row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    assert row is not None and stop_row is not None
    through = row[0].astimezone(UTC).replace(tzinfo=None)
    return through, parse_lsn(stop_row[0])


def archive_batch(
    connection: Connection, sink: ByteSink, *, start: int, timeout: float = 600.0
) -> ArchiveBatch:
    """Stream WAL ``[start, now)`` into ``sink`` (at most BATCH_SPAN of it), within
    BATCH_SECONDS or ``timeout`` if that is less. Streaming from ``start`` confirms
    ``start`` to the slot: call this only once everything before ``start`` is stored."""
    slot = archive_slot(connection)
    deadline = time.monotonic() + min(timeout, BATCH_SECONDS)
    span: int | None = None
    pgconn = session.replication_pgconn(connection)
    try:
        sysid, timeline, _ = session.identify(pgconn)
        left = max(1.0, min(SESSION_DEADLINE, deadline - time.monotonic()))
        with _session(connection, left) as conn:
            facts = session.server_facts(conn)
            state = session.slot_state(conn, slot)
            if state is None or state[0] is None or state[1] == "lost":
                raise BackupError(f"replication slot {slot} is gone: the archive has a gap")
            if state[0] > start:
                raise BackupError(
                    f"the WAL from {format_lsn(start)} was released "
                    f"(kept from {format_lsn(state[0])}): the archive has a gap"
                )
            through, stop = _cut(conn)
        segment_size = int(facts["wal_segment_size"])
        span = _spans.get(slot, segment_size)
        stop, through = _within_span(start, stop, through, segment_size, span)
        window = walstream.WalWindow(timeline, segment_size, start, stop, sysid)
        walstream.write_header(sink, window.header())
        frames = walstream.FrameWriter(sink)
        session.stream_wal_when_slot_free(pgconn, slot, window, frames, deadline)
        frames.close()
    except (walstream.WalStreamError, psycopg.Error) as exc:
        if time.monotonic() >= deadline and span is not None:
            _spans.ran_out(slot, span)
        reason = exc if isinstance(exc, walstream.WalStreamError) else session.pg_error(exc)
        raise BackupError(f"archiving WAL failed: {reason}") from exc
    finally:
        pgconn.finish()
    _spans.went_through(slot, span)
    return ArchiveBatch(timeline, segment_size, start, stop, sysid, through)


class _Spans:
    """A batch's most WAL, per slot: BATCH_SPAN, halved (to one segment at least) each
    time a batch of the slot ran out of time, doubled back by each batch that did not. A
    server or store slower than BATCH_SPAN a BATCH_SECONDS then still moves on, in smaller
    batches, instead of failing the same batch at every pass."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spans: dict[str, int] = {}

    def get(self, slot: str, segment_size: int) -> int:
        with self._lock:
            return max(segment_size, min(BATCH_SPAN, self._spans.get(slot, BATCH_SPAN)))

    def ran_out(self, slot: str, span: int) -> None:
        with self._lock:
            self._spans[slot] = span // 2

    def went_through(self, slot: str, span: int) -> None:
        with self._lock:
            if span * 2 >= BATCH_SPAN:
                self._spans.pop(slot, None)
            else:
                self._spans[slot] = span * 2


_spans = _Spans()


def _within_span(
    start: int, stop: int, through: datetime, segment_size: int, span: int
) -> tuple[int, datetime]:
    """The batch's end: the marker's, or with more WAL than ``span`` (a whole segment at
    least) the start of the last segment that fits, covering nothing new."""
    if stop - start <= span:
        return stop, through
    limit = start + span
    return limit - limit % segment_size, NOT_COVERED


def confirm(connection: Connection, position: int) -> None:
    """Tell the slot everything before ``position`` is stored (after the last batch, so
    the server need not keep it until the next one)."""
    with _session(connection) as conn:
        conn.execute(
            "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
            (archive_slot(connection), format_lsn(position)),
        )
