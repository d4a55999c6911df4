"""File-level backup streams of a data directory, and restoring a chain of them.

Stream format (versions 1, 2 and 3)::

    b"SRPGDIR1\\n" | u32 header length | header (JSON)
    records:
      b"d" | u16 n | path                                         a directory
      b"f" | u16 n | path | u64 size | bytes | u32 CRC-32          a whole file
      b"p" | u16 n | path | u64 size | runs | u32 0xFFFFFFFF | u32 CRC-32
             run = u32 first block | u32 block count | pages       changed pages only
      b"l" | u32 n | backup_label | u32 n | tablespace_map         last record
    the backup's WAL window, as a WAL-range stream (see :mod:`walstream`)

Version 2 (an incremental with sub-page deltas, see :mod:`pagedelta`) differs in one
thing: a run whose block count has ``pagedelta.DELTA_RUN`` set holds each block XORed
with the parent chain's image of it. Version 3 adds runs with
``pagedelta.REALIGNED_RUN`` set: each block XORed with that image realigned to the block's
line pointers (``pagedelta.realign``).

Every file present when the backup ran has a record, so the newest link of a chain
names the files of the restored directory and their sizes. CRC-32 is the engine's own
check of each record (the pipeline authenticates every byte cryptographically); zlib-ng
computes it, the same value as zlib's at about four times the speed (27 against 6.5 GiB/s
here), which mattered: a restore spent a quarter of its layout thread checksumming.

A chain is restored newest link first: each block of each file is written once, by the
newest link that holds it, so a block changed in every link is not written again and
again; the older links' copies of it are read (to verify them) and skipped. A block a
newer link holds as a delta is final only once an older link's whole copy is XORed in
(or, for a realigned delta, completes it).
Every block of every restored file must come from some link, or the restore fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zlib_ng.zlib_ng import crc32

from strongroom.engines import beneath
from strongroom.engines.base import ByteSink, ByteSource
from strongroom.engines.postgresql import datadir, models, pagedelta
from strongroom.engines.postgresql.streamio import (
    SourceBuffer,
    StreamFormatError,
    close_source,
    safe_relative,
)
from strongroom.engines.postgresql.writeback import BackgroundWriteback

if TYPE_CHECKING:
    from strongroom.engines.postgresql.parentpages import ParentPages

MAGIC = b"SRPGDIR1\n"
FORMAT_VERSION = 1
DELTA_FORMAT = 2  # runs may hold sub-page deltas (see :mod:`pagedelta`)
REALIGN_FORMAT = 3  # and realigned deltas
READ_FORMATS = (FORMAT_VERSION, DELTA_FORMAT, REALIGN_FORMAT)
END_OF_RUNS = 0xFFFFFFFF
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_RUN = struct.Struct("!II")
_RUNS_OF_SAME = re.compile(rb"\x00+|\x01+|\x02+")
_ONES = re.compile(rb"\x01+")
_PENDING = re.compile(rb"\x00+|\x02+|\x03+")  # blocks not yet final (_FileState.written)
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
        self,
        sink: ByteSink,
        header: dict[str, Any],
        *,
        segment_bytes: int | None = None,
        parent: ParentPages | None = None,
    ) -> None:
        self._sink = sink
        self._block_size = int(header["block_size"])
        self._buffer = bytearray(datadir.READ_SIZE)
        # With the parent's pages, changed blocks may be stored as deltas (format 3).
        self._parent = parent
        self._delta = bytearray(datadir.READ_SIZE) if parent is not None else None
        self.delta_pages = 0
        self.realigned_pages = 0  # of which realigned
        self._written = 0
        self._segment_bytes = segment_bytes or SEGMENT_BYTES
        self._next_segment = self._segment_bytes
        # Where records start, about every ``segment_bytes`` (see :func:`check_segments`).
        self.segment_offsets: list[int] = []
        version = FORMAT_VERSION if parent is None else REALIGN_FORMAT
        body = json.dumps(dict(header, format=version), sort_keys=True).encode()
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
        bs = self._block_size
        known = self._parent.open(path) if self._parent is not None else 0
        trial = pagedelta.DeltaTrial()
        for first, view in datadir.changed_runs(fd, size, threshold, bs):
            count = len(view) // bs
            pages += count
            based = max(0, min(count, known - first))  # blocks the parent has
            if based and trial.wanted(first):
                crc, paid = self._delta_runs(first, view[: based * bs], crc)
                trial.record(first + based, based, paid)
            elif based:
                crc = self._run(first, view[: based * bs], 0, crc)
            if based < count:
                crc = self._run(first + based, view[based * bs :], 0, crc)
        self._put(_U32.pack(END_OF_RUNS) + _U32.pack(crc))
        return pages

    def _run(self, first: int, data: memoryview, flags: int, crc: int) -> int:
        run = _RUN.pack(first, len(data) // self._block_size | flags)
        self._put(run)
        self._put(data)
        return crc32(data, crc32(run, crc))

    def _delta_runs(self, first: int, pages: memoryview, crc: int) -> tuple[int, int]:
        """``pages`` (from block ``first``) as runs of deltas against the parent's image
        where that pays, of whole blocks elsewhere; the CRC and how many were deltas."""
        assert self._parent is not None and self._delta is not None
        bs = self._block_size
        count = len(pages) // bs
        delta = memoryview(self._delta)[: len(pages)]
        known = self._parent.image(first, count, delta)
        pagedelta.xor_into(delta, pages)
        paying = pagedelta.delta_blocks(delta, bs)
        # A block is an XOR delta where the parent's image is known through XOR deltas
        # at most and the delta pays; else, over a block the parent holds whole, a
        # realigned delta where that pays (its tuples moved); else whole.
        use = bytearray(
            pagedelta.XOR if k in (pagedelta.VIA_XOR, pagedelta.HELD_WHOLE) and p else 0
            for k, p in zip(known, paying, strict=True)
        )
        moved = bytes(k == pagedelta.HELD_WHOLE and not u for k, u in zip(known, use, strict=True))
        realigned = pagedelta.realign_blocks(delta, pages, moved, bs)
        for match in _ONES.finditer(realigned):
            use[match.start() : match.end()] = bytes([pagedelta.REALIGNED]) * len(match[0])
        at = 0
        for match in _RUNS_OF_SAME.finditer(use):
            start, end = match.span()
            kind = use[start]
            if kind == pagedelta.WHOLE:
                crc = self._run(first + start, pages[start * bs : end * bs], 0, crc)
            else:
                flag = pagedelta.DELTA_RUN if kind == pagedelta.XOR else pagedelta.REALIGNED_RUN
                crc = self._run(first + start, delta[start * bs : end * bs], flag, crc)
            at = end
        assert at == count
        paid = count - use.count(pagedelta.WHOLE)
        self.delta_pages += paid
        self.realigned_pages += use.count(pagedelta.REALIGNED)
        return crc, paid

    def label(self, backup_label: str, tablespace_map: str) -> None:
        label, spcmap = backup_label.encode(), tablespace_map.encode()
        self._put(b"l" + _U32.pack(len(label)) + label + _U32.pack(len(spcmap)) + spcmap)


def run_kind(count: int, stream_format: int) -> tuple[int, int]:
    """A run's stored block count: the count and what its blocks are (``pagedelta.WHOLE``,
    ``XOR`` or ``REALIGNED``) in a stream of ``stream_format``."""
    if stream_format >= REALIGN_FORMAT and count & pagedelta.REALIGNED_RUN:
        if count & pagedelta.DELTA_RUN:
            return 0, pagedelta.WHOLE  # both flags: no such run (the caller refuses count 0)
        return count & ~pagedelta.REALIGNED_RUN, pagedelta.REALIGNED
    if stream_format >= DELTA_FORMAT and count & pagedelta.DELTA_RUN:
        return count & ~pagedelta.DELTA_RUN, pagedelta.XOR
    return count, pagedelta.WHOLE


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


def read_header(buffer: SourceBuffer) -> dict[str, Any]:
    """A link's stream header (magic, length, JSON), of a format this code reads."""
    if buffer.exact(len(MAGIC)) != MAGIC:
        raise FileStreamError("not a PostgreSQL file-level backup stream")
    (length,) = _U32.unpack(buffer.exact(4))
    if length > 1 << 20:
        raise FileStreamError("the backup stream's header is malformed")
    try:
        header = json.loads(buffer.exact(length))
    except ValueError as exc:
        raise FileStreamError("the backup stream's header is malformed") from exc
    if not isinstance(header, dict) or header.get("format") not in READ_FORMATS:
        raise FileStreamError("unsupported file-level backup stream format")
    return header


class _Stopped(Exception):
    """Another segment of the link failed."""


# Per block of a file an incremental changed: what newer links wrote there.
# Nothing; the block; XOR deltas, awaiting their base; a realigned delta, awaiting its
# base whole.
_MISSING, _FINAL, _PARTIAL, _AWAITING = 0, 1, 2, 3
# bytes.translate tables: a whole block applied; an XOR delta; a realigned delta (a
# delta over a realigned delta, or a realigned delta over a delta, is refused first).
_AFTER = {
    pagedelta.WHOLE: bytes([_FINAL] * 256),
    pagedelta.XOR: bytes([_PARTIAL, _FINAL, _PARTIAL, _AWAITING] + [0] * 252),
    pagedelta.REALIGNED: bytes([_AWAITING, _FINAL, _PARTIAL, _AWAITING] + [0] * 252),
}
_NOT_FINAL = re.compile(rb"[\x02\x03]")


class _FileState:
    __slots__ = ("complete", "created", "size", "written")

    def __init__(self, size: int, blocks: int | None) -> None:
        self.size = size
        self.complete = False
        self.created = False
        # Per block, _MISSING, _FINAL, _PARTIAL or _AWAITING; None for files copied whole.
        self.written: bytearray | None = bytearray(blocks) if blocks is not None else None

    def has_deltas(self) -> bool:
        """Whether some block holds deltas still awaiting an older link's copy."""
        return self.written is not None and _NOT_FINAL.search(self.written) is not None

    def pending(self) -> bool:
        """Whether some block still needs an older link."""
        written = self.written
        return written is not None and (written.find(_MISSING) >= 0 or self.has_deltas())


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
        self._format = FORMAT_VERSION  # of the link being laid out (deltas from 2 on)
        self._scratch = threading.local()  # each layout thread's buffer for deltas
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
        header = read_header(buffer)
        expect(header)
        self._format = header["format"]
        newest = self._links == 0
        block_size = header.get("block_size")
        if block_size not in models.BLOCK_SIZES:
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
                close_source(reader)
                raise
            if end is not None:
                close_source(reader)
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
        close_source(source)  # it stopped at the first segment; the link ends in the last one
        errors = [e for f in futures if not f.cancelled() and (e := f.exception()) is not None]
        if errors:
            if not parts[-1].cancelled() and parts[-1].exception() is None:
                close_source(parts[-1].result()[1])
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
            blocks = state.size // bs if bs else 0
            written = state.written
            holes = not state.complete and (
                written is None or written.find(_MISSING, 0, blocks) >= 0
            )
            if holes or (written is not None and _NOT_FINAL.search(written) is not None):
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
        writeback when the record is done, unless it holds deltas an older link will
        complete (those blocks would go to disk twice)."""
        fd = self._open(path, state) if state is not None else -1
        try:
            yield fd
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        if fd < 0:
            return
        if state is not None and state.size >= WRITEBACK_MIN_SIZE and not state.has_deltas():
            self._writeback.hand_over(fd)
        else:
            os.close(fd)

    def _open(self, path: str, state: _FileState) -> int:
        """The file, made new (``O_EXCL``) by the newest link that names it; opened
        again by older links, beneath the target and never through a link."""
        if state.created:
            return beneath.open_beneath(self._root_fd, path, os.O_RDWR)
        new = os.O_RDWR | os.O_CREAT | os.O_EXCL
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
            crc = self._copy_span(buffer, fd, state, 0, size, 0, pagedelta.WHOLE)
            stored = self._stored_crc(buffer)
            if state is not None:
                self._check_crc(stored, crc, path)
                # A whole copy ends the file's chain: blocks past its end are zeros (a
                # delta there is its own block), and older links are not read for it.
                if state.written is not None:
                    self._mark(state, 0, len(state.written), pagedelta.WHOLE)
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
                count, kind = run_kind(count, self._format)
                if count == 0 or (first + count) * bs > size:
                    raise FileStreamError(f"the backup stream is corrupted (a run of {path})")
                if state is not None:
                    crc = crc32(raw, crc)
                crc = self._copy_span(
                    buffer, fd, state, first * bs, (first + count) * bs, crc, kind
                )
                if state is not None and state.written is not None:
                    # Marked after the run: a block split across reads is written whole.
                    self._mark(state, first, min(first + count, len(state.written)), kind)
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
        kind: int,
    ) -> int:
        """Bytes ``[offset, end)`` of a file from the stream, blocks of ``kind``: written
        and checksummed when the file is needed (``state``), skipped otherwise. Returns
        the CRC."""
        if state is None:
            buffer.skip(end - offset)
            return crc
        bs = self._block_size
        written = state.written
        # A realigned delta is completed with whole blocks: read whole blocks at a time.
        by_block = written is not None and written.find(_AWAITING, offset // bs, -(-end // bs)) >= 0
        while offset < end:
            if by_block:  # up to a block boundary
                view = memoryview(buffer.exact(min(datadir.READ_SIZE - offset % bs, end - offset)))
            else:
                view = buffer.take(end - offset)
            if not view:
                raise FileStreamError("the backup stream ends inside a file")
            crc = crc32(view, crc)
            self._write(fd, offset, view, state, kind)
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
        if state.written is not None and not state.pending():
            state.complete = True
            return None
        return state

    @staticmethod
    def _mark(state: _FileState, first: int, end: int, kind: int) -> None:
        """Blocks ``[first, end)`` had a link's copy of ``kind`` applied."""
        written = state.written
        assert written is not None
        if end > first:
            written[first:end] = written[first:end].translate(_AFTER[kind])

    def _write(self, fd: int, offset: int, view: memoryview, state: _FileState, kind: int) -> None:
        """Write the parts of ``view`` (at ``offset``, blocks of ``kind``) inside the
        file's final size that newer links did not write; where they wrote deltas,
        complete them with this (or, a delta too, carry it on towards a whole block
        further down the chain)."""
        end = min(offset + len(view), state.size)
        written = state.written
        if written is None:
            self._pwrite(fd, view[: max(0, end - offset)], offset)
            return
        if end <= offset:
            return
        bs = self._block_size
        first = offset // bs
        flags = bytes(written[first : (end - 1) // bs + 1])
        awaiting: list[tuple[int, memoryview]] = []
        for match in _PENDING.finditer(flags):
            start = max(offset, (first + match.start()) * bs)
            stop = min(end, (first + match.end()) * bs)
            part = view[start - offset : stop - offset]
            newer = flags[match.start()]
            if newer == _MISSING:
                self._pwrite(fd, part, start)
                continue
            if kind == pagedelta.REALIGNED or (newer == _AWAITING and kind == pagedelta.XOR):
                raise FileStreamError("the backup stream is corrupted (a delta over a delta)")
            if newer == _AWAITING:
                awaiting.append((start, part))
                continue
            current = self._pread(fd, stop - start, start)
            pagedelta.xor_into(current, part)
            self._pwrite(fd, current, start)
        if awaiting:
            self._complete_realigned(fd, awaiting)

    def _complete_realigned(self, fd: int, runs: list[tuple[int, memoryview]]) -> None:
        """The newer link's realigned deltas at ``runs`` ((offset, whole blocks of this
        link: their base) pairs, see _copy_span), completed: read back, realigned all
        together (one call, not one per run), written."""
        bs = self._block_size
        bases, deltas = bytearray(), bytearray()
        for start, part in runs:
            padding = -len(part) % bs
            bases += part
            bases += bytes(padding)
            deltas += self._pread(fd, len(part) + padding, start)
        pagedelta.complete_realigned(deltas, bases, bs, base_is_scratch=True)
        at = 0
        for start, part in runs:
            # Whole blocks back: a short last block of the older copy (the file grew since)
            # is its image with zeros after it, and the realigned tuples may land there.
            # A file restored block by block ends on a block boundary (see _pages).
            whole = len(part) + -len(part) % bs
            self._pwrite(fd, memoryview(deltas)[at : at + whole], start)
            at += whole

    def _pread(self, fd: int, size: int, offset: int) -> memoryview:
        """``size`` bytes of ``fd`` at ``offset``, in this thread's scratch buffer."""
        scratch: bytearray | None = getattr(self._scratch, "buffer", None)
        if scratch is None or len(scratch) < size:
            scratch = self._scratch.buffer = bytearray(max(size, datadir.READ_SIZE))
        view = memoryview(scratch)[:size]
        done = 0
        while done < size:
            n = os.preadv(fd, [view[done:]], offset + done)
            if n == 0:
                raise FileStreamError("a restored file is shorter than its deltas")
            done += n
        return view

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
