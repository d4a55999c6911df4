"""The loop behind the scheduler and the point-in-time archiver."""

from __future__ import annotations

import logging
import threading

import pytest

from strongroom.services.periodic import Periodic

log = logging.getLogger("test.periodic")


def test_a_failed_pass_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture) -> None:
    passes: list[int] = []
    third = threading.Event()

    def run() -> None:
        passes.append(len(passes))
        if len(passes) == 1:
            raise RuntimeError("first pass fails")
        if len(passes) == 3:
            third.set()

    loop = Periodic(run, interval=0.01, name="test-loop", log=log, failure="test pass failed")
    with caplog.at_level(logging.ERROR, logger="test.periodic"):
        assert loop.start()
        assert not loop.start()  # one thread only
        assert third.wait(10)
        loop.stop()
    assert [r.getMessage() for r in caplog.records] == ["test pass failed"]
    assert not any(t.name == "test-loop" for t in threading.enumerate())


def test_stop_before_start_is_harmless() -> None:
    Periodic(lambda: None, interval=60, name="idle", log=log, failure="x").stop()
