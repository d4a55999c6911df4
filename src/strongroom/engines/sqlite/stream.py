"""The SQLite engine's private stream format (version 1) and its engine metadata.

Stream (all integers big-endian)::

    header   magic "SRSQLITE" | u16 version=1 | u8 kind (0 full, 1 incremental)
             | u8 journal (0 rollback journal, 1 WAL) | u32 page_size | u32 page_count
             | u32 base_page_count (parent's, 0 for a full) | 32 bytes parent image SHA-256
             (zeros for a full)                                              56 bytes
    records  u32 pgno (>= 1, strictly ascending) | page_size bytes of page data
    trailer  u32 0 | u32 number of records | 32 bytes SHA-256 of the resulting image
             | "SRSQLEND"                                                    48 bytes

A full stream holds every page 1..page_count. An incremental one holds the pages whose
hash differs from the parent's, plus every page beyond the parent's page count; applying it
means writing those pages and truncating or extending the file to ``page_count`` pages.
The *image* is the database file's first ``page_count * page_size`` bytes as of the snapshot.

Metadata (JSON, the manifest's engine metadata)::

    format "sqlite-pages", format_version 1, kind "full" | "incremental",
    page_size, page_count, journal_mode, sqlite_version,
    sha256 (image), parent_sha256 (None for a full), pages_written,
    page_hash "blake2b-64", page_hashes: base64(zstd(8-byte BLAKE2b digest of each page,
    concatenated in page order)), snapshot (reader statistics, informational).

8-byte digests keep the metadata near 2.7 MB for a 1 GiB database of 4 KiB pages. A 64-bit
collision could only make an incremental skip a changed page; the image SHA-256 checked on
restore would then refuse the chain rather than restore a wrong database.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass
from typing import TypeGuard

import zstandard
from pydantic import ValidationError

from strongroom.engines.base import ByteSink, ByteSource, Metadata
from strongroom.engines.errors import validation_reason
from strongroom.engines.sqlite import models

FORMAT = "sqlite-pages"
FORMAT_VERSION = 1
PAGE_HASH = "blake2b-64"
DIGEST_SIZE = 8
MAGIC = b"SRSQLITE"
END_MAGIC = b"SRSQLEND"
HEADER = struct.Struct(">8sHBBIII32s")
RECORD = struct.Struct(">I")
TRAILER = struct.Struct(">II32s8s")
KIND_FULL = 0
KIND_INCREMENTAL = 1
FLUSH_BYTES = 1 << 20
MIN_PAGE_SIZE, MAX_PAGE_SIZE = models.MIN_PAGE_SIZE, models.MAX_PAGE_SIZE
MAX_HASHES_BYTES = DIGEST_SIZE * (1 << 31)


class StreamFormatError(ValueError):
    """A stream or metadata that does not follow this format."""


def page_digest(page: bytes | memoryview) -> bytes:
    return hashlib.blake2b(page, digest_size=DIGEST_SIZE).digest()


def valid_page_size(value: object) -> TypeGuard[int]:
    return (
        isinstance(value, int)
        and MIN_PAGE_SIZE <= value <= MAX_PAGE_SIZE
        and value & (value - 1) == 0
    )


def pack_hashes(hashes: bytes | bytearray) -> str:
    return base64.b64encode(zstandard.ZstdCompressor(level=3).compress(hashes)).decode()


def unpack_hashes(text: object, page_count: int) -> bytes:
    expected = DIGEST_SIZE * page_count
    if not isinstance(text, str):
        raise StreamFormatError("page_hashes is missing")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        hashes = zstandard.ZstdDecompressor().decompress(raw, max_output_size=expected or 1)
    except (ValueError, zstandard.ZstdError) as exc:
        raise StreamFormatError("page_hashes cannot be decoded") from exc
    if len(hashes) != expected:
        raise StreamFormatError("page_hashes does not cover page_count pages")
    return hashes


@dataclass(frozen=True)
class Header:
    kind: int
    wal: bool
    page_size: int
    page_count: int
    base_page_count: int
    parent_sha256: bytes

    def encode(self) -> bytes:
        return HEADER.pack(
            MAGIC,
            FORMAT_VERSION,
            self.kind,
            1 if self.wal else 0,
            self.page_size,
            self.page_count,
            self.base_page_count,
            self.parent_sha256,
        )

    @classmethod
    def decode(cls, data: bytes) -> Header:
        if len(data) != HEADER.size:
            raise StreamFormatError("the stream ends inside its header")
        magic, version, kind, journal, page_size, page_count, base, parent = HEADER.unpack(data)
        if magic != MAGIC:
            raise StreamFormatError("not a SQLite page stream")
        if version != FORMAT_VERSION:
            raise StreamFormatError(f"unknown SQLite stream version {version}")
        if kind not in (KIND_FULL, KIND_INCREMENTAL) or journal not in (0, 1):
            raise StreamFormatError("malformed SQLite stream header")
        if not valid_page_size(page_size):
            raise StreamFormatError(f"invalid page size {page_size}")
        return cls(kind, journal == 1, page_size, page_count, base, parent)


@dataclass(frozen=True)
class Trailer:
    records: int
    sha256: bytes

    def encode(self) -> bytes:
        return TRAILER.pack(0, self.records, self.sha256, END_MAGIC)


class StreamWriter:
    """Write a stream into ``sink`` in writes of about 1 MiB."""

    def __init__(self, sink: ByteSink, header: Header) -> None:
        self._sink = sink
        self._buffer = bytearray(header.encode())
        self.records = 0
        self.bytes_written = 0

    def page(self, pgno: int, data: bytes | memoryview) -> None:
        self._buffer += RECORD.pack(pgno)
        self._buffer += data
        self.records += 1
        if len(self._buffer) >= FLUSH_BYTES:
            self._flush()

    def finish(self, image_sha256: bytes) -> None:
        self._buffer += Trailer(self.records, image_sha256).encode()
        self._flush()

    def _flush(self) -> None:
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            self._sink.write(data)
            self.bytes_written += len(data)


class StreamReader:
    """Read a stream from ``source`` with reads of at most one page (plus a little)."""

    def __init__(self, source: ByteSource) -> None:
        self._source = source
        self.header = Header.decode(self._read(HEADER.size))
        self._last = 0
        self.records = 0

    def next_page(self) -> tuple[int, bytes] | None:
        """The next ``(pgno, page)``; ``None`` once the trailer is reached."""
        (pgno,) = RECORD.unpack(self._read(RECORD.size))
        if pgno == 0:
            return None
        if pgno <= self._last or pgno > self.header.page_count:
            raise StreamFormatError(f"page {pgno} is out of order or beyond the page count")
        self._last = pgno
        self.records += 1
        return pgno, self._read(self.header.page_size)

    def finish(self) -> Trailer:
        """Read the rest of the trailer and make sure the stream ends there."""
        records, sha, end = struct.unpack(">I32s8s", self._read(TRAILER.size - RECORD.size))
        if end != END_MAGIC or records != self.records:
            raise StreamFormatError("the stream trailer is damaged")
        if self._source.read(1):
            raise StreamFormatError("unexpected data after the end of the stream")
        return Trailer(records, sha)

    def _read(self, size: int) -> bytes:
        parts: list[bytes] = []
        remaining = size
        while remaining:
            part = self._source.read(remaining)
            if not part:
                raise StreamFormatError("the stream ends early")
            parts.append(part)
            remaining -= len(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)


@dataclass(frozen=True)
class LinkInfo:
    """The parts of a backup's metadata the engine relies on, validated."""

    kind: str
    page_size: int
    page_count: int
    sha256: bytes
    parent_sha256: bytes | None
    page_hashes_text: str

    def hashes(self) -> bytes:
        return unpack_hashes(self.page_hashes_text, self.page_count)


def parse_metadata(metadata: Metadata) -> LinkInfo:
    """Validate metadata written by this format version (``StreamFormatError`` if not)."""
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise StreamFormatError("not the metadata of a SQLite page backup")
    try:
        typed = models.METADATA.validate_python(metadata)
    except ValidationError as exc:
        raise StreamFormatError(
            f"invalid SQLite backup metadata: {validation_reason(exc)}"
        ) from None
    return LinkInfo(
        kind=typed.kind,
        page_size=typed.page_size,
        page_count=typed.page_count,
        sha256=bytes.fromhex(typed.sha256),
        parent_sha256=None if typed.parent_sha256 is None else bytes.fromhex(typed.parent_sha256),
        page_hashes_text=typed.page_hashes,
    )
