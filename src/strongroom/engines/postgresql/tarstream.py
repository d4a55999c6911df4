"""Extract a ``pg_basebackup`` tar stream into a directory as it arrives.

The 512-byte ustar headers are parsed with ``tarfile.TarInfo.frombuf`` and each file's bytes
are written straight from the source's blocks (``tarfile``'s streaming mode copies every
block through its own buffer: a third slower on a base backup). Nothing is buffered beyond
one read block, and only plain files and directories below the target are accepted (no
links, devices, absolute paths or ``..``).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath

from strongroom.engines.base import ByteSource

READ_SIZE = 1024 * 1024
BLOCK = 512


class TarStreamError(Exception):
    """The stream is not a valid base backup tar; the message is safe to show."""


class _Blocks:
    """Exact reads over a ByteSource without re-joining what was already read."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self._buf = memoryview(b"")

    def take(self, size: int) -> memoryview:
        """Up to ``size`` bytes (at least one unless the stream ended)."""
        if not self._buf:
            self._buf = memoryview(self._source.read(READ_SIZE))
        out, self._buf = self._buf[:size], self._buf[size:]
        return out

    def exact(self, size: int) -> bytes:
        parts = []
        while size:
            part = self.take(size)
            if not part:
                raise TarStreamError("the backup stream ends early")
            parts.append(part)
            size -= len(part)
        return b"".join(parts)

    def rest(self) -> bytes:
        """What is left of the current block, then the source's next block."""
        if self._buf:
            out, self._buf = bytes(self._buf), memoryview(b"")
            return out
        return self._source.read(READ_SIZE)


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or ".." in parts or not parts:
        raise TarStreamError(f"unsafe path in the backup: {name!r}")
    return PurePosixPath(*parts)


def _write_file(blocks: _Blocks, dest: Path, size: int) -> None:
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        remaining = size
        while remaining:
            view = blocks.take(remaining)
            if not view:
                raise TarStreamError("the backup stream ends inside a file")
            remaining -= len(view)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    blocks.exact(-size % BLOCK)  # padding to the next header


def extract(source: ByteSource, target: Path, owner: tuple[int, int] | None) -> list[str]:
    """Extract the tar stream into ``target`` (which must exist); return member names.
    Reads ``source`` to its end."""
    blocks = _Blocks(source)
    names: list[str] = []
    while True:
        header = blocks.exact(BLOCK)
        if not header.strip(b"\0"):
            break  # end-of-archive marker
        try:
            member = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.TarError as exc:
            raise TarStreamError(f"the backup stream is not a valid tar archive: {exc}") from exc
        rel = _safe_relative(member.name)
        dest = target.joinpath(*rel.parts)
        if member.isdir():
            dest.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif member.isreg():
            dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            _write_file(blocks, dest, member.size)
        else:
            raise TarStreamError(
                f"unsupported entry in the backup: {member.name!r} "
                "(links and tablespaces are not supported)"
            )
        if owner is not None:
            os.chown(dest, *owner)
        names.append(str(rel))
    # Consume the rest (end-of-archive padding) so the stream is read to its end.
    while block := blocks.rest():
        if block.strip(b"\0"):
            raise TarStreamError("unexpected data after the end of the tar archive")
    if not names:
        raise TarStreamError("the backup stream is empty")
    return names
