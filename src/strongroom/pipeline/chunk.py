"""Chunk objects: header, associated data, seal and open (docs/format.md section 3)."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from strongroom.pipeline import compress, crypto
from strongroom.pipeline.errors import FormatError, IntegrityError

MAGIC: Final = b"SRC1"
FORMAT_VERSION: Final = 1
FLAG_FINAL: Final = 0x01
KNOWN_FLAGS: Final = FLAG_FINAL

_HEADER: Final = struct.Struct(">4sBBbB")
HEADER_SIZE: Final = _HEADER.size  # 8
PREFIX_SIZE: Final = HEADER_SIZE + crypto.NONCE_SIZE  # 20
OVERHEAD: Final = PREFIX_SIZE + crypto.TAG_SIZE  # 36


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    version: int
    compression: int
    level: int
    final: bool

    def pack(self) -> bytes:
        flags = FLAG_FINAL if self.final else 0
        return _HEADER.pack(MAGIC, self.version, self.compression, self.level, flags)


def parse_header(blob: bytes, *, what: str) -> ChunkHeader:
    """Parse and validate the 8-byte header; FormatError if it is not a v1 chunk header."""
    if len(blob) < OVERHEAD:
        raise FormatError(f"{what}: {len(blob)} bytes is too short for a chunk")
    magic, version, compression_id, level, flags = _HEADER.unpack_from(blob)
    if magic != MAGIC:
        raise FormatError(f"{what}: not a Strongroom chunk (magic {magic!r})")
    if version != FORMAT_VERSION:
        raise FormatError(f"{what}: unsupported chunk format version {version}")
    if compression_id not in compress.KNOWN_COMPRESSIONS:
        raise FormatError(f"{what}: unknown compression id {compression_id}")
    if flags & ~KNOWN_FLAGS:
        raise FormatError(f"{what}: unknown flag bits {flags:#04x}")
    return ChunkHeader(version, compression_id, level, bool(flags & FLAG_FINAL))


def associated_data(header: bytes, backup_id: str, index: int, final: bool) -> bytes:
    """AD = header || u16 len || utf8(backup_id) || u64 index || u8 final."""
    bid = backup_id.encode("utf-8")
    return b"".join(
        (header, struct.pack(">H", len(bid)), bid, struct.pack(">QB", index, int(final)))
    )


def seal_chunk(
    cipher: AESGCM,
    plain: compress.BytesLike,
    *,
    backup_id: str,
    index: int,
    final: bool,
    level: int,
) -> bytes:
    """Compress and encrypt one chunk of plaintext into a chunk object."""
    compression_id, payload = compress.compress(plain, level)
    header = ChunkHeader(
        FORMAT_VERSION,
        compression_id,
        level if compression_id == compress.COMPRESSION_ZSTD else 0,
        final,
    ).pack()
    nonce = crypto.random_nonce()
    ad = associated_data(header, backup_id, index, final)
    return header + nonce + crypto.seal(cipher, nonce, payload, ad)


def open_chunk(
    cipher: AESGCM,
    blob: bytes,
    *,
    backup_id: str,
    index: int,
    final: bool,
    plain_size: int,
) -> bytes:
    """Verify and decrypt one chunk object; returns its plaintext.

    ``final`` is whether the manifest says this is the last chunk. Raises IntegrityError
    (or FormatError for a malformed header) naming the backup and chunk.
    """
    what = f"backup {backup_id} chunk {index}"
    header = parse_header(blob, what=what)
    if header.final and not final:
        raise IntegrityError(f"{what} is marked final but is not the last chunk in the manifest")
    if final and not header.final:
        raise IntegrityError(
            f"{what} is the last chunk in the manifest but is not marked final (truncated)"
        )
    view = memoryview(blob)
    nonce = bytes(view[HEADER_SIZE:PREFIX_SIZE])
    ad = associated_data(bytes(view[:HEADER_SIZE]), backup_id, index, final)
    try:
        payload = crypto.open_sealed(cipher, nonce, view[PREFIX_SIZE:], ad)
    except crypto.AuthenticationFailed:
        raise IntegrityError(
            f"{what}: authentication failed (chunk corrupted, reordered, "
            "or taken from another backup)"
        ) from None
    return compress.decompress(header.compression, payload, plain_size=plain_size, what=what)
