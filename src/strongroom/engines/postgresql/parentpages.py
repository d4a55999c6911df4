"""The parent chain's image of a data directory's blocks, read while an incremental
backup is taken, for its sub-page deltas (see :mod:`pagedelta`).

Each parent link's stream is read forward once, in the order the backup walks its files
(the order every link was written in): a link's record of a file the backup does not ask
for, and blocks already known from a newer link, are skipped, so the pipeline neither
fetches nor decrypts chunks wholly inside them. Memory, per link: one request's blocks
(at most 4 MiB), the chunk being read and one ahead; at most
``pagedelta.MAX_PARENT_LINKS`` links.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Sequence

from strongroom.engines.base import ByteSource
from strongroom.engines.postgresql import filestream
from strongroom.engines.postgresql.pagedelta import DELTA_RUN, walk_key, xor_into
from strongroom.engines.postgresql.streamio import SourceBuffer, close_source

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_UNRESOLVED = re.compile(rb"\x00+")


class ParentStreamError(filestream.FileStreamError):
    """The parent chain's streams cannot give the parent's pages."""


class _ParentSource:
    """A parent link's stream: a failure to read it (a missing or damaged chunk, the
    store) is the backup's, named as the parent chain's."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source

    def read(self, size: int, /) -> bytes:
        try:
            return self._source.read(size)
        except Exception as exc:
            raise ParentStreamError(f"{type(exc).__name__}: {exc}") from exc

    def skip(self, size: int, /) -> None:
        skip = getattr(self._source, "skip", None)
        try:
            if skip is not None:
                skip(size)
            else:
                while size:
                    data = self._source.read(min(size, 1 << 20))
                    if not data:
                        raise ValueError("the stream ends early")
                    size -= len(data)
        except Exception as exc:
            raise ParentStreamError(f"{type(exc).__name__}: {exc}") from exc

    def close(self) -> None:
        close_source(self._source)


class _LinkCursor:
    """One parent link's stream, read forward: its record of the file asked for, and the
    blocks of that record asked for, skipping everything else."""

    def __init__(self, source: ByteSource, block_size: int) -> None:
        self._source = source
        self._buffer = SourceBuffer(source, ParentStreamError)
        self._bs = block_size
        self._format = self._header()
        self._ended = False
        self._ahead: tuple[bytes, str] | None = None  # a record's kind and path, body unread
        self._last_key: tuple[bool, list[str]] | None = None
        # The current file's record: kind, size, and how far into it the cursor is.
        self._kind: bytes | None = None
        self.size = 0
        self._pos = 0  # "f": bytes of the file passed; "p": blocks of the current run passed
        self._run: tuple[int, int, bool] | None = None  # first block, count, delta
        self._runs_ended = False

    def _header(self) -> int:
        header = filestream.read_header(self._buffer)
        if header.get("block_size") != self._bs:
            raise ParentStreamError("the parent chain has another block size")
        return int(header["format"])

    def close(self) -> None:
        close_source(self._source)

    # -- records ----------------------------------------------------------------------
    def _peek(self) -> tuple[bytes, str] | None:
        """The next file record's kind and path (directories passed), None at the end."""
        while self._ahead is None and not self._ended:
            kind = self._buffer.exact(1)
            if kind == b"l":
                self._ended = True
                break
            (length,) = _U16.unpack(self._buffer.exact(2))
            path = self._buffer.exact(length).decode("utf-8", "replace")
            if kind == b"d":
                continue
            if kind not in (b"f", b"p"):
                raise ParentStreamError("a parent link is corrupted (unknown record)")
            key = walk_key(path)
            if self._last_key is not None and key <= self._last_key:
                raise ParentStreamError("a parent link's files are not in walk order")
            self._last_key = key
            self._ahead = (kind, path)
        return self._ahead

    def seek(self, path: str) -> bool:
        """Finish the current record and move to ``path``'s; False when the link has
        none (paths are asked for in walk order)."""
        self._finish()
        key = walk_key(path)
        while (ahead := self._peek()) is not None:
            kind, name = ahead
            if walk_key(name) > key:
                return False
            self._ahead = None
            (self.size,) = _U64.unpack(self._buffer.exact(8))
            self._kind, self._pos = kind, 0
            self._run, self._runs_ended = None, False
            if name == path:
                return True
            self._finish()
        return False

    @property
    def whole(self) -> bool:
        """The current record is the whole file."""
        return self._kind == b"f"

    @property
    def blocks(self) -> int:
        return -(-self.size // self._bs)

    def _finish(self) -> None:
        """Skip the rest of the current record, its checksum included."""
        if self._kind == b"f":
            self._buffer.skip(self.size - self._pos + 4)
        elif self._kind == b"p":
            while (run := self._next_run()) is not None:
                self._buffer.skip((run[1] - self._pos) * self._bs)
                self._run = None
            self._buffer.skip(4)
        self._kind = None

    def _next_run(self) -> tuple[int, int, bool] | None:
        if self._run is None and not self._runs_ended:
            (first,) = _U32.unpack(self._buffer.exact(4))
            if first == filestream.END_OF_RUNS:
                self._runs_ended = True
                return None
            (count,) = _U32.unpack(self._buffer.exact(4))
            delta = self._format >= 2 and bool(count & DELTA_RUN)
            if self._format >= 2:
                count &= ~DELTA_RUN
            if count == 0 or (first + count) * self._bs > self.size:
                raise ParentStreamError("a parent link is corrupted (a run)")
            self._run, self._pos = (first, count, delta), 0
        return self._run

    def pieces(self, first: int, end: int, wanted: bytearray) -> list[tuple[int, bytes, bool]]:
        """``(block, data, delta)`` for what this link holds of blocks ``[first, end)``
        of the current file, reading only blocks whose ``wanted[block - first]`` is 0."""
        if self._kind is None:
            return []
        if self._kind == b"f":
            return self._whole_pieces(first, end, wanted)
        out: list[tuple[int, bytes, bool]] = []
        while (run := self._next_run()) is not None:
            run_first, count, delta = run
            at = run_first + self._pos
            if at >= end:
                break
            stop = min(run_first + count, end)
            if stop > first:
                if at < first:
                    self._buffer.skip((first - at) * self._bs)
                    at = first
                out.extend((b, data, delta) for b, data in self._read(at, stop, first, wanted))
                at = stop
            else:
                self._buffer.skip((stop - at) * self._bs)
                at = stop
            self._pos = at - run_first
            if self._pos == count:
                self._run = None
        return out

    def _whole_pieces(
        self, first: int, end: int, wanted: bytearray
    ) -> list[tuple[int, bytes, bool]]:
        stop = min(end, self.blocks)
        if stop <= first:
            return []
        if self._pos > first * self._bs:
            raise ParentStreamError("blocks of a parent file were asked for out of order")
        self._buffer.skip(first * self._bs - self._pos)
        self._pos = first * self._bs
        pieces = [(b, data, False) for b, data in self._read(first, stop, first, wanted)]
        self._pos = min(stop * self._bs, self.size)
        return pieces

    def _read(self, at: int, stop: int, first: int, wanted: bytearray) -> list[tuple[int, bytes]]:
        """Blocks ``[at, stop)`` (the buffer at ``at``): read where wanted, else skipped.
        A file's last block may be short."""
        bs = self._bs
        limit = self.size if self._kind == b"f" else stop * bs
        out = []
        flags = bytes(wanted[at - first : stop - first])
        passed = at
        for match in _UNRESOLVED.finditer(flags):
            start, end = at + match.start(), at + match.end()
            self._buffer.skip((start - passed) * bs)
            length = min(end * bs, limit) - start * bs
            out.append((start, self._buffer.exact(length)))
            passed = start + -(-length // bs)
        self._buffer.skip(max(0, min(stop * bs, limit) - passed * bs))
        return out


class ParentPages:
    """The parent chain's image of the blocks of its files, read from the chain's
    streams (oldest first, as ``links``) while a backup asks for them in walk order."""

    def __init__(self, links: Sequence[ByteSource], block_size: int) -> None:
        self.block_size = block_size
        self._cursors: list[_LinkCursor] = []
        try:
            for source in reversed(links):  # newest first
                self._cursors.append(_LinkCursor(_ParentSource(source), block_size))
        except BaseException:
            self.close()
            raise
        self._present: list[_LinkCursor] = []
        self._last: tuple[bool, list[str]] | None = None

    def close(self) -> None:
        for cursor in self._cursors:
            cursor.close()

    def open(self, path: str) -> int:
        """Blocks of ``path`` in the parent (0 when the parent has no such file); paths
        must be asked for in walk order."""
        key = walk_key(path)
        if self._last is not None and key <= self._last:
            raise ParentStreamError("files were asked for out of walk order")
        self._last = key
        self._present = [c for c in self._cursors if c.seek(path)]
        if not self._present or self._present[0] is not self._cursors[0]:
            return 0  # the newest parent link names the parent's files
        return self._cursors[0].blocks

    def image(self, first: int, count: int, out: bytearray | memoryview) -> bytearray:
        """Write the parent's image of blocks ``[first, first + count)`` of the opened
        file into ``out``; return per block 1 where it is known, 0 where no link holds
        the block whole below its deltas (those are stored whole)."""
        bs = self.block_size
        out[: count * bs] = bytes(count * bs)
        resolved = bytearray(count)
        for cursor in self._present:
            if resolved.find(0) < 0:
                break
            for block, data, delta in cursor.pieces(first, first + count, resolved):
                at = (block - first) * bs
                xor_into(out[at : at + len(data)], data)
                if not delta:
                    n = -(-len(data) // bs)
                    resolved[block - first : block - first + n] = b"\x01" * n
            if cursor.whole:
                # As a restore lays it out, a whole copy ends the chain of the file: its
                # blocks and, past its end, zeros.
                resolved[:] = b"\x01" * count
        return resolved
