"""Reading the engine's restore streams: exact reads without re-joining blocks, and
member paths that cannot leave the target directory."""

from __future__ import annotations

from pathlib import PurePosixPath

from strongroom.engines.base import ByteSource

READ_SIZE = 4 * 1024 * 1024  # the pipeline's chunk size: whole chunks come back uncopied


def close_source(source: object) -> None:
    """Close a stream that can be closed (the pipeline's readers can; a plain source
    need not)."""
    close = getattr(source, "close", None)
    if close is not None:
        close()


class StreamFormatError(Exception):
    """A restore stream is malformed or damaged; the message is safe to show."""


class SourceBuffer:
    """Exact reads over a ByteSource without re-joining what was already read."""

    def __init__(
        self, source: ByteSource, error: type[StreamFormatError], *, start: int = 0
    ) -> None:
        self._source = source
        self._error = error
        self._buf = memoryview(b"")
        self._passed = start  # offset in the stream of the end of what was fetched

    @property
    def position(self) -> int:
        """Offset in the stream of the next byte to be taken (``start`` for the first)."""
        return self._passed - len(self._buf)

    def take(self, size: int) -> memoryview:
        """Up to ``size`` bytes (at least one unless the stream ended)."""
        if not self._buf:
            self._buf = memoryview(self._source.read(READ_SIZE))
            self._passed += len(self._buf)
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def exact(self, size: int) -> bytes:
        parts = []
        while size:
            part = self.take(size)
            if not part:
                raise self._error("the backup stream ends early")
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    def skip(self, size: int) -> None:
        """Move ``size`` bytes on; a source with ``skip`` (the pipeline's chunk reader)
        then need not fetch or open the chunks in between."""
        buffered = min(size, len(self._buf))
        self._buf = self._buf[buffered:]
        size -= buffered
        source_skip = getattr(self._source, "skip", None)
        if size and source_skip is not None:
            try:
                source_skip(size)
            except ValueError as exc:
                raise self._error("the backup stream ends early") from exc
            self._passed += size
            return
        while size:
            part = self.take(min(size, READ_SIZE))
            if not part:
                raise self._error("the backup stream ends early")
            size -= len(part)

    def read(self, size: int, /) -> bytes:
        """ByteSource: what is buffered first, then the source."""
        return bytes(self.take(size))

    def rest(self) -> bytes:
        """What is left of the current block, then the source's next block."""
        if self._buf:
            out, self._buf = bytes(self._buf), memoryview(b"")
            return out
        out = self._source.read(READ_SIZE)
        self._passed += len(out)
        return out


def safe_relative(name: str, error: type[StreamFormatError]) -> PurePosixPath:
    path = PurePosixPath(name)
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or ".." in parts or not parts:
        raise error(f"unsafe path in the backup: {name!r}")
    return PurePosixPath(*parts)
