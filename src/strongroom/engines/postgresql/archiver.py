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
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from strongroom.engines.base import ArchivedWal, ByteSink, Connection, Metadata
from strongroom.engines.errors import BackupError
from strongroom.engines.postgresql import session, walstream
from strongroom.engines.postgresql.lsn import format_lsn, parse_lsn

ARCHIVE_METHOD = "pg_wal_archive"
SLOT_SUFFIX = "_pitr"
# The archiver visits every instance in turn: a server that stops answering holds it up
# for this long at most (its statements take milliseconds).
SESSION_DEADLINE = 30.0


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


def start_archiving(connection: Connection) -> int:
    """Create the archive slot (reserving WAL from now) if it does not exist; return the
    position archiving starts from: the slot's restart position."""
    slot = archive_slot(connection)
    with session.connect(connection, deadline=SESSION_DEADLINE) as conn:
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
    with session.connect(connection, deadline=SESSION_DEADLINE) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s AND NOT active",
            (slot,),
        )


def slot_position(connection: Connection) -> int | None:
    """Where the slot keeps WAL from (``None``: gone or lost: the archive has a gap)."""
    with session.connect(connection, deadline=SESSION_DEADLINE) as conn:
        state = session.slot_state(conn, archive_slot(connection))
    if state is None or state[0] is None or state[1] == "lost":
        return None
    return state[0]


def _cut(conn: psycopg.Connection[Any]) -> tuple[datetime, int]:
    """Commit the marker transaction; the server's clock before it, and a WAL position
    after its commit record."""
    conn.autocommit = False
    try:
        conn.execute("SET LOCAL synchronous_commit = on")
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
    """Stream WAL ``[start, now)`` into ``sink``. Streaming from ``start`` confirms
    ``start`` to the slot: call this only once everything before ``start`` is stored."""
    slot = archive_slot(connection)
    deadline = time.monotonic() + timeout
    pgconn = session.replication_pgconn(connection)
    try:
        sysid, timeline, _ = session.identify(pgconn)
        with session.connect(connection, deadline=SESSION_DEADLINE) as conn:
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
        window = walstream.WalWindow(timeline, facts["wal_segment_size"], start, stop, sysid)
        walstream.write_header(sink, window.header())
        frames = walstream.FrameWriter(sink)
        session.stream_wal_when_slot_free(pgconn, slot, window, frames, deadline)
        frames.close()
    except walstream.WalStreamError as exc:
        raise BackupError(f"archiving WAL failed: {exc}") from exc
    except psycopg.Error as exc:
        raise BackupError(f"archiving WAL failed: {session.pg_error(exc)}") from exc
    finally:
        pgconn.finish()
    return ArchiveBatch(timeline, int(facts["wal_segment_size"]), start, stop, sysid, through)


def confirm(connection: Connection, position: int) -> None:
    """Tell the slot everything before ``position`` is stored (after the last batch, so
    the server need not keep it until the next one)."""
    with session.connect(connection, deadline=SESSION_DEADLINE) as conn:
        conn.execute(
            "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)",
            (archive_slot(connection), format_lsn(position)),
        )
