"""The restore's background writeback: every file handed over is flushed and closed,
a flush error fails the restore, and stopping early leaks no descriptor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from strongroom.engines.postgresql import writeback


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def test_files_are_flushed_and_closed(tmp_path: Path) -> None:
    fds = []
    with writeback.BackgroundWriteback() as flusher:
        for n in range(writeback.MAX_PENDING * 2):  # more than may wait at once
            fd = os.open(tmp_path / f"f{n}", os.O_WRONLY | os.O_CREAT, 0o600)
            os.write(fd, b"x" * 8192)
            fds.append(fd)
            flusher.hand_over(fd)
        flusher.wait()
        assert not any(_is_open(fd) for fd in fds)
    assert all((tmp_path / f"f{n}").stat().st_size == 8192 for n in range(len(fds)))


def test_a_flush_error_is_raised_by_wait() -> None:
    read_end, write_end = os.pipe()  # fdatasync refuses a pipe (EINVAL)
    with writeback.BackgroundWriteback() as flusher:
        flusher.hand_over(write_end)
        with pytest.raises(OSError):
            flusher.wait()
    assert not _is_open(write_end)
    os.close(read_end)


def test_closing_early_closes_every_descriptor(tmp_path: Path) -> None:
    fds = []
    flusher = writeback.BackgroundWriteback()
    for n in range(writeback.MAX_PENDING):
        fd = os.open(tmp_path / f"f{n}", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, os.urandom(1 << 16))
        fds.append(fd)
        flusher.hand_over(fd)
    flusher.close()  # without wait(): files still queued are closed unflushed
    assert not any(_is_open(fd) for fd in fds)
