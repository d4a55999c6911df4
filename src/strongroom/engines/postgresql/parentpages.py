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
from strongroom.engines.postgresql import filestream, pagedelta
from strongroom.engines.postgresql.pagedelta import walk_key, xor_into
from strongroom.engines.postgresql.streamio import SourceBuffer, close_source

_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_U64 = struct.Struct("!Q")
_UNRESOLVED = re.compile(rb"\x00+")
_REALIGNED = re.compile(rb"\x02+")  # per block of a whole copy: a newer realigned delta
_NOT_REALIGNED = re.compile(rb"[\x00\x01]+")


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
        self._run: tuple[int, int, int] | None = None  # first block, count, pagedelta kind
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

    def _next_run(self) -> tuple[int, int, int] | None:
        if self._run is None and not self._runs_ended:
            (first,) = _U32.unpack(self._buffer.exact(4))
            if first == filestream.END_OF_RUNS:
                self._runs_ended = True
                return None
            (count,) = _U32.unpack(self._buffer.exact(4))
            count, delta = filestream.run_kind(count, self._format)
            if count == 0 or (first + count) * self._bs > self.size:
                raise ParentStreamError("a parent link is corrupted (a run)")
            self._run, self._pos = (first, count, delta), 0
        return self._run

    def pieces(self, first: int, end: int, wanted: bytearray) -> list[tuple[int, bytes, int]]:
        """``(block, data, delta)`` for what this link holds of blocks ``[first, end)``
        of the current file, reading only blocks whose ``wanted[block - first]`` is 0."""
        if self._kind is None:
            return []
        if self._kind == b"f":
            return self._whole_pieces(first, end, wanted)
        out: list[tuple[int, bytes, int]] = []
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
    ) -> list[tuple[int, bytes, int]]:
        stop = min(end, self.blocks)
        if stop <= first:
            return []
        if self._pos > first * self._bs:
            raise ParentStreamError("blocks of a parent file were asked for out of order")
        self._buffer.skip(first * self._bs - self._pos)
        self._pos = first * self._bs
        pieces = [(b, data, pagedelta.WHOLE) for b, data in self._read(first, stop, first, wanted)]
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
        file into ``out``; return per block how it is known (``pagedelta.UNKNOWN``,
        ``VIA_XOR``, ``HELD_WHOLE`` or ``VIA_REALIGNED``): unknown where no link holds
        the block whole below its deltas (those are stored whole)."""
        bs = self.block_size
        out[: count * bs] = bytes(count * bs)
        resolved = bytearray(count)
        newer = bytearray(count)  # per block, the kind of the newer links' deltas
        for cursor in self._present:
            if resolved.find(0) < 0:
                break
            for block, data, kind in cursor.pieces(first, first + count, resolved):
                at, n = block - first, -(-len(data) // bs)
                self._apply(out, at, data, kind, newer)
                if kind == pagedelta.WHOLE:
                    resolved[at : at + n] = b"\x01" * n
            if cursor.whole:
                # As a restore lays it out, a whole copy ends the chain of the file: its
                # blocks and, past its end, zeros.
                resolved[:] = b"\x01" * count
        how = bytes([pagedelta.HELD_WHOLE, pagedelta.VIA_XOR, pagedelta.VIA_REALIGNED])
        return bytearray(
            how[k] if done else pagedelta.UNKNOWN for done, k in zip(resolved, newer, strict=True)
        )

    def _apply(
        self, out: bytearray | memoryview, at: int, data: bytes, kind: int, newer: bytearray
    ) -> None:
        """One link's copy of blocks from ``at`` on, newest link first: a realigned delta
        only where no newer link had a delta, an XOR delta only over no realigned one,
        and a whole copy completes either."""
        bs = self.block_size
        n = -(-len(data) // bs)
        span = newer[at : at + n]
        if kind != pagedelta.WHOLE and any(span) and (kind == pagedelta.REALIGNED or 2 in span):
            raise ParentStreamError("a parent link is corrupted (a delta over a realigned delta)")
        if kind != pagedelta.WHOLE:
            xor_into(out[at * bs : at * bs + len(data)], data)
            newer[at : at + n] = bytes([kind]) * n
            return
        padded = data if len(data) == n * bs else data + bytes(n * bs - len(data))
        for match in _NOT_REALIGNED.finditer(span):
            lo, hi = match.span()
            xor_into(out[(at + lo) * bs : (at + hi) * bs], padded[lo * bs : hi * bs])
        for match in _REALIGNED.finditer(span):
            lo, hi = match.span()
            blocks = out[(at + lo) * bs : (at + hi) * bs]
            pagedelta.complete_realigned(blocks, padded[lo * bs : hi * bs], bs)
