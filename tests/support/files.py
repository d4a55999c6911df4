"""Byte sinks over files, for engine tests that keep a backup or an archived batch on disk."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


class FileSink:
    """A sink writing to a file; ``on_first_write`` runs once before the first chunk."""

    def __init__(self, path: Path, on_first_write: Callable[[], None] | None = None) -> None:
        self.path = path
        self._fh = path.open("wb")
        self._first = on_first_write
        self.size = 0

    def write(self, data: bytes, /) -> int:
        if self._first is not None:
            first, self._first = self._first, None
            first()
        self._fh.write(data)
        self.size += len(data)
        return len(data)

    def close(self) -> None:
        self._fh.close()
