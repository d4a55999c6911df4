"""Who may run beside whom on one data dir. Every service process (`serve`, `api`,
`worker`) holds ``data_dir/service.lock`` shared for as long as it runs; the offline
commands that rewrite what a running service reads (`key rotate`, `catalog rebuild`) take
it exclusively and refuse to start while any service holds it. A lock held by a process is
released by the kernel when the process dies, so a crash never leaves a stale lock.

Only processes on this host share the file: workers elsewhere are seen by their heartbeats
(see ``recovery_commands``)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "service.lock"


class ServiceRunningError(Exception):
    """A service process holds the data dir: the offline command must wait."""


class OfflineCommandRunningError(Exception):
    """An offline command holds the data dir: the service must wait until it ends."""


def _open(data_dir: Path) -> int:
    data_dir.mkdir(parents=True, exist_ok=True)
    # O_NOFOLLOW: a link planted in the data dir does not make us create or lock its target.
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(data_dir / LOCK_NAME, flags, 0o600)


def hold_shared(data_dir: Path) -> int:
    """Mark this process as a running service; returns the descriptor, kept open (and the
    lock with it) until the process exits. ``OfflineCommandRunningError`` while an offline
    command runs."""
    fd = _open(data_dir)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise OfflineCommandRunningError(
            f"an offline command (key rotate, catalog rebuild) is running on {data_dir}"
        ) from None
    return fd


@contextmanager
def service_stopped(data_dir: Path) -> Iterator[None]:
    """The data dir, with no service process on this host running on it until the block
    ends; ``ServiceRunningError`` at once if one runs."""
    fd = _open(data_dir)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ServiceRunningError(
                f"a Strongroom service is running on {data_dir}: stop it first"
            ) from None
        yield
    finally:
        os.close(fd)
