"""Incremental backups as a WAL range: the stream format, the streaming-replication
client that produces it, and the writer that lays it out in a restored ``pg_wal``.

Stream format (version 1)::

    b"SRPGWAL1\\n" | u32 header length | header (JSON) | frames | b"E" | SHA-256

The header names the timeline, the segment size and the range ``[start, stop)``. The
frames carry exactly ``stop - start`` bytes of the server's WAL, in order: ``b"D"`` + u32
length + bytes, or ``b"Z"`` + u32 length for a run of zero pages (the unused rest of a
segment after a WAL switch, which would otherwise be up to a whole segment of zeros).
The trailing SHA-256 covers the WAL bytes themselves, zeros included. A reader refuses a
run of zeros (``b"Z"`` frames one after another) longer than a segment: a segment's first
page always has a header, so the WAL of a real server never has one.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import pq
from psycopg.pq.abc import PGconn

from strongroom.engines import deadline as cut_off
from strongroom.engines.base import ByteSink, ByteSource
from strongroom.engines.postgresql.deadline import answered_within
from strongroom.engines.postgresql.lsn import XLOG_BLCKSZ, format_lsn, segment_name

MAGIC = b"SRPGWAL1\n"
FORMAT_VERSION = 1
_PG_EPOCH_OFFSET_US = 946_684_800 * 1_000_000  # 2000-01-01 in Unix microseconds
READ_SIZE = 1024 * 1024
FRAME_MAX = 1024 * 1024
# A walsender's message holds at most 128 KiB of WAL (MAX_SEND_SIZE) and a 25-byte header:
# a larger one is refused as soon as libpq hands it over (libpq itself has read it whole).
MESSAGE_MAX = 1024 * 1024
# Ending the copy is one round trip; a server that has not ended it by then is left to the
# caller, which closes the connection (all the WAL asked for has been received).
FINISH_SECONDS = 5.0
_ZERO_PAGE = bytes(XLOG_BLCKSZ)


class WalStreamError(Exception):
    """Streaming or reading a WAL range failed; the message is safe to show."""


# -- producing --------------------------------------------------------------------------


def _now_pg_us() -> int:
    return int(time.time() * 1_000_000) - _PG_EPOCH_OFFSET_US


def _status_update(position: int, flush: int) -> bytes:
    # Standby status update: written, flushed, applied, clock, reply requested.
    return b"r" + struct.pack("!QQQqB", position, flush, 0, _now_pg_us(), 0)


class FrameWriter:
    """Encodes WAL bytes at known positions into frames, eliding all-zero pages."""

    def __init__(self, sink: ByteSink) -> None:
        self._sink = sink
        self._digest = hashlib.sha256()
        self._data = bytearray()
        self._zeros = 0

    def feed(self, position: int, data: bytes | memoryview) -> None:
        view = memoryview(data)
        self._digest.update(view)
        i = 0
        while i < len(view):
            page_end = ((position + i) // XLOG_BLCKSZ + 1) * XLOG_BLCKSZ
            n = min(len(view) - i, page_end - (position + i))
            piece = view[i : i + n]
            if piece == _ZERO_PAGE[:n]:
                self._flush_data()
                self._zeros += n
            else:
                self._flush_zeros()
                self._data += piece
                if len(self._data) >= FRAME_MAX:
                    self._flush_data()
            i += n

    def _flush_data(self) -> None:
        if self._data:
            self._sink.write(b"D" + struct.pack("!I", len(self._data)) + bytes(self._data))
            self._data.clear()

    def _flush_zeros(self) -> None:
        while self._zeros:
            n = min(self._zeros, 0xFFFFFFFF)
            self._sink.write(b"Z" + struct.pack("!I", n))
            self._zeros -= n

    def close(self) -> None:
        self._flush_data()
        self._flush_zeros()
        self._sink.write(b"E" + self._digest.digest())


@dataclass(frozen=True)
class WalWindow:
    """The range ``[start, stop)`` of one timeline's WAL a stream carries."""

    timeline: int
    segment_size: int
    start: int
    stop: int
    system_identifier: str

    def header(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "timeline": self.timeline,
            "segment_size": self.segment_size,
            "start": self.start,
            "stop": self.stop,
            "start_lsn": format_lsn(self.start),
            "stop_lsn": format_lsn(self.stop),
            "system_identifier": self.system_identifier,
        }


def write_header(sink: ByteSink, header: dict[str, Any]) -> None:
    body = json.dumps(header, sort_keys=True).encode()
    sink.write(MAGIC + struct.pack("!I", len(body)) + body)


def stream_wal_range(
    pgconn: PGconn,
    *,
    slot: str,
    timeline: int,
    start: int,
    stop: int,
    frames: FrameWriter,
    deadline: float,
    idle_timeout: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Stream WAL ``[start, stop)`` from ``pgconn`` (a replication connection) into
    ``frames``, all of it by ``deadline`` (a monotonic time) and with no ``idle_timeout``
    seconds without a new byte of WAL, else :class:`WalStreamError`; ending the copy then
    waits :data:`FINISH_SECONDS` at most.

    The slot is confirmed at ``start`` only, so the server keeps the WAL of this range
    until a later backup moves on: a failed upload can be retried from the same parent.
    """
    if stop <= start:
        return
    # Whatever the server does (a flush blocked on a server that reads nothing included),
    # no call on the connection outlasts the deadline and the copy's end.
    backstop = max(0.0, deadline - time.monotonic()) + FINISH_SECONDS + 1.0
    with cut_off.answered_within(pgconn.socket, backstop, error=WalStreamError):
        _stream(pgconn, slot, timeline, start, stop, frames, deadline, idle_timeout, progress)
        _finish_copy(pgconn)


def _stream(
    pgconn: PGconn,
    slot: str,
    timeline: int,
    start: int,
    stop: int,
    frames: FrameWriter,
    deadline: float,
    idle_timeout: float,
    progress: Callable[[int], None] | None,
) -> None:
    command = f"START_REPLICATION SLOT {slot} PHYSICAL {format_lsn(start)} TIMELINE {timeline}"
    with answered_within(pgconn.socket, idle_timeout):
        result = pgconn.exec_(command.encode())
    if result.status != pq.ExecStatus.COPY_BOTH:
        raise WalStreamError(_error_text(result.error_message or pgconn.error_message))
    _send(pgconn, _status_update(start, start))
    position = start
    last_data = time.monotonic()
    sock = pgconn.socket
    while position < stop:
        nbytes, data = pgconn.get_copy_data(1)
        # On every message: keepalives or WAL already received, sent without pause, must
        # not keep the stream going past its limits.
        now = time.monotonic()
        if now > deadline:
            raise WalStreamError(
                f"timed out while streaming WAL (at {format_lsn(position)}, "
                f"waiting for {format_lsn(stop)})"
            )
        if now - last_data > idle_timeout:
            raise WalStreamError(
                f"the server sent no WAL for {idle_timeout:.0f} s "
                f"(at {format_lsn(position)}, waiting for {format_lsn(stop)})"
            )
        if nbytes == 0:
            readable, _, _ = select.select([sock], [], [], min(1.0, deadline - now))
            if readable:
                pgconn.consume_input()
            continue
        if nbytes < 0:
            message = _error_text(pgconn.error_message)
            res = pgconn.get_result()
            if res is not None and res.error_message:
                message = _error_text(res.error_message)
            raise WalStreamError(message or "the server ended the WAL stream")
        if nbytes > MESSAGE_MAX:
            raise WalStreamError(
                f"the server sent a message of {nbytes} bytes in the WAL stream "
                f"(a walsender's are at most {MESSAGE_MAX})"
            )
        msg = memoryview(data)  # no copy: libpq's buffer is the message already
        kind = msg[0]
        if kind == 0x77:  # "w": WAL data
            if len(msg) < 25:
                raise WalStreamError("the server sent a malformed WAL message")
            data_start = struct.unpack_from("!Q", msg, 1)[0]
            payload = msg[25:]
            if data_start > position:
                raise WalStreamError(
                    f"gap in the WAL stream at {format_lsn(position)} "
                    f"(server sent {format_lsn(data_start)})"
                )
            skip = position - data_start
            if skip >= len(payload):
                continue
            chunk = payload[skip : skip + (stop - position)]
            frames.feed(position, chunk)
            position += len(chunk)
            last_data = time.monotonic()
            if progress is not None:
                progress(position)
        elif kind == 0x6B:  # "k": keepalive
            reply_requested = msg[17] if len(msg) > 17 else 0
            if reply_requested:
                _send(pgconn, _status_update(position, start))
        # other message kinds are not part of physical replication; ignore them


def _send(pgconn: PGconn, message: bytes) -> None:
    if pgconn.put_copy_data(message) != 1 or pgconn.flush() != 0:
        raise WalStreamError(_error_text(pgconn.error_message) or "lost the server connection")


def _finish_copy(pgconn: PGconn) -> None:
    """End the replication stream cleanly so the slot is released promptly, waiting at
    most FINISH_SECONDS: a server that does not end it is left to the caller, which closes
    the connection (so is one that fails here: the WAL is all received)."""
    until = time.monotonic() + FINISH_SECONDS
    sock = pgconn.socket
    try:
        pgconn.put_copy_end()
        pgconn.flush()
        while True:  # what the server still sends, up to the end of its copy
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            nbytes, _ = pgconn.get_copy_data(1)
            if nbytes < 0:
                break
            if nbytes == 0 and select.select([sock], [], [], min(1.0, remaining))[0]:
                pgconn.consume_input()
        while True:  # the command's results, never waited for by libpq itself
            pgconn.consume_input()
            if not pgconn.is_busy():
                if pgconn.get_result() is None:
                    return
                continue
            remaining = until - time.monotonic()
            if remaining <= 0:
                return
            select.select([sock], [], [], min(1.0, remaining))
    except psycopg.Error:
        return


def _error_text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    return " ".join(text.strip().split())


# -- consuming --------------------------------------------------------------------------


def _read_exact(source: ByteSource, size: int) -> bytes:
    parts: list[bytes] = []
    remaining = size
    while remaining:
        chunk = source.read(min(remaining, READ_SIZE))
        if not chunk:
            raise WalStreamError("the incremental stream ends early")
        parts.append(chunk)
        remaining -= len(chunk)
    return b"".join(parts)


def read_header(source: ByteSource) -> dict[str, Any]:
    if _read_exact(source, len(MAGIC)) != MAGIC:
        raise WalStreamError("not a PostgreSQL incremental (WAL range) stream")
    (length,) = struct.unpack("!I", _read_exact(source, 4))
    if length > 1 << 20:
        raise WalStreamError("the incremental stream's header is malformed")
    try:
        header = json.loads(_read_exact(source, length))
    except ValueError as exc:
        raise WalStreamError("the incremental stream's header is malformed") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
        raise WalStreamError("unsupported incremental stream format")
    return header


class SegmentWriter:
    """Writes WAL bytes at their positions into segment files of one ``pg_wal``."""

    def __init__(
        self, wal_dir: Path, timeline: int, segment_size: int, owner: tuple[int, int] | None
    ) -> None:
        self.wal_dir = wal_dir
        self.timeline = timeline
        self.segment_size = segment_size
        self.owner = owner

    def path_for(self, lsn: int) -> Path:
        return self.wal_dir / segment_name(self.timeline, lsn, self.segment_size)

    def _open(self, lsn: int) -> int:
        path = self.path_for(lsn)
        # No link followed: the restore's own home, but written as root.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        if os.fstat(fd).st_size < self.segment_size:
            os.ftruncate(fd, self.segment_size)
        if self.owner is not None:
            os.fchown(fd, *self.owner)
        return fd

    def write(self, lsn: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            offset = lsn % self.segment_size
            count = min(len(view), self.segment_size - offset)
            fd = self._open(lsn)
            try:
                os.pwrite(fd, view[:count], offset)
            finally:
                os.close(fd)
            view = view[count:]
            lsn += count

    def end_at(self, lsn: int) -> None:
        """Make ``lsn`` the end of the WAL: zero the rest of its segment and remove every
        later segment, so recovery stops exactly there."""
        fd = self._open(lsn)
        try:
            # Cut and re-extend rather than write zeros: the same bytes read back, and the
            # fsync below no longer waits for up to a segment of zeros to reach the disk
            # behind the restore's writeback (12 % of a restore's main thread at scale 10).
            # The space stays allocated, as PostgreSQL's own zero-filled segments are.
            offset = lsn % self.segment_size
            os.ftruncate(fd, offset)
            try:
                os.posix_fallocate(fd, offset, self.segment_size - offset)
            except OSError:  # a file system without it: zeros as a hole
                os.ftruncate(fd, self.segment_size)
            os.fsync(fd)
        finally:
            os.close(fd)


class _Discard:
    """A WAL target that keeps nothing: an older chain link's WAL window is read and
    verified, but only the newest link's is replayed."""

    def write(self, lsn: int, data: bytes) -> None:
        pass


DISCARD = _Discard()


def apply_wal_stream(
    source: ByteSource, header: dict[str, Any], writer: SegmentWriter | _Discard
) -> None:
    """Copy a stream's WAL (the frames after its header) into ``writer``; check that it
    covers exactly the header's range and that its digest matches."""
    start, stop = int(header["start"]), int(header["stop"])
    segment_size = int(header["segment_size"])
    digest = hashlib.sha256()
    position = start
    zero_run = 0  # zeros since the last data frame
    while True:
        kind = _read_exact(source, 1)
        if kind == b"E":
            break
        if kind not in (b"D", b"Z"):
            raise WalStreamError("the incremental stream is corrupted (bad frame)")
        (length,) = struct.unpack("!I", _read_exact(source, 4))
        if length == 0 or position + length > stop:
            raise WalStreamError("the incremental stream is corrupted (frame out of range)")
        if kind == b"D":
            zero_run = 0
            if length > FRAME_MAX + XLOG_BLCKSZ:
                raise WalStreamError("the incremental stream is corrupted (frame too large)")
            data = _read_exact(source, length)
            writer.write(position, data)
            digest.update(data)
            position += length
        else:
            # Stored as five bytes, written out in full: refused before any is written.
            zero_run += length
            if zero_run > segment_size:
                raise WalStreamError(
                    f"the incremental stream is corrupted (a run of {zero_run} zero bytes "
                    f"at {format_lsn(position)}, longer than a WAL segment)"
                )
            end = position + length
            while position < end:
                n = min(end - position, READ_SIZE)
                zeros = bytes(n)
                writer.write(position, zeros)
                digest.update(zeros)
                position += n
    if position != stop:
        raise WalStreamError("the incremental stream ends before its stop position")
    if _read_exact(source, 32) != digest.digest():
        raise WalStreamError("the incremental stream is corrupted (WAL digest mismatch)")
    if source.read(1):
        raise WalStreamError("unexpected data after the end of the incremental stream")
