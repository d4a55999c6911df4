"""File-level PostgreSQL streams without a server: pages with chosen LSNs in real files,
written by DirStreamWriter (with the parent chain's pages, for deltas) and laid out by
ChainRestorer, newest link first."""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from strongroom.engines import beneath
from strongroom.engines.postgresql import datadir, filestream
from strongroom.engines.postgresql.parentpages import ParentPages

BS = 8192


def page(lsn: int, fill: int) -> bytes:
    return struct.pack("<II", lsn >> 32, lsn & 0xFFFFFFFF) + bytes([fill]) * (BS - 8)


def write_pages(path: Path, pages: list[bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(pages))


@dataclass(frozen=True)
class Link:
    raw: bytes
    segments: list[int]  # the writer's segment_offsets


class OffsetSource(io.BytesIO):
    """A source that can also be read from an offset, as the pipeline's reader can."""

    def __init__(self, raw: bytes, offset: int = 0) -> None:
        super().__init__(raw)
        self.seek(offset)

    def reader_at(self, offset: int) -> OffsetSource:
        return OffsetSource(self.getvalue(), offset)


def walk(root: Path) -> list[datadir.Entry]:
    with beneath.directory(root) as fd:
        return list(datadir.walk(fd))


def backup(
    root: Path,
    threshold: int | None,
    segment_bytes: int = 1,
    parents: Sequence[Link] | None = None,
    known: Sequence[str] | None = None,
) -> tuple[Link, int]:
    """A stream of ``root`` as the engine writes it: records, then the label. Segments
    are as small as they can be (one record each) unless ``segment_bytes`` says. With
    ``parents`` (the parent chain, oldest first), changed pages may be deltas. ``known``:
    the databases (``base/<oid>``) whose relation files get changed pages (all without)."""
    out = io.BytesIO()
    parent = None
    if parents is not None:
        parent = ParentPages([OffsetSource(link.raw) for link in parents], BS)
    writer = filestream.DirStreamWriter(
        out,
        {"block_size": BS, "start_lsn": "0/0", "threshold_lsn": None},
        segment_bytes=segment_bytes,
        parent=parent,
    )
    pages = 0
    for entry in walk(root):
        if entry.is_dir:
            writer.directory(entry.path)
            continue
        fd = os.open(root / entry.path, os.O_RDONLY)
        try:
            paged = known is None or entry.database is None or entry.database in known
            if threshold is not None and entry.is_relation and paged:
                pages += writer.changed_pages(entry.path, fd, entry.size, threshold)
            else:
                writer.whole_file(entry.path, fd, entry.size)
        finally:
            os.close(fd)
    writer.label("START WAL LOCATION: 0/0\n", "")
    if parent is not None:
        parent.close()
    return Link(out.getvalue(), writer.segment_offsets), pages


def restore(target: Path, newest_first: list[Link] | list[bytes], workers: int = 1) -> list[str]:
    """Lay out a chain; with ``workers`` > 1, each link's segments on that many threads."""
    with filestream.ChainRestorer(target, None, workers=workers) as restorer:
        for link in newest_first:
            raw, segments = (link.raw, link.segments) if isinstance(link, Link) else (link, [])
            end = restorer.apply(OffsetSource(raw), lambda header: None, segments)
            assert end.backup_label.startswith("START WAL LOCATION")
            assert end.rest.read(1) == b""
        return restorer.finish()


def heap_page(lsn: int, tuples: Sequence[bytes | None]) -> bytearray:
    """A page laid out as PostgreSQL lays out a heap page: the header, one line pointer
    per tuple (None: an unused one), the tuples from the page's end down, 8-byte aligned."""
    out = bytearray(BS)
    out[0:8] = struct.pack("<II", lsn >> 32, lsn & 0xFFFFFFFF)
    upper, pointers = BS, []
    for data in tuples:
        if data is None:
            pointers.append(0)
            continue
        upper -= -(-len(data) // 8) * 8
        out[upper : upper + len(data)] = data
        pointers.append(upper | 1 << 15 | len(data) << 17)
    lower = 24 + 4 * len(pointers)
    assert lower <= upper, "the tuples do not fit in a page"
    struct.pack_into("<HH", out, 12, lower, upper)
    struct.pack_into(f"<{len(pointers)}I", out, 24, *pointers)
    return out


def heap_tuples(data: bytes) -> list[bytes | None]:
    """The tuples of a page :func:`heap_page` made, by line pointer."""
    (lower,) = struct.unpack_from("<H", data, 12)
    out: list[bytes | None] = []
    for (pointer,) in struct.iter_unpack("<I", data[24:lower]):
        offset, length = pointer & 0x7FFF, pointer >> 17
        out.append(bytes(data[offset : offset + length]) if pointer else None)
    return out
