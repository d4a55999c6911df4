"""A restore stream read by a deadline (``engines.deadline.ReadBy``): it keeps what the
source offers (``skip``, ``reader_at``, ``close``), offers nothing the source lacks, and
fails once the time is up, parts read elsewhere included."""

from __future__ import annotations

import io
import time

import pytest

from strongroom.engines.deadline import ReadBy


class Source(io.BytesIO):
    """A source with the pipeline reader's extras."""

    def skip(self, size: int, /) -> None:
        self.read(size)

    def reader_at(self, offset: int, /) -> Source:
        other = Source(self.getvalue())
        other.seek(offset)
        return other


def test_it_keeps_what_the_source_offers_and_closes_it() -> None:
    source = Source(b"abcdef")
    stream = ReadBy(source, time.monotonic() + 60, RuntimeError)
    stream.skip(1)
    assert stream.read(2) == b"bc"
    assert stream.reader_at(4).read(2) == b"ef"
    stream.close()
    assert source.closed


def test_it_offers_nothing_the_source_lacks() -> None:
    plain = ReadBy(io.BufferedReader(io.BytesIO(b"x")), time.monotonic() + 60, RuntimeError)
    assert getattr(plain, "skip", None) is None
    assert getattr(plain, "reader_at", None) is None
    with pytest.raises(AttributeError):
        plain.anything  # noqa: B018


def test_once_the_time_is_up_every_read_fails_parts_included() -> None:
    late = ReadBy(Source(b"abcdef"), time.monotonic() - 1, RuntimeError)
    for read in (lambda: late.read(1), lambda: late.skip(1), lambda: late.reader_at(2).read(1)):
        with pytest.raises(RuntimeError, match="ran out of time"):
            read()
