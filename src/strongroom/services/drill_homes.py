"""The homes of restore drills, and what a drill leaves when its process dies.

A drill's instance lives in ``instances/drill-<random>``; beside it, ``drill-<random>.lock``
(in the service's own directory, which no tenant can write) holds the datastore version
and an exclusive ``flock`` for as long as the drill runs. A process that dies mid-drill
leaves a running server, its home and its OS user, but its lock is released with it: the
next drill on this host finds such homes by their unheld locks and destroys them through
their engine. A drill in another process on the same host holds its lock and is left
alone.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from strongroom.engines.base import Engine
from strongroom.engines.identity import remove_tree

log = logging.getLogger(__name__)

PREFIX = "drill-"
LOCK_SUFFIX = ".lock"
MAX_LOCK_BYTES = 256


@contextlib.contextmanager
def new_home(instances_dir: Path, version_id: str) -> Iterator[Path]:
    """A new drill home, locked while the block runs. The caller destroys the instance in
    it; the lock goes with the home (a home left behind keeps it, for the next sweep)."""
    instances_dir.mkdir(parents=True, exist_ok=True)
    home = instances_dir / f"{PREFIX}{uuid.uuid4().hex}"
    lock = home.with_name(home.name + LOCK_SUFFIX)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, version_id.encode())
        home.mkdir()
        yield home
    finally:
        if not home.exists():
            os.unlink(lock)
        os.close(fd)


def sweep(instances_dir: Path, engine_for: Callable[[str], Engine]) -> list[Path]:
    """Destroy the drill instances whose process died (see the module text); returns
    their homes. ``engine_for``: the engine of a datastore version id."""
    removed: list[Path] = []
    for lock in sorted(instances_dir.glob(f"{PREFIX}*{LOCK_SUFFIX}")):
        try:
            fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a drill running in another process
            version_id = os.pread(fd, MAX_LOCK_BYTES, 0).decode("utf-8", "replace")
            home = lock.with_name(lock.name.removesuffix(LOCK_SUFFIX))
            try:
                engine_for(version_id).destroy_instance(home, {"managed": True})
            except Exception as exc:
                log.warning("abandoned drill instance %s not removed: %s", home.name, exc)
                continue
            with contextlib.suppress(OSError):  # never through a link the tenant left
                remove_tree(home)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
            removed.append(home)
        finally:
            os.close(fd)
    return removed
