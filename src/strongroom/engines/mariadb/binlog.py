"""MariaDB binary log events as the archive stores them, and archive positions.

A position is one integer: ``file index << 32 | offset``, where the file index is the
number in the binary log's name (``mariadb-bin.000042`` → 42) and the offset is a byte
offset in that file (a binary log file stays below 4 GiB: ``max_binlog_size`` is at most
1 GiB). Positions of one server therefore sort in log order, and a batch that ends where
the next begins has ``stop == start`` of the next, as the generic archiver expects. The
file index is at most 2**31 - 1, so a position fits a signed 64-bit column.

An archived batch's stream is :data:`MAGIC` followed by the events exactly as the server's
binlog dump sent them (v4 events, each with its 19-byte header and its own length; CRC32
checksums kept as the server wrote them). Every file section the dump sends starts with a
*fake* ``ROTATE`` (``log_pos`` 0) naming the file and offset, then that file's
``FORMAT_DESCRIPTION`` event; a real ``ROTATE`` ends a file. :class:`EventReader` walks such a
stream and gives each event with the file it belongs to and the position after it.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from strongroom.engines.base import ByteSource

MAGIC = b"SRBINLG1"
FORMAT_VERSION = 1
HEADER = struct.Struct("<IBIIIH")  # timestamp, type, server_id, event_size, log_pos, flags
HEADER_SIZE = HEADER.size
BINLOG_MAGIC = b"\xfebin"
FIRST_OFFSET = 4  # the first event of a file follows BINLOG_MAGIC
# The largest event the archive takes (the server allows up to 1 GiB): one event is held
# whole in memory while archived or replayed, so a larger one fails that instance's
# archiving, naming its size. Not a setting: a batch's readers rely on it.
MAX_EVENT = 256 << 20
MAX_FILE_INDEX = (1 << 31) - 1

QUERY_EVENT = 2
ROTATE_EVENT = 4
FORMAT_DESCRIPTION_EVENT = 15
XID_EVENT = 16
HEARTBEAT_EVENT = 27
BINLOG_CHECKPOINT_EVENT = 161
GTID_EVENT = 162
GTID_LIST_EVENT = 163
XA_PREPARE_EVENT = 38
# A LOAD DATA logged as a statement: the file's data in the log (CREATE_FILE,
# APPEND_BLOCK, BEGIN_LOAD_QUERY), then the statement (LOAD, EXEC_LOAD, NEW_LOAD,
# EXECUTE_LOAD_QUERY) or its cancellation (DELETE_FILE).
LOAD_EVENTS = frozenset({6, 8, 9, 10, 11, 12, 17, 18})
GTID_FLAG_STANDALONE = 1

_LOG_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,200}\.([0-9]{6,10})")


class BinlogError(ValueError):
    """A stream or position that is not what the archive holds."""


def encode(index: int, offset: int) -> int:
    if not (0 <= offset < 1 << 32) or not 0 <= index <= MAX_FILE_INDEX:
        raise BinlogError(f"binary log position {index}:{offset} is out of range")
    return index << 32 | offset


def decode(position: int) -> tuple[int, int]:
    return position >> 32, position & 0xFFFFFFFF


def file_index(name: str) -> int:
    """The number in a binary log's file name; names the server sends are checked, as a
    name that is not a plain ``<base>.<digits>`` is nothing the archive asked for."""
    match = _LOG_NAME.fullmatch(name)
    if match is None or int(match[1]) > MAX_FILE_INDEX:
        raise BinlogError(f"unexpected binary log name {name[:80]!r}")
    return int(match[1])


def file_name(base: str, index: int) -> str:
    return f"{base}.{index:06d}"


def format_position(position: int) -> str:
    index, offset = decode(position)
    return f"{index}:{offset}"


@dataclass(frozen=True)
class Event:
    raw: bytes
    timestamp: int
    type: int
    server_id: int
    log_pos: int
    file_index: int  # the file this event belongs to
    end: int  # the archive position just after this event (0 for fake events)

    @property
    def fake(self) -> bool:
        """Made up by the dump (fake rotate, heartbeat, an artificial format
        description): not at any position of the file."""
        return self.log_pos == 0 or self.type == HEARTBEAT_EVENT

    def gtid(self) -> str:
        """``domain-server-sequence`` of a GTID event."""
        seq, domain = struct.unpack_from("<QI", self.raw, HEADER_SIZE)
        return f"{domain}-{self.server_id}-{seq}"

    def standalone(self) -> bool:
        return bool(self.raw[HEADER_SIZE + 12] & GTID_FLAG_STANDALONE)


def body_without_checksum(raw: bytes) -> bytes:
    """An event's body, without its CRC32 when it carries one (the rotate events of a
    dump do when the file does; the checksum itself says so)."""
    body = raw[HEADER_SIZE:]
    if len(body) >= 4 and zlib.crc32(raw[:-4]) == int.from_bytes(raw[-4:], "little"):
        return body[:-4]
    return body


def rotate_target(raw: bytes) -> tuple[str, int]:
    """The file name and offset a ROTATE event points at."""
    body = body_without_checksum(raw)
    if len(body) < 9:
        raise BinlogError("a rotate event is too short")
    (offset,) = struct.unpack_from("<Q", body)
    name = body[8:].decode("ascii", "replace")
    return name, offset


def event_size(head: bytes) -> int:
    """The size an event's header (at the start of ``head``) gives, checked against
    :data:`MAX_EVENT`."""
    if len(head) < HEADER_SIZE:
        raise BinlogError("a binary log event is shorter than its header")
    size: int = HEADER.unpack_from(head)[3]
    if size > MAX_EVENT:
        raise BinlogError(
            f"a binary log event of {size} bytes is larger than the archive takes "
            f"({MAX_EVENT >> 20} MiB)"
        )
    if size < HEADER_SIZE:
        raise BinlogError("a binary log event has an impossible length")
    return size


def split_event(raw: bytes) -> tuple[int, int, int, int, int]:
    """``(timestamp, type, server_id, size, log_pos)`` of one event's header."""
    if len(raw) < HEADER_SIZE:
        raise BinlogError("a binary log event is shorter than its header")
    timestamp, type_, server_id, size, log_pos, _flags = HEADER.unpack_from(raw)
    if size != len(raw):
        raise BinlogError("a binary log event's length does not match its header")
    return timestamp, type_, server_id, size, log_pos


class Tracker:
    """Follows the file a sequence of events belongs to (through rotate events) and
    gives each its :class:`Event`."""

    def __init__(self, index: int) -> None:
        self.index = index

    def event(self, raw: bytes) -> Event:
        timestamp, type_, server_id, _size, log_pos = split_event(raw)
        if type_ == ROTATE_EVENT:
            name, offset = rotate_target(raw)
            if log_pos == 0:  # fake: the dump names the file that follows
                self.index = file_index(name)
                return Event(raw, timestamp, type_, server_id, 0, self.index, 0)
            # Real: the last event of this file; what follows is the next file's start.
            current = self.index
            self.index = file_index(name)
            return Event(
                raw, timestamp, type_, server_id, log_pos, current, encode(self.index, offset)
            )
        end = encode(self.index, log_pos) if log_pos else 0
        if type_ == HEARTBEAT_EVENT:
            end = 0
        return Event(raw, timestamp, type_, server_id, log_pos, self.index, end)


class EventReader:
    """The events of an archived batch's stream, read from ``source`` one at a time."""

    def __init__(self, source: ByteSource, *, start: int) -> None:
        self._source = source
        head = self._exactly(len(MAGIC))
        if head != MAGIC:
            raise BinlogError("the stream is not an archived MariaDB binary log batch")
        self._tracker = Tracker(decode(start)[0])

    def _exactly(self, size: int, *, after: bytes = b"") -> bytes:
        """``after`` and then up to ``size`` bytes of the source, joined once."""
        parts: list[bytes] = [after] if after else []
        wanted = size
        while wanted:
            piece = self._source.read(wanted)
            if not piece:
                break
            parts.append(piece)
            wanted -= len(piece)
        return b"".join(parts)

    def __iter__(self) -> Iterator[Event]:
        while True:
            header = self._exactly(HEADER_SIZE)
            if not header:
                return
            if len(header) < HEADER_SIZE:
                raise BinlogError("the batch ends inside an event header")
            size = event_size(header)
            raw = self._exactly(size - HEADER_SIZE, after=header)
            if len(raw) != size:
                raise BinlogError("the batch ends inside an event")
            yield self._tracker.event(raw)
