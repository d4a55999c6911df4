"""Extract a ``pg_basebackup`` tar stream into a directory as it arrives.

The tar is read in streaming mode (``r|``) straight from the backup source: nothing is
buffered beyond one copy block, and only plain files and directories below the target are
accepted (no links, devices, absolute paths or ``..``).
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath

from strongroom.engines.base import ByteSource

COPY_BLOCK = 1024 * 1024


class TarStreamError(Exception):
    """The stream is not a valid base backup tar; the message is safe to show."""


class _Reader:
    """The file-like view ``tarfile`` wants over a ``ByteSource``."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = COPY_BLOCK
        return self._source.read(size)


def _safe_relative(name: str) -> PurePosixPath:
    path = PurePosixPath(name)
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or ".." in parts or not parts:
        raise TarStreamError(f"unsafe path in the backup: {name!r}")
    return PurePosixPath(*parts)


def extract(source: ByteSource, target: Path, owner: tuple[int, int] | None) -> list[str]:
    """Extract the tar stream into ``target`` (which must exist); return member names.
    Reads ``source`` to its end."""
    reader = _Reader(source)
    names: list[str] = []
    try:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=COPY_BLOCK) as tar:  # type: ignore[call-overload]
            for member in tar:
                rel = _safe_relative(member.name)
                dest = target.joinpath(*rel.parts)
                if member.isdir():
                    dest.mkdir(mode=0o700, parents=True, exist_ok=True)
                    if owner is not None:
                        os.chown(dest, *owner)
                elif member.isreg():
                    dest.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                    fileobj = tar.extractfile(member)
                    assert fileobj is not None
                    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                    with os.fdopen(fd, "wb") as out:
                        remaining = member.size
                        while remaining:
                            block = fileobj.read(min(COPY_BLOCK, remaining))
                            if not block:
                                raise TarStreamError("the backup stream ends inside a file")
                            out.write(block)
                            remaining -= len(block)
                    if owner is not None:
                        os.chown(dest, *owner)
                else:
                    raise TarStreamError(
                        f"unsupported entry in the backup: {member.name!r} "
                        "(links and tablespaces are not supported)"
                    )
                names.append(str(rel))
    except tarfile.TarError as exc:
        raise TarStreamError(f"the backup stream is not a valid tar archive: {exc}") from exc
    except EOFError as exc:
        raise TarStreamError("the backup stream ends early") from exc
    # Consume the rest (end-of-archive padding) so the stream is read to its end.
    while block := source.read(COPY_BLOCK):
        if block.strip(b"\0"):
            raise TarStreamError("unexpected data after the end of the tar archive")
    if not names:
        raise TarStreamError("the backup stream is empty")
    return names
