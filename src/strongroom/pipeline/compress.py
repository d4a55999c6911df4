"""zstd compression of single chunks (one zstd frame per chunk).

Compressor and decompressor contexts are not thread-safe, so each thread keeps its own.
"""

from __future__ import annotations

import threading
from typing import Final

try:
    import zstandard
except ImportError as exc:  # pragma: no cover - zstandard is a hard dependency
    raise ImportError(
        "strongroom.pipeline needs the 'zstandard' package (pip install zstandard)"
    ) from exc

from strongroom.pipeline.errors import FormatError, IntegrityError

BytesLike = bytes | bytearray | memoryview

COMPRESSION_NONE: Final = 0
COMPRESSION_ZSTD: Final = 1
KNOWN_COMPRESSIONS: Final = frozenset({COMPRESSION_NONE, COMPRESSION_ZSTD})

MIN_LEVEL: Final = 1
MAX_LEVEL: Final = 22
DEFAULT_LEVEL: Final = 1

_local = threading.local()


def check_level(level: int) -> int:
    """Return ``level`` if it is a supported zstd level, else raise ValueError."""
    if (
        isinstance(level, bool)
        or not isinstance(level, int)
        or not (MIN_LEVEL <= level <= MAX_LEVEL)
    ):
        raise ValueError(f"zstd level must be an integer {MIN_LEVEL}..{MAX_LEVEL}, got {level!r}")
    return level


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] | None = getattr(_local, "compressors", None)
    if cache is None:
        cache = {}
        _local.compressors = cache
    compressor = cache.get(level)
    if compressor is None:
        compressor = zstandard.ZstdCompressor(level=level, write_content_size=True)
        cache[level] = compressor
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    decompressor: zstandard.ZstdDecompressor | None = getattr(_local, "decompressor", None)
    if decompressor is None:
        decompressor = zstandard.ZstdDecompressor()
        _local.decompressor = decompressor
    return decompressor


def compress(plain: BytesLike, level: int) -> tuple[int, BytesLike]:
    """Compress one chunk; returns ``(compression id, payload)``.

    The payload is the plaintext itself (id ``COMPRESSION_NONE``) when zstd does not make it
    smaller.
    """
    size = memoryview(plain).nbytes
    frame = _compressor(level).compress(plain)
    if len(frame) >= size:
        return COMPRESSION_NONE, plain
    return COMPRESSION_ZSTD, frame


def decompress(compression: int, payload: bytes, *, plain_size: int, what: str) -> bytes:
    """Inverse of :func:`compress`; the result must be exactly ``plain_size`` bytes.

    ``what`` names the chunk in error messages.
    """
    if compression == COMPRESSION_NONE:
        plain = payload
    elif compression == COMPRESSION_ZSTD:
        try:
            plain = _decompressor().decompress(payload, max_output_size=plain_size)
        except zstandard.ZstdError as exc:
            raise IntegrityError(f"{what}: zstd payload does not decompress: {exc}") from exc
    else:
        raise FormatError(f"{what}: unknown compression id {compression}")
    if len(plain) != plain_size:
        raise IntegrityError(f"{what}: plaintext is {len(plain)} bytes, manifest says {plain_size}")
    return plain
