"""Backups through the replication protocol, for servers whose files this host cannot
read: ``pg_basebackup`` for a full, the WAL since the parent (kept by the registration's
replication slot) for an incremental; and their restore: the tar, then each link's WAL
into ``pg_wal`` (see the package text)."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psycopg

from strongroom.engines import process
from strongroom.engines.base import BackupResult, ByteSink, Connection, Metadata
from strongroom.engines.errors import BackupError, RestoreError
from strongroom.engines.postgresql import methods, session, tarstream, walstream
from strongroom.engines.postgresql.lsn import format_lsn, parse_lsn
from strongroom.engines.postgresql.methods import Link
from strongroom.engines.postgresql.models import ReplicationMetadata
from strongroom.engines.postgresql.server import ManagedServer

START_RE = re.compile(r"write-ahead log start point: ([0-9A-Fa-f]+/[0-9A-Fa-f]+) on timeline (\d+)")
END_RE = re.compile(r"write-ahead log end point: ([0-9A-Fa-f]+/[0-9A-Fa-f]+)")


class ReplicationMethod:
    """Servers reached only over the network: a role with REPLICATION is enough."""

    def __init__(self, *, tool: Callable[[str], Path], timeout: float) -> None:
        self._tool = tool
        self.timeout = timeout

    def backup(
        self, connection: Connection, sink: ByteSink, parent: Metadata | None
    ) -> BackupResult:
        if parent is None:
            return self._full_backup(connection, sink)
        return self._incremental_backup(connection, sink, parent)

    def _full_backup(self, connection: Connection, sink: ByteSink) -> BackupResult:
        slot = connection.get("slot") or session.SLOT_PREFIX + "default"
        with session.connect(connection) as conn:
            facts = session.server_facts(conn)
            state = session.slot_state(conn, slot)
            if state is not None and (state[0] is None or state[1] == "lost"):
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
                state = None
            if state is None:
                # Created before the backup starts, the slot keeps every WAL segment from
                # here on: the ones pg_basebackup fetches at its end and the ones the next
                # incremental streams.
                conn.execute("SELECT pg_create_physical_replication_slot(%s, true)", (slot,))
        pgconn = session.replication_pgconn(connection)
        try:
            sysid, _tli, _ = session.identify(pgconn)
        finally:
            pgconn.finish()
        counter = session.CountingSink(sink)
        try:
            stderr = process.stream_out(
                [
                    self._tool("pg_basebackup"),
                    "-D",
                    "-",
                    "-F",
                    "t",
                    "-X",
                    "fetch",
                    "-c",
                    "fast",
                    "-v",
                    "-l",
                    "strongroom",
                    "--manifest-checksums=CRC32C",
                ],
                counter,
                env=session.tool_env(connection),
                timeout=self.timeout,
            )
        except process.ProcessError as exc:
            raise BackupError(f"pg_basebackup failed: {exc}") from exc
        start = START_RE.search(stderr)
        end = END_RE.search(stderr)
        if not start or not end:
            raise BackupError(f"pg_basebackup did not report its WAL range: {stderr[-500:]}")
        start_lsn, timeline, stop_lsn = (
            parse_lsn(start.group(1)),
            int(start.group(2)),
            parse_lsn(end.group(1)),
        )
        with contextlib.suppress(psycopg.Error), session.connect(connection) as conn:
            # A new full backup starts a new chain: release the WAL before it.
            conn.execute(
                "SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, format_lsn(stop_lsn))
            )
        metadata: Metadata = {
            "method": methods.REPLICATION_FULL,
            "format": 1,
            "start_lsn": format_lsn(start_lsn),
            "stop_lsn": format_lsn(stop_lsn),
            "timeline": timeline,
            "system_identifier": sysid,
            "slot": slot,
            "stream_bytes": counter.count,
            **facts,
        }
        return BackupResult(metadata=metadata, incremental=False)

    def _incremental_backup(
        self, connection: Connection, sink: ByteSink, raw_parent: Metadata
    ) -> BackupResult:
        slot = connection.get("slot") or session.SLOT_PREFIX + "default"
        parent = methods.parse_parent(raw_parent)
        if not isinstance(parent, ReplicationMetadata):
            raise BackupError(
                "the parent backup read the server's files, which this host cannot; "
                "take a full backup"
            )
        if parent.slot not in (None, slot):
            raise BackupError(
                "the parent backup was taken through another registration "
                "of this server; take a full backup"
            )
        deadline = time.monotonic() + self.timeout
        pgconn = session.replication_pgconn(connection)
        try:
            sysid, timeline, _ = session.identify(pgconn)
            with session.connect(connection) as conn:
                facts = session.server_facts(conn)
                start = methods.check_parent(parent, facts, sysid, timeline)
                state = session.slot_state(conn, slot)
                if state is None:
                    raise BackupError(
                        f"replication slot {slot} is gone, so the WAL since the parent was "
                        "not kept; take a full backup"
                    )
                restart, wal_status = state
                if wal_status == "lost" or restart is None:
                    raise BackupError(
                        "the WAL since the parent was removed (the replication slot exceeded "
                        "max_slot_wal_keep_size); take a full backup"
                    )
                if restart > start:
                    raise BackupError(
                        f"the WAL since the parent ({format_lsn(start)}) was released "
                        f"(kept from {format_lsn(restart)} only); take a full backup"
                    )
                stop = self._end_point(conn)
            if stop < start:
                raise BackupError("the server's WAL is behind the parent backup")
            window = walstream.WalWindow(timeline, facts["wal_segment_size"], start, stop, sysid)
            counter = session.CountingSink(sink)
            walstream.write_header(counter, window.header())
            frames = walstream.FrameWriter(counter)
            session.stream_wal_when_slot_free(pgconn, slot, window, frames, deadline)
            frames.close()
        except walstream.WalStreamError as exc:
            raise BackupError(f"streaming WAL failed: {exc}") from exc
        finally:
            pgconn.finish()
        metadata: Metadata = {
            "method": methods.REPLICATION_INCREMENTAL,
            "format": 1,
            "start_lsn": format_lsn(start),
            "stop_lsn": format_lsn(stop),
            "timeline": timeline,
            "system_identifier": sysid,
            "slot": slot,
            "wal_bytes": stop - start,
            "stream_bytes": counter.count,
            "parent_stop_lsn": parent.stop_lsn,
            **facts,
        }
        return BackupResult(metadata=metadata, incremental=True)

    @staticmethod
    def _end_point(conn: psycopg.Connection[Any]) -> int:
        """A WAL record boundary covering every transaction committed so far, made
        durable: the insert position read inside a transaction whose commit (which
        follows it in the WAL) is flushed synchronously."""
        conn.autocommit = False
        try:
            conn.execute("SET LOCAL synchronous_commit = on")
            conn.execute("SELECT pg_current_xact_id()")
            row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            conn.commit()
        finally:
            conn.autocommit = True
        assert row is not None
        return parse_lsn(row[0])

    def lay_out(self, server: ManagedServer, chain: Sequence[Link]) -> walstream.SegmentWriter:
        """``pg_basebackup`` tar, then each incremental's WAL into ``pg_wal``."""
        full = chain[0].meta
        data, owner = server.data, server.identity.owner
        names = tarstream.extract(chain[0].stream, data, owner)
        if "PG_VERSION" not in names or "backup_label" not in names:
            raise RestoreError("the full backup stream is not a PostgreSQL base backup")
        if "backup_manifest" in names:
            try:
                process.run([self._tool("pg_verifybackup"), "-q", data], timeout=self.timeout)
            except process.ProcessError as exc:
                raise RestoreError(f"the full backup failed verification: {exc}") from exc
        writer = walstream.SegmentWriter(
            data / "pg_wal", full.timeline, full.wal_segment_size, owner
        )
        for link in chain[1:]:
            header = walstream.read_header(link.stream)
            methods.check_wal_header(header, link.meta, full)
            walstream.apply_wal_stream(link.stream, header, writer)
        return writer
