"""File work by name, done as a file's owner on this thread only.

SQLite can only be given a name, and it opens, creates, ``fchown``s and unlinks the
database's ``-wal``, ``-shm`` and ``-journal`` by name too. A tenant who writes in the
directory can swap a directory on the way for a link at any moment: as root, SQLite would
then create files (owned by the database's owner) in any directory the link points to. So
while the service's SQLite connections open, use and close a tenant's file, the calling
thread's filesystem uid and gid are the file's owner's (``setfsuid``/``setfsgid``, which the
kernel keeps per thread; root's file capabilities are dropped with them): by any name,
SQLite can do no more than the file's owner could. Other threads are not affected.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

_libc = ctypes.CDLL(None, use_errno=True)
_QUERY = 0xFFFFFFFF  # an invalid id: the call changes nothing and returns the current one


class FsIdError(OSError):
    """The thread's filesystem ids could not be switched."""


@contextmanager
def as_owner(uid: int, gid: int) -> Iterator[None]:
    """Within the block, this thread touches files by name as ``uid``/``gid`` (nothing
    changes when the service is not root, or the owner is root)."""
    if os.geteuid() != 0 or uid == 0:
        yield
        return
    _libc.setfsgid(gid)
    _libc.setfsuid(uid)
    try:
        if _libc.setfsuid(_QUERY) != uid or _libc.setfsgid(_QUERY) != gid:
            raise FsIdError(f"cannot act as the file's owner (uid {uid}, gid {gid})")
        yield
    finally:
        _libc.setfsuid(0)
        _libc.setfsgid(0)


@contextmanager
def as_service() -> Iterator[None]:
    """Within an :func:`as_owner` block, the service's own ids again (to start a helper
    program the owner may not reach, say)."""
    uid, gid = _libc.setfsuid(_QUERY), _libc.setfsgid(_QUERY)
    if uid == 0 and gid == 0:
        yield
        return
    _libc.setfsuid(0)
    _libc.setfsgid(0)
    try:
        yield
    finally:
        _libc.setfsgid(gid)
        _libc.setfsuid(uid)
