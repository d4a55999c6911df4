"""Chunk objects: byte layout, associated data, and what opening them checks."""

from __future__ import annotations

import pytest

from strongroom.pipeline import FormatError, IntegrityError, crypto
from strongroom.pipeline.chunk import (
    HEADER_SIZE,
    OVERHEAD,
    PREFIX_SIZE,
    associated_data,
    open_chunk,
    parse_header,
    seal_chunk,
)
from strongroom.pipeline.compress import COMPRESSION_NONE, COMPRESSION_ZSTD

from .builders import compressible, incompressible

KEY = bytes(range(32))


def seal(plain: bytes, *, backup_id: str = "b", index: int = 0, final: bool = True) -> bytes:
    cipher = crypto.aead_cipher(KEY)
    return seal_chunk(cipher, plain, backup_id=backup_id, index=index, final=final, level=3)


def unseal(
    blob: bytes, *, backup_id: str = "b", index: int = 0, final: bool = True, plain_size: int
) -> bytes:
    cipher = crypto.aead_cipher(KEY)
    return open_chunk(
        cipher, blob, backup_id=backup_id, index=index, final=final, plain_size=plain_size
    )


def test_chunk_header_bytes() -> None:
    blob = seal(compressible(4000), final=True)
    assert blob[:HEADER_SIZE] == b"SRC1" + bytes([1, COMPRESSION_ZSTD, 3, 0x01])
    assert seal(b"x" * 100, final=False)[4:8] == bytes([1, COMPRESSION_ZSTD, 3, 0x00])


def test_chunk_incompressible_is_stored_raw() -> None:
    plain = incompressible(4000)
    blob = seal(plain)
    assert blob[5:7] == bytes([COMPRESSION_NONE, 0])
    assert len(blob) == len(plain) + OVERHEAD
    assert unseal(blob, plain_size=len(plain)) == plain


@pytest.mark.parametrize("plain", [b"", b"a", compressible(5000), incompressible(5000)])
def test_chunk_round_trip(plain: bytes) -> None:
    assert (
        unseal(seal(plain, index=7, final=False), index=7, final=False, plain_size=len(plain))
        == plain
    )


def test_chunk_associated_data_layout() -> None:
    ad = associated_data(b"H" * 8, "bk", 2, True)
    assert ad == b"H" * 8 + b"\x00\x02bk" + (2).to_bytes(8, "big") + b"\x01"


def test_chunk_moved_to_another_index_fails() -> None:
    blob = seal(b"data", index=1, final=False)
    with pytest.raises(IntegrityError, match="chunk 2: authentication failed"):
        unseal(blob, index=2, final=False, plain_size=4)


def test_chunk_from_another_backup_with_same_key_and_index_fails() -> None:
    blob = seal(b"data", backup_id="other", index=0)
    with pytest.raises(IntegrityError, match="backup b chunk 0: authentication failed"):
        unseal(blob, backup_id="b", index=0, plain_size=4)


def test_chunk_not_final_where_manifest_ends_is_truncation() -> None:
    blob = seal(b"data", index=0, final=False)
    with pytest.raises(IntegrityError, match="not marked final"):
        unseal(blob, index=0, final=True, plain_size=4)


def test_chunk_final_in_the_middle_is_refused() -> None:
    blob = seal(b"data", index=0, final=True)
    with pytest.raises(IntegrityError, match="marked final but is not the last"):
        unseal(blob, index=0, final=False, plain_size=4)


def test_chunk_forged_final_flag_fails_authentication() -> None:
    blob = bytearray(seal(b"data", index=0, final=False))
    blob[7] |= 0x01  # claim it is the final chunk
    with pytest.raises(IntegrityError, match="authentication failed"):
        unseal(bytes(blob), index=0, final=True, plain_size=4)


def test_chunk_flipped_ciphertext_byte_fails() -> None:
    blob = bytearray(seal(b"data" * 10))
    blob[PREFIX_SIZE + 3] ^= 0x40
    with pytest.raises(IntegrityError, match="authentication failed"):
        unseal(bytes(blob), plain_size=40)


def test_chunk_wrong_plain_size_is_refused() -> None:
    with pytest.raises(IntegrityError, match="manifest says 5"):
        unseal(seal(b"abcd" * 100), plain_size=5)


@pytest.mark.parametrize(
    ("offset", "value", "message"),
    [
        (0, ord("X"), "not a Strongroom chunk"),
        (4, 2, "unsupported chunk format version 2"),
        (5, 9, "unknown compression id 9"),
        (7, 0x81, "unknown flag bits"),
    ],
)
def test_chunk_malformed_header_is_format_error(offset: int, value: int, message: str) -> None:
    blob = bytearray(seal(b"data"))
    blob[offset] = value
    with pytest.raises(FormatError, match=message) as info:
        parse_header(bytes(blob), what="chunk 0")
    assert not isinstance(info.value, IntegrityError)


def test_chunk_too_short_is_format_error() -> None:
    with pytest.raises(FormatError, match="too short"):
        parse_header(b"SRC1\x01\x01\x03\x01", what="chunk 0")
