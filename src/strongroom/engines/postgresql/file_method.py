"""File-level backups: the data directory's files read between ``pg_backup_start`` and
``pg_backup_stop``, the pages changed since the parent for an incremental, the backup's
own WAL window after them; and their restore, newest link first (see the package text).

The files are read as root from a directory the server's OS user controls: by descriptor
and never through a link (:func:`datadir.walk`)."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGconn

from strongroom.engines import beneath
from strongroom.engines.base import BackupResult, ByteSink, Connection, Metadata, ParentChain
from strongroom.engines.errors import BackupError, RestoreError
from strongroom.engines.postgresql import (
    datadir,
    filestream,
    methods,
    pagedelta,
    session,
    wal_header,
    walstream,
)
from strongroom.engines.postgresql.deadline import answered_within
from strongroom.engines.postgresql.lsn import format_lsn, parse_lsn, window_start
from strongroom.engines.postgresql.methods import Link, PgMetadata
from strongroom.engines.postgresql.models import FilesMetadata
from strongroom.engines.postgresql.parentpages import ParentPages
from strongroom.engines.postgresql.server import ManagedServer
from strongroom.engines.postgresql.streamio import StreamFormatError, close_source

# Threads laying out a link's files at once (see filestream.ChainRestorer.apply).
LAYOUT_THREADS = min(4, os.cpu_count() or 1)


def _close_all(streams: Sequence[object]) -> None:
    for stream in streams:
        close_source(stream)


class FileMethod:
    """Servers whose data directory this host reads: managed ones, and external ones
    registered with ``data_dir``."""

    def __init__(self, *, timeout: float, page_deltas: bool = False) -> None:
        self.timeout = timeout
        self.page_deltas = page_deltas

    @staticmethod
    def applies(connection: Connection) -> bool:
        """Servers whose data directory this host can read (managed ones, and external
        ones registered with ``data_dir``) are backed up by reading their files. A
        managed one always is: its owner can remove a file, and the other method runs
        ``pg_basebackup``, whose libpq may send a password in clear text to whatever
        answers on the socket in the owner's home."""
        if connection.get("managed"):
            return True
        data_dir = connection.get("data_dir")
        return bool(data_dir and os.access(Path(data_dir) / "PG_VERSION", os.R_OK))

    def backup(
        self,
        connection: Connection,
        sink: ByteSink,
        parent: Metadata | None,
        parent_chain: ParentChain | None = None,
    ) -> BackupResult:
        data = Path(connection["data_dir"])
        deadline = time.monotonic() + self.timeout
        pgconn = session.replication_pgconn(connection)
        parent_pages: ParentPages | None = None
        try:
            sysid, timeline, _ = session.identify(pgconn)
            slot = self._reserve_wal(pgconn)
            with session.connect(connection) as conn:
                facts = session.server_facts(conn)
                threshold, known_databases = None, set[str]()
                if parent is not None:
                    threshold, known_databases = self._page_threshold(
                        conn, parent, facts, sysid, timeline
                    )
                    if self.page_deltas and parent_chain is not None:
                        parent_pages = self._parent_pages(parent_chain, facts["block_size"])
                row = conn.execute("SELECT pg_backup_start('strongroom', true)::text").fetchone()
                assert row is not None
                start = parse_lsn(row[0])
                # Databases committed now were completely on disk before the copy starts,
                # so the next incremental may take only their changed pages.
                databases = [f"base/{r[0]}" for r in conn.execute("SELECT oid FROM pg_database")]
                counter = session.CountingSink(sink)
                writer = filestream.DirStreamWriter(
                    counter,
                    {
                        "kind": "full" if parent is None else "pages",
                        "block_size": facts["block_size"],
                        "timeline": timeline,
                        "start_lsn": format_lsn(start),
                        "threshold_lsn": None if threshold is None else format_lsn(threshold),
                    },
                    parent=parent_pages,
                )
                with beneath.directory(data) as root_fd:
                    if datadir.system_identifier(root_fd) != sysid:
                        raise BackupError(
                            "the data directory is not the server's (another system "
                            "identifier in its pg_control)"
                        )
                    pages = self._copy_files(root_fd, writer, threshold, known_databases)
                # Closing the session would also end the backup; this returns its label.
                row = conn.execute(
                    "SELECT lsn::text, labelfile, spcmapfile FROM pg_backup_stop(false)"
                ).fetchone()
                assert row is not None
            stop = parse_lsn(row[0])
            if row[2]:
                raise BackupError("tablespaces are not supported")
            writer.label(row[1], "")
            wal_start = window_start(start, facts["wal_segment_size"])
            window = walstream.WalWindow(
                timeline, facts["wal_segment_size"], wal_start, stop, sysid
            )
            self._stream_window(pgconn, slot, window, counter, deadline)
        except walstream.WalStreamError as exc:
            raise BackupError(f"streaming WAL failed: {exc}") from exc
        except StreamFormatError as exc:
            raise BackupError(f"the parent backup chain could not be read: {exc}") from exc
        finally:
            pgconn.finish()
            if parent_pages is not None:
                parent_pages.close()
        metadata: Metadata = {
            "method": methods.FILES_FULL if parent is None else methods.FILES_INCREMENTAL,
            "format": 1,
            "start_lsn": format_lsn(start),
            "stop_lsn": format_lsn(stop),
            "wal_start_lsn": format_lsn(wal_start),
            "timeline": timeline,
            "system_identifier": sysid,
            "databases": databases,
            "stream_bytes": counter.count,
            "segment_offsets": writer.segment_offsets,
            **facts,
        }
        if threshold is not None:
            metadata["threshold_lsn"] = format_lsn(threshold)
            metadata["changed_pages"] = pages
        if parent_pages is not None:
            metadata["page_format"] = methods.PAGE_REALIGNED
            metadata["delta_pages"] = writer.delta_pages
            metadata["realigned_pages"] = writer.realigned_pages
        return BackupResult(metadata=metadata, incremental=parent is not None)

    @staticmethod
    def _parent_pages(parent_chain: ParentChain, block_size: int) -> ParentPages | None:
        """The parent chain's pages, for deltas: every link file-level, full first.
        None when the chain is too long to read side by side: whole pages are stored."""
        try:
            links = parent_chain()
        except Exception as exc:
            raise BackupError(
                f"the parent backup chain could not be opened: {type(exc).__name__}: {exc}"
            ) from exc
        streams = [link.stream for link in links]
        try:
            if len(links) <= pagedelta.MAX_PARENT_LINKS:
                for link in links:
                    if not isinstance(methods.parse_parent(link.metadata), FilesMetadata):
                        raise BackupError("the parent's chain mixes backup methods")
                return ParentPages(streams, block_size)
        except BaseException:
            _close_all(streams)
            raise
        _close_all(streams)
        return None

    @staticmethod
    def _reserve_wal(pgconn: PGconn) -> str:
        """A temporary slot on this replication connection: it keeps the backup's WAL
        window until it is streamed, and goes away with the connection."""
        slot = f"{session.SLOT_PREFIX}tmp_{secrets.token_hex(6)}"
        with answered_within(pgconn.socket, session.CONNECT_TIMEOUT * 3):
            result = pgconn.exec_(
                f"CREATE_REPLICATION_SLOT {slot} TEMPORARY PHYSICAL RESERVE_WAL".encode()
            )
        if result.status != pq.ExecStatus.TUPLES_OK:
            raise BackupError(
                "could not reserve the WAL for the backup: "
                f"{walstream._error_text(result.error_message)}"
            )
        return slot

    def _page_threshold(
        self,
        conn: psycopg.Connection[Any],
        parent: Metadata,
        facts: Mapping[str, Any],
        sysid: str,
        timeline: int,
    ) -> tuple[int, set[str]]:
        """The LSN from which pages count as changed (the parent's start) and the
        databases whose pages may be filtered by it; raises when the parent is no base."""
        parsed = methods.parse_parent(parent)
        if not isinstance(parsed, FilesMetadata):
            raise BackupError(
                "the parent backup was taken with pg_basebackup, this server's "
                "backups now read its files; take a full backup"
            )
        methods.check_parent(parsed, facts, sysid, timeline)
        threshold = parse_lsn(parsed.start_lsn)
        row = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
        assert row is not None
        if threshold > parse_lsn(row[0]):
            raise BackupError(
                f"the parent backup started at {format_lsn(threshold)}, after the "
                f"server's current WAL position {row[0]}; take a full backup"
            )
        return threshold, set(parsed.databases)

    @staticmethod
    def _stream_window(
        pgconn: PGconn,
        slot: str,
        window: walstream.WalWindow,
        sink: ByteSink,
        deadline: float,
    ) -> None:
        """The backup's own WAL, after its files, in the WAL-range stream format."""
        walstream.write_header(sink, window.header())
        frames = walstream.FrameWriter(sink)
        walstream.stream_wal_range(
            pgconn,
            slot=slot,
            timeline=window.timeline,
            start=window.start,
            stop=window.stop,
            frames=frames,
            deadline=deadline,
        )
        frames.close()

    @staticmethod
    def _copy_files(
        root_fd: int,
        writer: filestream.DirStreamWriter,
        threshold: int | None,
        known_databases: set[str],
    ) -> int:
        """Every file of the data directory held by ``root_fd`` (see :func:`datadir.walk`:
        by descriptor, never through a link); with ``threshold``, only the pages changed
        since then of relation files in ``known_databases`` (or ``global``). The control
        file goes last, as ``pg_basebackup`` sends it. Returns pages copied."""
        pages = 0
        owner = os.fstat(root_fd).st_uid
        for entry in datadir.walk(root_fd):
            if entry.is_dir:
                writer.directory(entry.path)
                continue
            if entry.path == "global/pg_control":
                continue
            opened = datadir.open_file(entry, owner)
            if opened is None:
                continue  # dropped while the backup runs; the WAL window replays that
            fd, size = opened
            try:
                if (
                    threshold is not None
                    and entry.is_relation
                    and (entry.database is None or entry.database in known_databases)
                ):
                    pages += writer.changed_pages(entry.path, fd, size, threshold)
                else:
                    writer.whole_file(entry.path, fd, size)
            finally:
                os.close(fd)
        fd, size = datadir.open_path(root_fd, "global/pg_control")
        try:
            writer.whole_file("global/pg_control", fd, size)
        finally:
            os.close(fd)
        return pages

    def lay_out(self, server: ManagedServer, chain: Sequence[Link]) -> walstream.SegmentWriter:
        """File-level links, newest first (see :mod:`filestream`); the newest link's
        label and WAL window make the directory consistent."""
        full = chain[0].meta
        data, owner = server.data, server.identity.owner
        writer = walstream.SegmentWriter(
            data / "pg_wal", full.timeline, full.wal_segment_size, owner
        )
        with filestream.ChainRestorer(data, owner, workers=LAYOUT_THREADS) as restorer:
            for position, link in enumerate(reversed(chain)):
                self._lay_out_link(server, restorer, writer, link, full, newest=position == 0)
            names = restorer.finish()
        if "PG_VERSION" not in names or "global/pg_control" not in names:
            raise RestoreError("the backup stream is not a PostgreSQL data directory")
        return writer

    def _lay_out_link(
        self,
        server: ManagedServer,
        restorer: filestream.ChainRestorer,
        writer: walstream.SegmentWriter,
        link: Link,
        full: PgMetadata,
        *,
        newest: bool,
    ) -> None:
        meta = link.meta
        if not isinstance(meta, FilesMetadata):
            raise RestoreError("the chain mixes backup methods")

        stream_format = {
            None: filestream.FORMAT_VERSION,
            methods.PAGE_DELTAS: filestream.DELTA_FORMAT,
            methods.PAGE_REALIGNED: filestream.REALIGN_FORMAT,
        }[meta.page_format]

        def expect(header: dict[str, Any]) -> None:
            if (header.get("start_lsn"), header.get("threshold_lsn"), header.get("format")) != (
                meta.start_lsn,
                meta.threshold_lsn,
                stream_format,
            ):
                raise RestoreError("a backup stream does not match its metadata")

        end = restorer.apply(link.stream, expect, meta.segment_offsets)
        header = walstream.read_header(end.rest)
        methods.check_wal_header(header, meta, full)
        if not newest:
            walstream.apply_wal_stream(end.rest, header, walstream.DISCARD)
            return
        walstream.apply_wal_stream(end.rest, header, writer)
        # Backups taken before the window started at a segment's beginning may lack the
        # first page of the redo point's segment, which recovery checks before any other.
        wal_header.restore_segment_head(
            writer,
            int(header["start"]),
            major=meta.server_major,
            timeline=full.timeline,
            system_identifier=full.system_identifier,
        )
        if "START WAL LOCATION" not in end.backup_label:
            raise RestoreError("the backup stream's label is malformed")
        server.write_file("backup_label", end.backup_label)
