"""File-level backup streams of a data directory, and restoring a chain of them.

Stream format (version 1)::

    b"SRPGDIR1\\n" | u32 header length | header (JSON)
    records:
      b"d" | u16 n | path                                         a directory
      b"f" | u16 n | path | u64 size | bytes | u32 CRC-32          a whole file
      b"p" | u16 n | path | u64 size | runs | u32 0xFFFFFFFF | u32 CRC-32
             run = u32 first block | u32 block count | pages       changed pages only
      b"l" | u32 n | backup_label | u32 n | tablespace_map         last record
    the backup's WAL window, as a WAL-range stream (see :mod:`walstream`)

Every file present when the backup ran has a record, so the newest link of a chain
names the files of the restored directory and their sizes. CRC-32 is the engine's own
check of each record (the pipeline authenticates every byte cryptographically); zlib-ng
computes it, the same value as zlib's at about four times the speed (27 against 6.5 GiB/s
here), which mattered: a restore spent a quarter of its layout thread checksumming.

A chain is restored newest link first: each block of each file is written once, by the
newest link that holds it, so a block changed in every link is not written again and
again; the older links' copies of it are read (to verify them) and skipped. Every block
of every restored file must come from some link, or the restore fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zlib_ng.zlib_ng import crc32

from strongroom.engines import beneath
from strongroom.engines.base import ByteSink, ByteSource
from strongroom.engines.postgresql import datadir
from strongroom.engines.postgresql.streamio import SourceBuffer, StreamFormatError, safe_relative
from strongroom.engines.postgresql.writeback import BackgroundWriteback

MAGIC = b"SRPGDIR1\n"
FORMAT_VERSION = 1
END_OF_RUNS = 0xFFFFFFFF
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_RUN = struct.Struct("!II")
_BLOCK_SIZES = (1024, 2048, 4096, 8192, 16384, 32768)  # what PostgreSQL can be built with
# Smaller files are left to the server's fsync at start: one fdatasync each would cost a
# metadata write (a journal commit) for a few kilobytes, and a directory holds thousands.
WRITEBACK_MIN_SIZE = 1024 * 1024
# A restore lays out the parts of a link between these on several threads at once.
SEGMENT_BYTES = 128 * 1024 * 1024


class FileStreamError(StreamFormatError):
    """A file-level backup stream is malformed, damaged or does not fit its chain."""


# -- writing ----------------------------------------------------------------------------


class DirStreamWriter:
    """Writes records of a data directory into ``sink``."""

    def __init__(
        self, sink: ByteSink, header: dict[str, Any], *, segment_bytes: int | None = None
    ) -> None:
        self._sink = sink
        self._block_size = int(header["block_size"])
        self._buffer = bytearray(datadir.READ_SIZE)
        self._written = 0
        self._segment_bytes = segment_bytes or SEGMENT_BYTES
        self._next_segment = self._segment_bytes
        # Where records start, about every ``segment_bytes`` (see :func:`check_segments`).
        self.segment_offsets: list[int] = []
        body = json.dumps(dict(header, format=FORMAT_VERSION), sort_keys=True).encode()
        self._put(MAGIC + _U32.pack(len(body)) + body)

    def _put(self, data: bytes | memoryview) -> None:
        self._sink.write(data)
        self._written += len(data)

    def _name(self, kind: bytes, path: str) -> None:
        if self._written >= self._next_segment:
            self.segment_offsets.append(self._written)
            self._next_segment = self._written + self._segment_bytes
        raw = path.encode()
        self._put(kind + _U16.pack(len(raw)) + raw)

    def directory(self, path: str) -> None:
        self._name(b"d", path)

    def whole_file(self, path: str, fd: int, size: int) -> None:
        self._name(b"f", path)
        self._put(_U64.pack(size))
        crc = 0
        remaining = size
        while remaining:
            view = datadir.read_exactly(fd, self._buffer, min(remaining, len(self._buffer)))
            crc = crc32(view, crc)
            self._put(view)
            remaining -= len(view)
        self._put(_U32.pack(crc))

    def changed_pages(self, path: str, fd: int, size: int, threshold: int) -> int:
        """Write the pages changed since ``threshold``; returns how many."""
        size -= size % self._block_size
        self._name(b"p", path)
        self._put(_U64.pack(size))
        crc = 0
        pages = 0
        for first, view in datadir.changed_runs(fd, size, threshold, self._block_size):
            count = len(view) // self._block_size
            run = _RUN.pack(first, count)
            crc = crc32(view, crc32(run, crc))
            self._put(run)
            self._put(view)
            pages += count
        self._put(_U32.pack(END_OF_RUNS) + _U32.pack(crc))
        return pages

    def label(self, backup_label: str, tablespace_map: str) -> None:
        label, spcmap = backup_label.encode(), tablespace_map.encode()
        self._put(b"l" + _U32.pack(len(label)) + label + _U32.pack(len(spcmap)) + spcmap)


# -- restoring --------------------------------------------------------------------------


@dataclass
class LinkEnd:
    """A link's header, label and tablespace map, and ``rest``: where its WAL window is
    read from (the source, after what was already buffered)."""

    header: dict[str, Any]
    backup_label: str
    tablespace_map: str
    rest: ByteSource


def check_segments(offsets: Sequence[int], first_record: int) -> None:
    """A link's ``segment_offsets``: increasing, none inside its header."""
    previous = first_record - 1
    for offset in offsets:
        if not isinstance(offset, int) or isinstance(offset, bool) or offset <= previous:
            raise FileStreamError("the backup's segment offsets are malformed")
        previous = offset


class _Stopped(Exception):
    """Another segment of the link failed."""


def _close(source: ByteSource) -> None:
    close = getattr(source, "close", None)
    if close is not None:
        close()


class _FileState:
    __slots__ = ("complete", "created", "size", "written")

    def __init__(self, size: int, blocks: int | None) -> None:
        self.size = size
        self.complete = False
        self.created = False
        # Per block, whether a newer link wrote it; None for files copied whole.
        self.written: bytearray | None = bytearray(blocks) if blocks is not None else None


class ChainRestorer:
    """Lays a chain's files into ``target``, newest link first (see the module text);
    each file is written back to disk in the background once a link is done with it (see
    :mod:`writeback`), and :meth:`finish` waits for that. Use as a context manager.

    Memory: one flag byte per 8 KiB block of the files that incrementals changed.
    """

    def __init__(self, target: Path, owner: tuple[int, int] | None, *, workers: int = 1) -> None:
        self._target = target
        # Everything is made beneath this descriptor and never through a link: the
        # directory belongs to the server's OS user (see :mod:`strongroom.engines.beneath`).
        self._root_fd = beneath.open_dir(target)
        self._owner = owner
        self._workers = workers
        self._files: dict[str, _FileState] = {}
        self._block_size = 0
        self._links = 0
        self._writeback = BackgroundWriteback()
        self._layout = ThreadPoolExecutor(workers, thread_name_prefix="strongroom-layout")
        self._lock = threading.Lock()  # the files of the chain, and of the link, by path
        self._stop = threading.Event()  # a segment failed: the others stop

    def __enter__(self) -> ChainRestorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._layout.shutdown(wait=True, cancel_futures=True)
        self._writeback.close()
        os.close(self._root_fd)

    # The public steps: one call per link, newest first, then finish().
    def apply(
        self,
        source: ByteSource,
        expect: Callable[[dict[str, Any]], None],
        segments: Sequence[int] = (),
    ) -> LinkEnd:
        """Read one link's records up to its WAL window; ``expect`` checks the header.

        ``segments`` are the link's ``segment_offsets``: where records start. With more
        than one worker and a source that can also be read from an offset (the pipeline's
        ``reader_at``), the parts between them are laid out on that many threads at once:
        they hold different files, and one thread writing into the page cache was the
        restore's limit."""
        buffer = SourceBuffer(source, FileStreamError)
        header = self._header(buffer)
        expect(header)
        newest = self._links == 0
        block_size = header.get("block_size")
        if block_size not in _BLOCK_SIZES:
            raise FileStreamError("the backup stream's header is malformed (block size)")
        if newest:
            self._block_size = block_size
        elif block_size != self._block_size:
            raise FileStreamError("the chain mixes block sizes")
        self._links += 1
        seen: set[str] = set()
        reader_at = getattr(source, "reader_at", None)
        if self._workers > 1 and segments and reader_at is not None:
            check_segments(segments, buffer.position)
            buffer = self._apply_segments(buffer, source, reader_at, list(segments), newest, seen)
        else:
            self._records(buffer, newest, None, seen)
        label = self._text(buffer)
        return LinkEnd(header, label, self._text(buffer), buffer)

    def _apply_segments(
        self,
        first: SourceBuffer,
        source: ByteSource,
        reader_at: Callable[[int], ByteSource],
        starts: list[int],
        newest: bool,
        seen: set[str],
    ) -> SourceBuffer:
        """Lay out the records before ``starts[0]`` from ``first`` (over ``source``) and
        each segment from a reader of its own; returns the last segment's buffer, at the
        link's label."""

        def segment(start: int, end: int | None) -> tuple[SourceBuffer, ByteSource]:
            reader = reader_at(start)
            try:
                buffer = SourceBuffer(reader, FileStreamError, start=start)
                self._records(buffer, newest, end, seen)
            except BaseException:
                _close(reader)
                raise
            if end is not None:
                _close(reader)
            return buffer, reader

        ends: list[int | None] = [*starts[1:], None]
        pool = self._layout
        head = pool.submit(self._records, first, newest, starts[0], seen)
        parts = [pool.submit(segment, s, e) for s, e in zip(starts, ends, strict=True)]
        futures: list[Future[Any]] = [head, *parts]
        wait(futures, return_when=FIRST_EXCEPTION)
        if any(f.done() and f.exception() is not None for f in futures):
            self._stop.set()
            for future in futures:
                future.cancel()
        wait(futures)
        self._stop.clear()
        _close(source)  # it stopped at the first segment; the link ends in the last one
        errors = [e for f in futures if not f.cancelled() and (e := f.exception()) is not None]
        if errors:
            if not parts[-1].cancelled() and parts[-1].exception() is None:
                _close(parts[-1].result()[1])
            raise next((e for e in errors if not isinstance(e, _Stopped)), errors[0])
        buffer: SourceBuffer = parts[-1].result()[0]
        return buffer

    def _records(self, buffer: SourceBuffer, newest: bool, end: int | None, seen: set[str]) -> None:
        """Lay out records from ``buffer`` up to offset ``end`` (which must fall between
        records), or, without ``end``, up to the link's label record (its kind read)."""
        while end is None or buffer.position < end:
            if self._stop.is_set():
                raise _Stopped
            kind = buffer.exact(1)
            if kind == b"l":
                if end is not None:
                    break
                return
            (length,) = _U16.unpack(buffer.exact(2))
            path = str(safe_relative(self._decode(buffer.exact(length)), FileStreamError))
            if kind == b"d":
                if newest:
                    self._mkdir(path)
                continue
            with self._lock:
                if path in seen:
                    raise FileStreamError(f"the backup stream names {path} twice")
                seen.add(path)
            if kind == b"f":
                (size,) = _U64.unpack(buffer.exact(8))
                self._whole(buffer, path, size, newest)
            elif kind == b"p":
                (size,) = _U64.unpack(buffer.exact(8))
                self._pages(buffer, path, size, newest)
            else:
                raise FileStreamError("the backup stream is corrupted (unknown record)")
        if buffer.position != end:
            raise FileStreamError("the backup stream is corrupted (its segments do not fit)")

    def finish(self) -> list[str]:
        """Cut every file to its size, check that each block came from some link, and
        return the restored files' paths."""
        bs = self._block_size
        for path, state in self._files.items():
            if not state.complete:
                blocks = state.size // bs if bs else 0
                if state.written is None or state.written.find(0, 0, blocks) >= 0:
                    raise FileStreamError(
                        f"the backup chain does not hold every page of {path}: "
                        "a link is missing or belongs to another chain"
                    )
            fd = beneath.open_beneath(self._root_fd, path, os.O_WRONLY)
            try:
                os.ftruncate(fd, state.size)
            finally:
                os.close(fd)
        self._writeback.wait()
        return sorted(self._files)

    # -- records --------------------------------------------------------------------
    @staticmethod
    def _header(buffer: SourceBuffer) -> dict[str, Any]:
        if buffer.exact(len(MAGIC)) != MAGIC:
            raise FileStreamError("not a PostgreSQL file-level backup stream")
        (length,) = _U32.unpack(buffer.exact(4))
        if length > 1 << 20:
            raise FileStreamError("the backup stream's header is malformed")
        try:
            header = json.loads(buffer.exact(length))
        except ValueError as exc:
            raise FileStreamError("the backup stream's header is malformed") from exc
        if not isinstance(header, dict) or header.get("format") != FORMAT_VERSION:
            raise FileStreamError("unsupported file-level backup stream format")
        return header

    @staticmethod
    def _text(buffer: SourceBuffer) -> str:
        (length,) = _U32.unpack(buffer.exact(4))
        if length > 1 << 20:
            raise FileStreamError("the backup stream's label is malformed")
        return ChainRestorer._decode(buffer.exact(length))

    @staticmethod
    def _decode(raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise FileStreamError("the backup stream is corrupted (a name is not UTF-8)") from exc

    def _mkdir(self, path: str) -> None:
        """``path`` and any missing parent, each made beneath its parent's descriptor."""
        parent = self._root_fd
        opened: list[int] = []
        try:
            for part in path.split("/"):
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o700, dir_fd=parent)
                parent = beneath.open_beneath(parent, part, os.O_RDONLY | os.O_DIRECTORY)
                opened.append(parent)
                if self._owner is not None:
                    os.fchown(parent, *self._owner)
        finally:
            for fd in opened:
                os.close(fd)

    @contextlib.contextmanager
    def _output(self, path: str, state: _FileState | None) -> Iterator[int]:
        """The file a record writes to (-1 when it is skipped), handed to the background
        writeback when the record is done."""
        fd = self._open(path, state) if state is not None else -1
        try:
            yield fd
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        if fd < 0:
            return
        if state is not None and state.size >= WRITEBACK_MIN_SIZE:
            self._writeback.hand_over(fd)
        else:
            os.close(fd)

    def _open(self, path: str, state: _FileState) -> int:
        """The file, made new (``O_EXCL``) by the newest link that names it; opened
        again by older links, beneath the target and never through a link."""
        if state.created:
            return beneath.open_beneath(self._root_fd, path, os.O_WRONLY)
        new = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        try:
            fd = beneath.open_beneath(self._root_fd, path, new, 0o600)
        except FileNotFoundError:  # a directory the stream did not name first
            self._mkdir(path.rpartition("/")[0])
            fd = beneath.open_beneath(self._root_fd, path, new, 0o600)
        state.created = True
        if self._owner is not None:
            os.fchown(fd, *self._owner)
        return fd

    def _register(self, path: str, size: int, paged: bool) -> _FileState:
        state = _FileState(size, -(-size // self._block_size) if paged else None)
        with self._lock:
            self._files[path] = state
        return state

    def _whole(self, buffer: SourceBuffer, path: str, size: int, newest: bool) -> None:
        state = self._state_for(path, size, newest, paged=False)
        with self._output(path, state) as fd:
            crc = self._copy_span(buffer, fd, state, 0, size, 0)
        stored = self._stored_crc(buffer)
        if state is not None:
            self._check_crc(stored, crc, path)
            state.complete = True

    def _pages(self, buffer: SourceBuffer, path: str, size: int, newest: bool) -> None:
        bs = self._block_size
        if size % bs:
            raise FileStreamError(f"the backup stream is corrupted (size of {path})")
        state = self._state_for(path, size, newest, paged=True)
        with self._output(path, state) as fd:
            crc = 0
            while True:
                raw = buffer.exact(4)
                (first,) = _U32.unpack(raw)
                if first == END_OF_RUNS:
                    break
                raw += buffer.exact(4)
                (count,) = _U32.unpack(raw[4:])
                if count == 0 or (first + count) * bs > size:
                    raise FileStreamError(f"the backup stream is corrupted (a run of {path})")
                if state is not None:
                    crc = crc32(raw, crc)
                crc = self._copy_span(buffer, fd, state, first * bs, (first + count) * bs, crc)
                if state is not None and state.written is not None:
                    # Marked after the run: a block split across reads is written whole.
                    self._mark(state, first, min(first + count, len(state.written)))
        stored = self._stored_crc(buffer)
        if state is not None:
            self._check_crc(stored, crc, path)

    def _copy_span(
        self,
        buffer: SourceBuffer,
        fd: int,
        state: _FileState | None,
        offset: int,
        end: int,
        crc: int,
    ) -> int:
        """Bytes ``[offset, end)`` of a file from the stream: written and checksummed
        when the file is needed (``state``), skipped otherwise. Returns the CRC."""
        if state is None:
            buffer.skip(end - offset)
            return crc
        while offset < end:
            view = buffer.take(end - offset)
            if not view:
                raise FileStreamError("the backup stream ends inside a file")
            crc = crc32(view, crc)
            self._write(fd, offset, view, state)
            offset += len(view)
        return crc

    def _state_for(self, path: str, size: int, newest: bool, paged: bool) -> _FileState | None:
        """The file a record goes to, or None when nothing of it is needed: not in the
        restored directory, or every block already written by newer links. A record not
        needed is skipped: with the pipeline's reader, chunks holding nothing else are not
        even fetched or decrypted."""
        if newest:
            return self._register(path, size, paged)
        state = self._files.get(path)
        if state is None or state.complete:
            return None
        if state.written is not None and state.written.find(0) < 0:
            state.complete = True
            return None
        return state

    @staticmethod
    def _mark(state: _FileState, first: int, end: int) -> None:
        assert state.written is not None
        if end > first:
            state.written[first:end] = b"\x01" * (end - first)

    def _write(self, fd: int, offset: int, view: memoryview, state: _FileState) -> None:
        """Write the parts of ``view`` (at ``offset``) inside the file's final size and
        not already written by a newer link."""
        end = min(offset + len(view), state.size)
        written = state.written
        if written is None:
            self._pwrite(fd, view[: max(0, end - offset)], offset)
            return
        bs = self._block_size
        pos = offset
        while pos < end:
            block = pos // bs
            last = (end - 1) // bs + 1
            free = written.find(0, block, last)
            if free < 0:
                return
            taken = written.find(1, free, last)
            run_end = end if taken < 0 else taken * bs
            run_start = max(pos, free * bs)
            self._pwrite(fd, view[run_start - offset : run_end - offset], run_start)
            pos = run_end

    @staticmethod
    def _pwrite(fd: int, data: memoryview, offset: int) -> None:
        while data:
            n = os.pwrite(fd, data, offset)
            data, offset = data[n:], offset + n

    @staticmethod
    def _stored_crc(buffer: SourceBuffer) -> int:
        (stored,) = _U32.unpack(buffer.exact(4))
        return int(stored)

    @staticmethod
    def _check_crc(stored: int, crc: int, path: str) -> None:
        if stored != crc:
            raise FileStreamError(f"the backup stream is corrupted (checksum of {path})")
