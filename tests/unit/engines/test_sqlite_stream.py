"""The SQLite engine's stream format and metadata, on byte literals."""

from __future__ import annotations

import io

import pytest

from strongroom.engines.sqlite.stream import (
    FORMAT,
    KIND_FULL,
    Header,
    StreamFormatError,
    StreamReader,
    StreamWriter,
    pack_hashes,
    page_digest,
    parse_metadata,
    unpack_hashes,
)

PAGE = 512


class Sink:
    def __init__(self) -> None:
        self.buf = io.BytesIO()

    def write(self, data: bytes, /) -> int:
        return self.buf.write(data)


def _stream(pages: list[tuple[int, bytes]], page_count: int = 3) -> bytes:
    sink = Sink()
    writer = StreamWriter(sink, Header(KIND_FULL, False, PAGE, page_count, 0, bytes(32)))
    for pgno, page in pages:
        writer.page(pgno, page)
    writer.finish(b"s" * 32)
    return sink.buf.getvalue()


def test_stream_round_trip() -> None:
    data = _stream([(1, b"a" * PAGE), (3, b"c" * PAGE)])
    assert len(data) == 56 + 2 * (4 + PAGE) + 48
    reader = StreamReader(io.BytesIO(data))
    assert reader.header.page_count == 3
    assert reader.next_page() == (1, b"a" * PAGE)
    assert reader.next_page() == (3, b"c" * PAGE)
    assert reader.next_page() is None
    assert reader.finish().sha256 == b"s" * 32


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: b"X" + d[1:],  # magic
        lambda d: d[:8] + b"\x00\x02" + d[10:],  # version
        lambda d: d[:-1],  # truncated
        lambda d: d + b"\x00",  # trailing data
        lambda d: d[:-8] + b"XXXXXXXX",  # end magic
    ],
)
def test_stream_reader_rejects_damage(mutate) -> None:  # type: ignore[no-untyped-def]
    data = mutate(_stream([(1, b"a" * PAGE)]))
    with pytest.raises(StreamFormatError):
        reader = StreamReader(io.BytesIO(data))
        while reader.next_page() is not None:
            pass
        reader.finish()


def test_stream_reader_rejects_pages_out_of_order_or_beyond_count() -> None:
    for pages in ([(2, b"b" * PAGE), (1, b"a" * PAGE)], [(4, b"d" * PAGE)]):
        reader = StreamReader(io.BytesIO(_stream(pages)))
        with pytest.raises(StreamFormatError):
            while reader.next_page() is not None:
                pass


def test_page_hashes_pack_and_unpack() -> None:
    hashes = page_digest(b"a" * PAGE) + page_digest(bytes(PAGE)) * 1000
    text = pack_hashes(hashes)
    assert len(text) < len(hashes) // 10  # repeated (empty) pages compress
    assert unpack_hashes(text, 1001) == hashes
    with pytest.raises(StreamFormatError):
        unpack_hashes(text, 1000)
    with pytest.raises(StreamFormatError):
        unpack_hashes("not base64!", 1)


def _metadata(**changes: object) -> dict[str, object]:
    meta: dict[str, object] = {
        "format": FORMAT,
        "format_version": 1,
        "kind": "full",
        "page_size": 4096,
        "page_count": 1,
        "sha256": "00" * 32,
        "parent_sha256": None,
        "page_hash": "blake2b-64",
        "page_hashes": pack_hashes(bytes(8)),
    }
    meta.update(changes)
    return meta


def test_parse_metadata_accepts_its_own_format() -> None:
    info = parse_metadata(_metadata())
    assert (info.page_size, info.page_count, info.hashes()) == (4096, 1, bytes(8))


@pytest.mark.parametrize(
    "changes",
    [
        {"format": "other"},
        {"format_version": 2},
        {"page_hash": "md5"},
        {"kind": "differential"},
        {"page_size": 1000},
        {"page_count": -1},
        {"sha256": "zz"},
        {"parent_sha256": "00"},
    ],
)
def test_parse_metadata_rejects_what_it_does_not_know(changes: dict[str, object]) -> None:
    with pytest.raises(StreamFormatError):
        parse_metadata(_metadata(**changes))
