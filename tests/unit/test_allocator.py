"""Process memory settings: glibc's thresholds (a no-op elsewhere), frozen start-up objects."""

from __future__ import annotations

import gc
import platform
import weakref

import pytest

from strongroom.allocator import freeze_startup_objects, keep_chunk_buffers_in_heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_glibc_accepts_the_thresholds() -> None:
    assert keep_chunk_buffers_in_heap() is True


def test_start_up_objects_leave_the_collectors_view_and_later_garbage_does_not() -> None:
    class Cycle:
        pass

    built_at_start = Cycle()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 0
        # A cycle made after the freeze is still collected.
        later = Cycle()
        later.me = later  # type: ignore[attr-defined]
        ref = weakref.ref(later)
        del later
        gc.collect()
        assert ref() is None
        assert built_at_start is not None
    finally:
        gc.unfreeze()
