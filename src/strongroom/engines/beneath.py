"""Open files inside a directory a tenant controls without following its links.

A database server's own user (a tenant that is superuser there) can replace any directory
or file in its data directory with a symbolic link at any moment. Whatever the service
reads or writes there as root is therefore opened relative to a directory descriptor it
holds, with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)``:
a link at any step, ``..`` or an absolute name fails with ``ELOOP``/``EXDEV`` instead of
leading elsewhere. Where the kernel lacks ``openat2`` (before 5.6) each component is opened
with ``O_NOFOLLOW`` from its parent's descriptor. Types are checked with ``fstat`` on the
descriptor that is then used, never by name.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager

_SYS_OPENAT2 = {"x86_64": 437, "aarch64": 437}.get(os.uname().machine)
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
_RESOLVE = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_have_openat2: bool | None = None


class EscapeError(OSError):
    """The name led through a symbolic link, ``..`` or out of the directory."""


def _openat2(dir_fd: int, name: str, flags: int, mode: int) -> int:
    global _have_openat2
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0, _RESOLVE)
    fd = _libc.syscall(
        _SYS_OPENAT2, dir_fd, os.fsencode(name), ctypes.byref(how), ctypes.sizeof(how)
    )
    if fd >= 0:
        return int(fd)
    err = ctypes.get_errno()
    if err == errno.ENOSYS:
        _have_openat2 = False
        return _open_stepwise(dir_fd, name, flags, mode)
    if err in (errno.ELOOP, errno.EXDEV):
        raise EscapeError(err, f"refused to follow a link or leave the directory: {name}")
    raise OSError(err, os.strerror(err), name)


def _open_stepwise(dir_fd: int, name: str, flags: int, mode: int) -> int:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        raise EscapeError(errno.EXDEV, f"refused to leave the directory: {name}")
    current = dir_fd
    opened: list[int] = []
    try:
        for part in parts[:-1]:
            try:
                current = os.open(
                    part,
                    os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                    dir_fd=current,
                )
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise EscapeError(errno.ELOOP, f"refused to follow a link: {name}") from exc
                raise
            opened.append(current)
        try:
            return os.open(parts[-1], flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=current)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise EscapeError(errno.ELOOP, f"refused to follow a link: {name}") from exc
            raise
    finally:
        for fd in opened:
            os.close(fd)


def open_beneath(dir_fd: int, name: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A descriptor for ``name`` inside the directory ``dir_fd``, never through a link."""
    if _SYS_OPENAT2 is None or _have_openat2 is False:
        return _open_stepwise(dir_fd, name, flags, mode)
    return _openat2(dir_fd, name, flags, mode)


def open_dir(path: str | os.PathLike[str]) -> int:
    """A descriptor for the directory at ``path`` itself (its last component no link)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    return fd


def open_regular(dir_fd: int, name: str) -> tuple[int, os.stat_result]:
    """``name`` opened for reading if it is a regular file (checked on the descriptor)."""
    fd = open_beneath(dir_fd, name, os.O_RDONLY | os.O_NONBLOCK)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise EscapeError(errno.EINVAL, f"not a regular file: {name}")
    return fd, st


@contextmanager
def directory(path: str | os.PathLike[str]) -> Iterator[int]:
    fd = open_dir(path)
    try:
        yield fd
    finally:
        os.close(fd)
