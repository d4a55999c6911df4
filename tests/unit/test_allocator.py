"""The allocator tuning applies on glibc (this project's platform) and is a no-op elsewhere."""

from __future__ import annotations

import platform

import pytest

from strongroom.allocator import keep_chunk_buffers_in_heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_glibc_accepts_the_thresholds() -> None:
    assert keep_chunk_buffers_in_heap() is True
