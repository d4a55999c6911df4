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
from pathlib import Path

from strongroom.engines.base import ByteSource
from strongroom.engines.postgresql.streamio import SourceBuffer, StreamFormatError, safe_relative

BLOCK = 512


class TarStreamError(StreamFormatError):
    """The stream is not a valid base backup tar; the message is safe to show."""


def _write_file(blocks: SourceBuffer, dest: Path, size: int) -> None:
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
    blocks = SourceBuffer(source, TarStreamError)
    names: list[str] = []
    while True:
        header = blocks.exact(BLOCK)
        if not header.strip(b"\0"):
            break  # end-of-archive marker
        try:
            member = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
        except tarfile.TarError as exc:
            raise TarStreamError(f"the backup stream is not a valid tar archive: {exc}") from exc
        rel = safe_relative(member.name, TarStreamError)
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
